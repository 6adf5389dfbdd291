"""A model answering prompts window by window (`sliding_window.py`), with its gates.

A model whose config has `window_size` N > 0 (BoltzFormer's or the U-Net expert's) sees an
image at its own size, resampled by `window_scale`, in windows of N px (each resized to the
model's `image_size` when N differs); every window answers every prompt and the windows'
logits are blended (Gaussian weights by default).

Existence and gates across windows:
- existence (the existence head): each window answers "is the target here?". The image's
  existence probability is the MAX over its windows: a target is in the image if it is in
  some window. By default (`per_window_gate`) a window whose probability is below the
  threshold contributes `GATED_WINDOW_LOGIT` (sigmoid ~ 2e-9) over its region instead of its
  mask, so its region answers "absent" in the blend, while a window that found the target
  keeps its mask; with `per_window_gate=False` the windows' masks are blended as they are
  and only the image-level probability gates the whole answer. An image whose every window
  is below the threshold is an empty answer either way.
- the size floor and the score gate judge the blended whole answer: its mask score over the
  blend, its area as (pixels above 0.5 at the resampled scale) / N², since a floor is a
  share of the model's input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from boltzformer.inference.sliding_window import WEIGHT_MODES, Origin, WindowGrid
from boltzformer.modeling.boltzformer import BoltzFormer, ImageFeatures
from boltzformer.modeling.config import check_window
from boltzformer.modeling.existence import empty_answers, mask_score
from boltzformer.modeling.size_floor import SizeFloor
from boltzformer.modeling.text_encoder import TextFeatures

#: the logit a window whose existence answer is below the threshold gives its region
GATED_WINDOW_LOGIT = -20.0
#: windows' encodings are kept between `predict` calls when they take at most this
CACHE_BYTES = 2**30

#: (batch number, its window origins) -> mask logits (B * P, 1, m, m), pair i * P + j being
#: window i and prompt j, and existence logits (B * P,) or None
WindowAnswer = Callable[[int, Sequence[Origin]], tuple[Tensor, Tensor | None]]


@dataclass(frozen=True)
class WindowSettings:
    """size, overlap, scale: the model config's `window_*` (or a caller's override);
    batch: windows through the model at once; mode: "gaussian" or "constant" weights;
    per_window_gate: existence gates each window (else only the image's maximum);
    cache_bytes: the bound under which a Predictor keeps the windows' encodings."""

    size: int
    overlap: float = 0.5
    scale: float = 1.0
    batch: int = 8
    mode: str = "gaussian"
    per_window_gate: bool = True
    cache_bytes: int = CACHE_BYTES

    def __post_init__(self) -> None:
        check_window(self.size, self.scale, self.overlap)
        if self.size < 1:
            raise ValueError("window settings need a window size >= 32 (0 means no windows)")
        if self.batch < 1:
            raise ValueError(f"window batch must be at least 1, got {self.batch}")
        if self.mode not in WEIGHT_MODES:
            raise ValueError(f"window weighting must be one of {', '.join(WEIGHT_MODES)}, "
                             f"got {self.mode!r}")

    def grid(self, height: int, width: int, model_size: int) -> WindowGrid:
        """The windows of a height x width image for a model seeing `model_size` px."""
        return WindowGrid(height, width, self.size, self.overlap, self.scale, model_size)


def check_window_overrides(size: int | None, overlap: float | None,
                           names: tuple[str, str] = ("window_size", "window_overlap")) -> None:
    """A caller's window size (0, or >= 32) and overlap (in [0, 1)), None meaning "the
    model's"; a ValueError names the offending one by `names` (a command's flags)."""
    if size is not None and (isinstance(size, bool) or (size != 0 and size < 32)):
        raise ValueError(f"{names[0]} must be 0 (the whole image, resized) or at least 32 "
                         f"pixels, got {size}")
    if overlap is not None and not 0.0 <= overlap < 1.0:
        raise ValueError(f"{names[1]} must be in [0, 1), got {overlap}")


def window_settings(config: Any, size: int | None = None, overlap: float | None = None,
                    **options: Any) -> WindowSettings | None:
    """A model config's windows (`window_size`, `window_overlap`, `window_scale`), `size` and
    `overlap` overriding it when given; None when the size is 0 (the whole image, resized)."""
    check_window_overrides(size, overlap)
    size = config.window_size if size is None else size
    overlap = config.window_overlap if overlap is None else overlap
    check_window(size, config.window_scale, overlap)
    if size == 0:
        return None
    return WindowSettings(size, overlap, config.window_scale, **options)


@dataclass(frozen=True)
class Gates:
    """What empties an answer: existence below `existence_threshold`, a mask score (at
    `score_threshold`) below `min_score` (0: off), an area under its size `floor`."""

    existence_threshold: float
    min_score: float = 0.0
    floor: SizeFloor | None = None
    score_threshold: float = 0.5


@dataclass
class WindowedAnswer:
    """One pass over an image's windows. logits (P, H, W) float32 at the original size, the
    gates applied; exists (P,) the max over windows of the existence probability (None
    without an existence output); score (P,) the blend's mask score; floored (P,) bool,
    under the size floor (None without one); unsure (P,) bool, under min_score (None when
    0)."""

    logits: Tensor
    exists: Tensor | None
    score: Tensor
    floored: Tensor | None
    unsure: Tensor | None


def blend_answers(
    grid: WindowGrid, answer: WindowAnswer, prompts: Sequence[str], settings: WindowSettings,
    gates: Gates, *, targets: Sequence[str] | None = None, progress: bool = False,
) -> WindowedAnswer:
    """Every window's answer to P prompts blended and gated (the module docstring's rules)."""
    p = len(prompts)
    exists: Tensor | None = None

    def logits_of(k: int, origins: Sequence[Origin]) -> Tensor:
        nonlocal exists
        logits, existence = answer(k, origins)
        logits = logits.float().reshape(len(origins), p, *logits.shape[-2:])
        if existence is None:
            return logits
        prob = existence.float().sigmoid().view(len(origins), p)
        exists = prob.amax(0) if exists is None else torch.maximum(exists, prob.amax(0))
        if settings.per_window_gate:
            absent = (prob < gates.existence_threshold)[..., None, None]
            logits = logits.masked_fill(absent, GATED_WINDOW_LOGIT)
        return logits

    blended = grid.blend(logits_of, window_batch=settings.batch, mode=settings.mode,
                         progress=progress)  # (P, h', w')
    score = mask_score(blended, gates.score_threshold)
    if exists is not None:
        blended = empty_answers(blended, exists < gates.existence_threshold)
    floored = None
    if gates.floor is not None:
        floors = gates.floor.floors(prompts, targets).to(blended.device)
        floored = grid.floor_area(blended) < floors
        blended = empty_answers(blended, floored)
    unsure = None
    if gates.min_score > 0:
        unsure = score < gates.min_score
        blended = empty_answers(blended, unsure)
    return WindowedAnswer(grid.restore(blended), exists, score, floored, unsure)


def model_answer(model: torch.nn.Module, grid: WindowGrid, pixels: Tensor,
                 prompts: Sequence[str], *, targets: Sequence[str] | None = None,
                 generator: torch.Generator | None = None) -> WindowAnswer:
    """Windows answered by calling `model(windows, prompts, image_index=..., generator=...)`
    (BoltzFormer or the U-Net expert, with `targets=` when given): each batch of windows
    cropped from `pixels` (C, *grid.padded), every window asked every prompt."""
    p = len(prompts)

    def answer(_: int, origins: Sequence[Origin]) -> tuple[Tensor, Tensor | None]:
        windows = grid.crops(pixels, origins)
        b = len(origins)
        index = torch.arange(b, device=windows.device).repeat_interleave(p)
        extra = {"targets": list(targets) * b} if targets is not None else {}
        out = model(windows, list(prompts) * b, image_index=index, generator=generator,
                    **extra)
        return out.logits, getattr(out, "existence_logits", None)

    return answer


class WindowedImage:
    """One image laid out in windows for a BoltzFormer: its resampled, padded pixels and,
    when their estimated size is at most `settings.cache_bytes`, every window's encoding
    (else each `features` call encodes its batch again)."""

    def __init__(self, model: BoltzFormer, rgb: np.ndarray, settings: WindowSettings,
                 device: torch.device) -> None:
        self.model, self.settings = model, settings
        self.grid = settings.grid(rgb.shape[0], rgb.shape[1], model.config.image_size)
        self.pixels = self.grid.pixels(torch.from_numpy(rgb).permute(2, 0, 1).to(device))
        self.batches = self.grid.batches(settings.batch)
        first = self._encode(0)
        per_window = feature_nbytes(first) / len(self.batches[0])
        self._cache: list[ImageFeatures] | None = None
        if per_window * len(self.grid.origins) <= settings.cache_bytes:
            self._cache = [first, *(self._encode(k) for k in range(1, len(self.batches)))]

    @property
    def cached(self) -> bool:
        """Whether the windows' encodings are kept."""
        return self._cache is not None

    @property
    def nbytes(self) -> int:
        """Bytes held: the pixels and the kept encodings."""
        kept = sum(feature_nbytes(f) for f in self._cache) if self._cache is not None else 0
        return self.pixels.nbytes + kept

    def _encode(self, k: int) -> ImageFeatures:
        return self.model.encode_image(self.grid.crops(self.pixels, self.batches[k]))

    def features(self, k: int) -> ImageFeatures:
        """The k-th batch of windows' encodings (B, ...)."""
        return self._cache[k] if self._cache is not None else self._encode(k)

    def answer(self, prompts: Sequence[str], generator: torch.Generator) -> WindowAnswer:
        """Windows answered by the model's decoder on their (kept or fresh) encodings."""
        text = self.model.encode_text(list(prompts))
        p = len(prompts)

        def answer(k: int, origins: Sequence[Origin]) -> tuple[Tensor, Tensor | None]:
            b = len(origins)
            tiled = TextFeatures(text.tokens.repeat(b, 1, 1), text.padding.repeat(b, 1))
            out = self.model.decode(self.features(k).repeat(p), tiled, generator=generator)
            return out.logits, out.existence_logits

        return answer


def feature_nbytes(feats: ImageFeatures) -> int:
    """Bytes of an image's (or a batch's) encoding."""
    tensors = [*feats.levels, feats.semantic, feats.pixels]
    if feats.fine is not None:
        tensors.append(feats.fine)
    return sum(t.nbytes for t in tensors)
