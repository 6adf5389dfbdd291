"""Sliding-window inference (as nnU-Net's and MONAI's `sliding_window_inference`): an image
larger than the model's input is answered window by window and the windows' logits blended.

    grid = WindowGrid(height, width, size=256, overlap=0.5, scale=1.0, model_size=256)
    pixels = grid.pixels(image)                  # (C, H, W) -> resampled, padded to a window
    logits = grid.blend(lambda k, origins: fn(grid.crops(pixels, origins)))  # (P, h', w')
    logits = grid.restore(logits)                # (P, H, W) at the original size

or, in one call, `sliding_window_inference(image, fn, size=256, ...)`.

The image is resampled by `scale` (h' = round(H * scale)); an image smaller than a window is
padded with black (0) to one window and the padding cropped off the answer. Windows of
`size` px start every `size * (1 - overlap)` px, the last one flush with the far edge
(`window_origins`). Each window is resized to the model's `model_size` when it differs, the
model's answer (B, P, m, m) resized back to `size`, multiplied by a weight map and added to
float32 accumulators (P, h', w') and (h', w'); the blend is their ratio. Weights: "gaussian"
(nnU-Net's importance map, `gaussian_weight`: the centre of a window counts most, where the
model saw the most context) or "constant" (MONAI's other mode: a plain mean). Memory: the
accumulators and one batch of `window_batch` windows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

#: the blending weights a window's answer can have
WEIGHT_MODES = ("gaussian", "constant")
#: more windows than this show a progress bar (when progress is asked for)
PROGRESS_WINDOWS = 16
#: the smallest Gaussian weight (relative to its peak 1): every pixel keeps a share
MIN_WEIGHT = 1e-6

Origin = tuple[int, int]
#: (batch number, the batch's window origins) -> the windows' logits (B, P, m, m)
Answer = Callable[[int, Sequence[Origin]], Tensor]


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (N, C, h, w) to `size`, antialiased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis: every `stride`, the last flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return [*starts, length - size]


def window_origins(h: int, w: int, size: int, overlap: float) -> list[Origin]:
    """(top, left) of the windows of `size` px that cover an h x w image, row by row: a new
    window every `size * (1 - overlap)` px (at least 1), the last flush with the far edge.
    Along an axis no longer than a window there is one window at 0 (the image is padded to
    it by `WindowGrid`)."""
    if size < 1 or h < 1 or w < 1:
        raise ValueError(f"windows of {size} px on a {h}x{w} image: all must be >= 1")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"window overlap must be in [0, 1), got {overlap}")
    stride = max(1, round(size * (1.0 - overlap)))
    return [(t, left) for t in _starts(h, size, stride) for left in _starts(w, size, stride)]


def gaussian_weight(size: int, sigma_scale: float = 1 / 8) -> Tensor:
    """nnU-Net's importance map: a (size, size) float32 Gaussian centred on the window, sigma
    `size * sigma_scale`, peak 1, clamped to at least MIN_WEIGHT (so every pixel of a window
    counts)."""
    centre, sigma = (size - 1) / 2, max(size * sigma_scale, 1e-6)
    axis = torch.exp(-0.5 * ((torch.arange(size, dtype=torch.float64) - centre) / sigma) ** 2)
    weight = axis[:, None] * axis[None, :]
    return (weight / weight.max()).clamp_min(MIN_WEIGHT).float()


def window_weight(size: int, mode: str = "gaussian") -> Tensor:
    """The (size, size) float32 blending weight of a window's answer: "gaussian" or
    "constant" (all 1)."""
    if mode == "gaussian":
        return gaussian_weight(size)
    if mode == "constant":
        return torch.ones(size, size)
    raise ValueError(f"window weighting must be one of {', '.join(WEIGHT_MODES)}, got {mode!r}")


@dataclass(frozen=True)
class WindowGrid:
    """The windows of one image: height x width at the original size, resampled by `scale`,
    windows of `size` px overlapping by `overlap`, each seen by the model at `model_size`."""

    height: int
    width: int
    size: int
    overlap: float = 0.5
    scale: float = 1.0
    model_size: int | None = None  # None: the window size

    @property
    def resampled(self) -> tuple[int, int]:
        """The image's size after resampling by `scale` (each side at least 1)."""
        return (max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale)))

    @property
    def padded(self) -> tuple[int, int]:
        """The resampled size padded to at least one window."""
        h, w = self.resampled
        return max(h, self.size), max(w, self.size)

    @property
    def origins(self) -> list[Origin]:
        """The windows' (top, left) on the padded image (`window_origins`)."""
        return window_origins(*self.padded, self.size, self.overlap)

    def batches(self, window_batch: int) -> list[list[Origin]]:
        """The origins in batches of `window_batch`."""
        if window_batch < 1:
            raise ValueError(f"window_batch must be at least 1, got {window_batch}")
        origins = self.origins
        return [origins[i : i + window_batch] for i in range(0, len(origins), window_batch)]

    def pixels(self, image: Tensor) -> Tensor:
        """image (C, H, W) at the original size -> (C, *padded): resampled, then padded with
        0 at the bottom and right."""
        if tuple(image.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"image of size {tuple(image.shape[-2:])} is not this grid's "
                             f"{self.height}x{self.width}")
        x = resize(image[None].float(), self.resampled)[0]
        (h, w), (ph, pw) = self.resampled, self.padded
        return F.pad(x, (0, pw - w, 0, ph - h)) if (ph, pw) != (h, w) else x

    def crops(self, pixels: Tensor, origins: Sequence[Origin]) -> Tensor:
        """The windows at `origins` of `pixels` (C, *padded) -> (B, C, m, m), m the model's
        size."""
        s = self.size
        windows = torch.stack([pixels[:, t : t + s, left : left + s] for t, left in origins])
        m = self.model_size or s
        return resize(windows, (m, m))

    def blend(self, answer: Answer, *, window_batch: int = 8, mode: str = "gaussian",
              progress: bool = True) -> Tensor:
        """The windows' answers blended -> float32 logits (P, *resampled) (padding cropped).

        `answer(k, origins)` answers the k-th batch of windows (`batches(window_batch)`) with
        logits (B, P, m, m); they are resized to the window, weighted (`window_weight`) and
        accumulated in float32. A progress bar on stderr when `progress` and there are more
        than PROGRESS_WINDOWS windows."""
        weight = window_weight(self.size, mode)
        batches = self.batches(window_batch)
        total: Tensor | None = None
        weights: Tensor | None = None
        show = progress and len(self.origins) > PROGRESS_WINDOWS
        s = self.size
        with tqdm(total=len(self.origins), unit="window", disable=not show) as bar:
            for k, origins in enumerate(batches):
                logits = resize(answer(k, origins).float(), (s, s))
                if total is None or weights is None:
                    total = logits.new_zeros((logits.shape[1], *self.padded))
                    weights = logits.new_zeros(self.padded)
                    weight = weight.to(logits.device)
                for (t, left), one in zip(origins, logits):
                    total[:, t : t + s, left : left + s] += one * weight
                    weights[t : t + s, left : left + s] += weight
                bar.update(len(origins))
        assert total is not None and weights is not None  # a grid has at least one window
        h, w = self.resampled
        return (total / weights)[:, :h, :w]

    def restore(self, x: Tensor) -> Tensor:
        """(P, *resampled) -> (P, height, width): back at the original size."""
        return resize(x[None], (self.height, self.width))[0]

    def floor_area(self, logits: Tensor) -> Tensor:
        """Each answer's area as a size floor measures it: (P, *resampled) logits -> (P,) the
        pixels above 0 at the resampled scale over a window's pixels (size²), since floors
        are shares of the model's input."""
        return (logits > 0).flatten(1).sum(1).float() / self.size**2


def sliding_window_inference(
    image: Tensor, fn: Callable[[Tensor], Tensor], *, size: int, overlap: float = 0.5,
    scale: float = 1.0, model_size: int | None = None, window_batch: int = 8,
    mode: str = "gaussian", progress: bool = True,
) -> Tensor:
    """image (C, H, W); `fn` windows (B, C, m, m) -> logits (B, P, m, m) -> blended float32
    logits (P, H, W) at the original size (the module docstring's steps)."""
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    grid = WindowGrid(image.shape[1], image.shape[2], size, overlap, scale, model_size)
    pixels = grid.pixels(image)
    logits = grid.blend(lambda _, origins: fn(grid.crops(pixels, origins)),
                        window_batch=window_batch, mode=mode, progress=progress)
    return grid.restore(logits)

