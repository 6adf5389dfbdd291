"""Inference for people: encode an image once, answer many text prompts.

    predictor = Predictor.from_pretrained("checkpoints/run1")  # or a Hub id, "org/name"
    predictor.set_image(image)                      # backbone + pixel decoder, once
    pred = predictor.predict(["nodule in lung CT", "left lung in chest CT"])
    masks = Predictor.threshold(pred.prob)          # (P, H, W) bool at the image's size
    pred.exists                                     # (P,) P(target in image), or None
    for pred in predictor.predict_images(images, prompts, batch_size=8):  # many images
        ...                                         # as set_image + predict, encoder batched

A model with the existence head (`existence_head: true`) answers a prompt whose existence
probability is below the Predictor's `existence_threshold` (0.5) with an empty mask (prob 0
everywhere); so does a model with a
size floor (`boltzformer calibrate`) when the answer is smaller than its target's floor
(`Prediction.floored`), and a Predictor built with `min_score` > 0 when the answer's mask
score, its mean probability where it paints, is below it (`Prediction.unsure`).
`Prediction.found` says which prompts were found. Volumes decide per slice.

Images are read by `pixels.to_rgb255` (its intensity rule: `pixels.to_255`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from boltzformer.inference.pixels import ImageLike, is_plane, plane_rgb, to_255, to_rgb255
from boltzformer.inference.sliding_window import resize
from boltzformer.inference.windowed import (
    Gates,
    WindowedAnswer,
    WindowedImage,
    blend_answers,
    feature_nbytes,
    window_settings,
)
from boltzformer.modeling.boltzformer import BoltzFormer, ImageFeatures
from boltzformer.modeling.dtypes import resolve_dtype
from boltzformer.modeling.existence import (
    EXISTENCE_THRESHOLD,
    check_min_score,
    gate_logits,
    mask_score,
    model_existence_threshold,
    score_gate,
)
from boltzformer.modeling.size_floor import answer_floor
from boltzformer.modeling.text_encoder import TextFeatures, check_prompts


@dataclass(frozen=True)
class Prediction:
    """The answer to P prompts, at the original image (or volume) size.

    prob: (P, H, W) float32 in [0, 1] for an image, (P, *volume.shape) for a volume: the
        probability, averaged over the `samples` sampling draws.
    std: same shape as prob, the pixel-wise standard deviation of the probability over the
        draws (population std, ddof=0); None when samples == 1.
    prompts: the P prompts, in the order of prob's first axis.
    samples: the number of sampling draws (decoder passes) averaged.
    exists: with the existence head, the probability that each prompt's target is in the
        image, (P,) for an image, (P, N) for N slices (mean over the draws; a draw below
        `existence_threshold` answers with an empty mask); None for a model without the head.
    floored: with a size floor (`boltzformer calibrate`), whether each prompt's answer was
        smaller than its target's floor, and so empty, in at least half the draws, bool (P,)
        for an image, (P, N) for N slices; None for a model without a floor.
    unsure: with `min_score` > 0, whether each prompt's answer scored below it (an answer
        that paints nothing scores 0), and so was empty, in at least half the draws, bool
        (P,) or (P, N); None without.
    existence_threshold: the existence probability below which an answer was empty.
    """

    prob: np.ndarray
    std: np.ndarray | None
    prompts: tuple[str, ...]
    samples: int
    exists: np.ndarray | None = None
    floored: np.ndarray | None = None
    unsure: np.ndarray | None = None
    existence_threshold: float = EXISTENCE_THRESHOLD

    @property
    def found(self) -> np.ndarray | None:
        """Whether each prompt's target was found: the existence head said so (`exists` at
        least `existence_threshold`),
        the answer was not under its size floor and not unsure; shaped like `exists`,
        `floored` or `unsure`. None with none of them (every prompt is answered with a
        mask)."""
        given = [a for a in (self.exists, self.floored, self.unsure) if a is not None]
        if not given:
            return None
        found = np.ones(np.shape(given[0]), dtype=bool)
        if self.exists is not None:
            found &= self.exists >= self.existence_threshold
        for gate in (self.floored, self.unsure):
            if gate is not None:
                found &= ~gate
        return found


@dataclass(frozen=True)
class SamplingTrace:
    """Which image tokens the queries attended to, for one prompt (the paper's Fig. 4).

    keep_masks: one (Q, h_l, w_l) bool array per decoder layer, True where query q attended
        to that token of the layer's feature level.
    prob: (H, W) float32, the final probability of the same decoder pass, at the original size.
    prompt: the prompt.
    """

    keep_masks: list[np.ndarray]
    prob: np.ndarray
    prompt: str


class Predictor:
    """Encode an image once (`set_image`), then answer many prompts (`predict`).

    Reproducible: every call draws its Boltzmann samples from a fresh generator seeded with
    `seed` (the call's, else the predictor's), so the same call on the same image returns
    the same masks. A prompt's draws depend on the whole call (prompts and their order).
    The model is moved to `device` (default: where it is), cast to `dtype` (default: as
    it is; "bfloat16", "float16" (GPU), "float32", "float64", or the torch dtype) and put in
    eval mode; its answers come back as float32 arrays whatever its dtype. With
    `min_score` > 0, an answer whose mask score (`modeling.existence.mask_score`, at 0.5) is
    below it is an empty mask ("not found"); so is, with the existence head, one whose
    existence probability is below `existence_threshold` (default: the checkpoint's, 0.5
    unless `boltzformer calibrate` chose another; 0: never).
    docs/results/absent_targets.md measures both trades.

    A model whose config has `window_size` > 0 answers by sliding windows (`windowed.py`):
    `set_image` keeps the image at its own size (resampled by `window_scale`) and encodes
    its windows, kept for the next `predict` calls when they fit `windowed.CACHE_BYTES`.
    `window_size` (0: the whole image, resized) and `window_overlap` override the
    checkpoint's; `per_window_gate`, `window_batch` and `window_mode` are
    `windowed.WindowSettings`'; `progress` shows a bar over an image's windows (more than 16).
    """

    def __init__(
        self, model: BoltzFormer, *, device: str | torch.device | None = None, seed: int = 0,
        min_score: float = 0.0, existence_threshold: float | None = None,
        dtype: str | torch.dtype | None = None, window_size: int | None = None,
        window_overlap: float | None = None, window_batch: int = 8, window_mode: str = "gaussian",
        per_window_gate: bool = True, progress: bool = True,
    ) -> None:
        self.device = torch.device(device) if device is not None else model.device
        _check_device(self.device)
        dtype = model.dtype if dtype is None else resolve_dtype(dtype)
        self.model = model.to(self.device, dtype).eval()
        self.seed = seed
        self.min_score = check_min_score(min_score)
        self.existence_threshold = model_existence_threshold(model, existence_threshold)
        self.windows = window_settings(
            model.config, window_size, window_overlap, batch=window_batch, mode=window_mode,
            per_window_gate=per_window_gate)  # None: the whole image, resized
        self.progress = progress
        self.image: np.ndarray | None = None  # (H, W, 3) uint8 RGB of the current image
        self._features: ImageFeatures | WindowedImage | None = None

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device: str | torch.device | None = None,
        seed: int = 0, min_score: float = 0.0,
        existence_threshold: float | None = None,
        dtype: str | torch.dtype | None = None, revision: str | None = None,
        cache_dir: str | Path | None = None, token: str | bool | None = None,
        local_files_only: bool = False, **windows: Any,
    ) -> Predictor:
        """A Predictor for a checkpoint written by `BoltzFormer.save_pretrained`: a local
        folder or a Hugging Face Hub id (`org/name`; revision, cache_dir, token,
        local_files_only as `BoltzFormer.from_pretrained` takes them); `windows`: the
        window options of `Predictor` (window_size, window_overlap, ...)."""
        device = torch.device(device or "cpu")
        _check_device(device)
        dtype = None if dtype is None else resolve_dtype(dtype)  # before loading
        model = BoltzFormer.from_pretrained(
            name_or_path, map_location=device, revision=revision, cache_dir=cache_dir,
            token=token, local_files_only=local_files_only)
        return cls(model, seed=seed, min_score=min_score,
                   existence_threshold=existence_threshold, dtype=dtype, **windows)

    @property
    def image_size(self) -> int:
        """The square side the model sees; inputs (or their windows) are resized to it."""
        return self.model.config.image_size

    # --- the image ----------------------------------------------------------------------
    def _pixels(self, rgb: np.ndarray) -> Tensor:
        """(H, W, 3) float RGB 0-255 -> (1, 3, S, S) on the device, S = image_size."""
        x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).to(self.device)
        return resize(x, (self.image_size, self.image_size))

    @torch.inference_mode()
    def set_image(self, image: ImageLike) -> None:
        """Run the backbone and pixel decoder once on `image` (any size; see `to_rgb255`), or
        on its windows."""
        rgb = to_rgb255(image)
        self._features = self._encode(rgb)
        self.image = np.clip(np.round(rgb), 0, 255).astype(np.uint8)

    def _encode(self, rgb: np.ndarray) -> ImageFeatures | WindowedImage:
        """(H, W, 3) float RGB 0-255 -> its encoding, whole or in windows."""
        if self.windows is not None:
            return WindowedImage(self.model, rgb, self.windows, self.device)
        return self.model.encode_image(self._pixels(rgb))

    @property
    def encoded_bytes(self) -> int:
        """Bytes held by the current image's encoding (its windows' when windowed)."""
        feats = self._features
        if feats is None:
            return 0
        return feats.nbytes if isinstance(feats, WindowedImage) else feature_nbytes(feats)

    def _require_image(self) -> tuple[ImageFeatures | WindowedImage, tuple[int, int]]:
        if self._features is None or self.image is None:
            raise RuntimeError("no image set: call predictor.set_image(image) before predicting")
        return self._features, (self.image.shape[0], self.image.shape[1])

    def _generator(self, seed: int | None) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed if seed is None else seed)

    # --- prompts ------------------------------------------------------------------------
    def _probabilities(
        self, feats: ImageFeatures | WindowedImage, prompts: list[str], size: tuple[int, int],
        samples: int, generator: torch.Generator, progress: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
        """N encoded images (or one in windows, N = 1) x P prompts -> mean and std
        (N, P, H, W) over `samples` passes, the mean existence probability (N, P) (None
        without the existence head), whether each answer was under its size floor in at
        least half the passes (N, P) (None without a floor) and whether it was unsure in at
        least half (N, P) (None with `min_score` 0).

        Each pass decodes all N*P (image, prompt) pairs in one batch (or every window's P
        pairs, blended: `windowed.blend_answers`); a pass whose existence probability is
        below `existence_threshold`, whose answer is smaller than its target's size floor
        (at the model's image size), or whose mask score is below `min_score`, answers that
        pair with an empty mask.
        """
        exist: list[Tensor] = []
        floored: list[Tensor] = []
        unsure: list[Tensor] = []
        if isinstance(feats, WindowedImage):
            n, p = 1, len(prompts)
            gates = Gates(self.existence_threshold, self.min_score, self.model.size_floor)

            def draw() -> Tensor:
                assert isinstance(feats, WindowedImage) and self.windows is not None
                out: WindowedAnswer = blend_answers(
                    feats.grid, feats.answer(prompts, generator), prompts, self.windows,
                    gates, progress=progress)
                for gate, kept in ((out.exists, exist), (out.floored, floored),
                                   (out.unsure, unsure)):
                    if gate is not None:
                        kept.append(gate.float().view(n, p))
                return torch.sigmoid(out.logits).view(n, p, *size)
        else:
            n, p = feats.semantic.shape[0], len(prompts)
            text = self.model.encode_text(prompts)
            text = TextFeatures(text.tokens.repeat(n, 1, 1), text.padding.repeat(n, 1))
            tiled = feats.repeat(p)  # pair i * p + j: image i, prompt j

            def draw() -> Tensor:
                out = self.model.decode(tiled, text, generator=generator)
                if out.existence_logits is not None:
                    exist.append(out.existence_logits.float().sigmoid().view(n, p))
                logits = self._gated(out.logits.float(), out.existence_logits, prompts * n,
                                     floored, unsure)
                return resize(torch.sigmoid(logits), size).view(n, p, *size)

        mean = draw()
        m2 = torch.zeros_like(mean)
        for k in range(1, samples):  # Welford's running mean and sum of squared deviations
            prob = draw()
            delta = prob - mean
            mean += delta / (k + 1)
            m2 += delta * (prob - mean)
        std = (m2 / samples).clamp_min(0).sqrt() if samples > 1 else None
        exists = torch.stack(exist).mean(0) if exist else None
        under = torch.stack(floored).mean(0).view(n, p) >= 0.5 if floored else None
        doubt = torch.stack(unsure).mean(0).view(n, p) >= 0.5 if unsure else None
        return mean.clamp(0, 1), std, exists, under, doubt

    def _gated(self, logits: Tensor, existence_logits: Tensor | None, prompts: list[str],
               floored: list[Tensor], unsure: list[Tensor]) -> Tensor:
        """One pass's mask logits (B, 1, h, w) with the absent, the floored and the unsure
        answers made empty; which were floored and unsure (B,) is appended to the lists."""
        score = mask_score(logits) if self.min_score > 0 else None  # before any gate
        logits = gate_logits(logits, existence_logits, self.existence_threshold)
        logits, small = answer_floor(logits, self.model.size_floor, prompts)
        if small is not None:
            floored.append(small.float())
        if score is not None:
            logits, doubt = score_gate(logits, score, self.min_score)
            unsure.append(doubt.float())
        return logits

    @torch.inference_mode()
    def predict(
        self, prompts: Sequence[str], *, samples: int = 1, seed: int | None = None
    ) -> Prediction:
        """Probabilities (P, H, W) for P prompts on the current image, at its original size.

        All prompts go through the decoder in one batched pass; `samples` > 1 repeats that
        pass with different sampling draws and reports their mean and pixel-wise std.
        """
        feats, size = self._require_image()
        return self._answer(feats, size, check_prompts(prompts), _check_samples(samples), seed,
                            self.progress)

    def _answer(
        self, feats: ImageFeatures | WindowedImage, size: tuple[int, int], prompts: list[str],
        samples: int, seed: int | None, progress: bool = False,
    ) -> Prediction:
        """One encoded image's Prediction for checked `prompts`, its draws from a fresh
        generator seeded with `seed` (else the predictor's)."""
        mean, std, exists, floored, unsure = self._probabilities(
            feats, prompts, size, samples, self._generator(seed), progress
        )
        return Prediction(
            prob=mean[0].cpu().numpy(),
            std=None if std is None else std[0].cpu().numpy(),
            prompts=tuple(prompts),
            samples=samples,
            exists=None if exists is None else exists[0].cpu().numpy(),
            floored=None if floored is None else floored[0].cpu().numpy(),
            unsure=None if unsure is None else unsure[0].cpu().numpy(),
            existence_threshold=self.existence_threshold,
        )

    def predict_images(
        self,
        images: Iterable[ImageLike],
        prompts: Sequence[str],
        *,
        batch_size: int = 8,
        samples: int = 1,
        seed: int | None = None,
        progress: bool = False,
        total: int | None = None,
    ) -> Iterator[Prediction]:
        """Many images (any sizes and forms `set_image` takes) -> one Prediction each, in
        order, equal to `set_image(image)` then `predict(prompts, samples=samples, seed=seed)`.

        `batch_size` images are encoded together (backbone and pixel decoder, the costly
        part); each image's prompts are then decoded with draws from its own generator
        seeded with `seed`, so an image's answer depends neither on the batch size nor on
        the other images (unlike `predict_slices`, whose draws run over the batch). Images
        are taken from `images` one batch at a time, so a long iterable is never held in
        memory at once. A progress bar over images (of `total` when given) is shown when
        `progress`. Does not change the image set by `set_image`. The arguments are checked
        at the call, the images as they are taken.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return self._images(images, check_prompts(prompts), batch_size, _check_samples(samples),
                            seed, progress, total)

    @torch.inference_mode()
    def _images(
        self, images: Iterable[ImageLike], prompts: list[str], batch_size: int, samples: int,
        seed: int | None, progress: bool, total: int | None,
    ) -> Iterator[Prediction]:
        """`predict_images` once its arguments are checked."""
        with tqdm(total=total, unit="image", disable=not progress) as bar:
            for batch in _batches(images, batch_size):
                rgbs = [to_rgb255(image) for image in batch]
                if self.windows is not None:  # each image in its own windows
                    for rgb in rgbs:
                        yield self._answer(self._encode(rgb), (rgb.shape[0], rgb.shape[1]),
                                           prompts, samples, seed)
                    bar.update(len(batch))
                    continue
                feats = self.model.encode_image(torch.cat([self._pixels(rgb) for rgb in rgbs]))
                for i, rgb in enumerate(rgbs):
                    one = feats.select(torch.tensor([i]))
                    yield self._answer(one, (rgb.shape[0], rgb.shape[1]), prompts, samples, seed)
                bar.update(len(batch))

    @torch.inference_mode()
    def predict_slices(
        self,
        slices: np.ndarray,
        prompts: Sequence[str],
        *,
        batch_size: int = 8,
        samples: int = 1,
        seed: int | None = None,
        progress: bool = False,
    ) -> Prediction:
        """A stack of N slices (N, H, W) or (N, H, W, C) -> Prediction with prob (P, N, H, W).

        For volumes: `medio.nifti_slices(volume, axis)` gives the stack and
        `medio.stack_slices(prob[p], axis)` puts a prompt's answer back in voxel order.
        Intensities are scaled by `to_255` over the whole stack, so all slices share one
        scale. `batch_size` slices are encoded and decoded together (with windows: one
        slice's windows, `window_batch` at a time); a progress bar over slices is shown when
        `progress`. Does not change the image set by `set_image`.
        """
        slices = np.asarray(slices)
        if slices.ndim not in (3, 4) or len(slices) == 0 or not is_plane(slices[0]):
            raise ValueError(
                f"slices must be (N, H, W) or (N, H, W, C) with C = 1, 3 or 4 and N >= 1, got "
                f"shape {slices.shape}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        prompts = check_prompts(prompts)
        samples = _check_samples(samples)
        stack = to_255(slices)
        size = (stack.shape[1], stack.shape[2])
        generator = self._generator(seed)
        mean = np.empty((len(prompts), len(stack), *size), np.float32)
        std = np.empty_like(mean) if samples > 1 else None
        exists: np.ndarray | None = None  # with the existence head: (P, N)
        floored: np.ndarray | None = None  # with a size floor: (P, N)
        unsure: np.ndarray | None = None  # with min_score > 0: (P, N)
        step = 1 if self.windows is not None else batch_size  # windows: a slice at a time
        with tqdm(total=len(stack), unit="slice", disable=not progress) as bar:
            for start in range(0, len(stack), step):
                batch = stack[start : start + step]
                if self.windows is not None:
                    feats = self._encode(plane_rgb(batch[0]))
                else:
                    feats = self.model.encode_image(
                        torch.cat([self._pixels(plane_rgb(s)) for s in batch]))
                m, s, e, f, u = self._probabilities(feats, prompts, size, samples, generator)
                mean[:, start : start + len(batch)] = m.transpose(0, 1).cpu().numpy()
                if e is not None:  # the existence head decides per slice
                    if exists is None:
                        exists = np.empty((len(prompts), len(stack)), np.float32)
                    exists[:, start : start + len(batch)] = e.transpose(0, 1).cpu().numpy()
                if f is not None:  # and so does the size floor
                    if floored is None:
                        floored = np.empty((len(prompts), len(stack)), bool)
                    floored[:, start : start + len(batch)] = f.transpose(0, 1).cpu().numpy()
                if u is not None:  # and the score gate
                    if unsure is None:
                        unsure = np.empty((len(prompts), len(stack)), bool)
                    unsure[:, start : start + len(batch)] = u.transpose(0, 1).cpu().numpy()
                if std is not None and s is not None:  # both when samples > 1
                    std[:, start : start + len(batch)] = s.transpose(0, 1).cpu().numpy()
                bar.update(len(batch))
        return Prediction(prob=mean, std=std, prompts=tuple(prompts), samples=samples,
                          exists=exists, floored=floored, unsure=unsure,
                          existence_threshold=self.existence_threshold)

    @torch.inference_mode()
    def sampling(self, prompt: str, *, seed: int | None = None) -> SamplingTrace:
        """The keep masks of every decoder layer for one prompt on the current image.

        Uses the same draws as `predict([prompt], seed=seed)`, so `.prob` equals its mask;
        with windows the trace is of the whole image resized to `image_size` (as
        `window_size=0` answers it), one picture of where the model looks.
        """
        feats, size = self._require_image()
        if isinstance(feats, WindowedImage):
            assert self.image is not None  # set with the features
            feats = self.model.encode_image(self._pixels(self.image.astype(np.float32)))
        text = self.model.encode_text(check_prompts([prompt]))
        out = self.model.decode(
            feats, text, generator=self._generator(seed), return_sampling=True
        )
        assert out.keep_masks is not None  # asked for with return_sampling=True
        logits = self._gated(out.logits.float(), out.existence_logits, [prompt], [], [])
        prob = resize(torch.sigmoid(logits), size)[0, 0].clamp(0, 1)
        return SamplingTrace(
            keep_masks=[k[0].cpu().numpy() for k in out.keep_masks],
            prob=prob.cpu().numpy(),
            prompt=prompt,
        )

    @staticmethod
    def threshold(prob: np.ndarray, t: float = 0.5) -> np.ndarray:
        """Probabilities (any shape) -> bool mask of the same shape, True where prob >= t."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {t}")
        return np.asarray(prob) >= t


def _batches(items: Iterable[ImageLike], size: int) -> Iterator[list[ImageLike]]:
    """`items` in lists of `size` (the last one shorter), taken lazily."""
    batch: list[ImageLike] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_samples(samples: int) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a whole number >= 1, got {samples!r}")
    return samples


def _check_device(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} was asked for but CUDA is not available; use cpu")
