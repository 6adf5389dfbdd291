"""The data plan: whole images or crops at native resolution, chosen from the training data's
fingerprint as nnU-Net plans its patches.

The fingerprint (`fingerprint`) reads headers, not pixels: the median image size of the split
(`medio.image_shape`) and the objects' sizes in pixels (each mask's `area_fraction` from the
JSON times its image's pixels; with `<split>_instances/` maps, each object's own size). The
rules (`plan_data`), with S the model's image size and s the median image side:

- s <= 1.25 S: the whole image resized to S (crop_size 0), the paper's way.
- else crops of S x S, a third of them centred on an object (object_crops 1/3), and windows
  of the crop's size overlapping by half at inference. The scale is 1 (native) unless the
  objects are large: the smallest scale, in steps of 0.25, that keeps the 5th-percentile
  object at least `MIN_OBJECT_SIDE` pixels across and is no smaller than S / s (the median
  image in one crop). When the image so scaled fits in 1.25 S, or the whole image resized
  to S keeps that object `MIN_OBJECT_SIDE` pixels across, the whole image resized is
  planned instead. Object sizes unknown: native scale.

Any data field the config sets (not null) wins over the plan (`resolve_plan`), and a resumed
run keeps what its config.yaml stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from boltzformer.data import BiomedParseDataset
from boltzformer.data.medio import image_shape
from boltzformer.evaluation.objects import read_instances
from boltzformer.train.config import ModelSpec, TrainConfig

WHOLE_IMAGE_RATIO = 1.25  # images up to this times the model's size are resized whole
# pixels across the 5th-percentile object keeps when scaled down: on 1024² phantoms whose
# 5th-percentile object is 17 px, whole images resized to 256 (4 px) beat crops at scale 0.5
# and 1 at equal steps (docs/results/native_resolution.md); 16 planned the worst of the three
MIN_OBJECT_SIDE = 4.0
OBJECT_CROPS = 1 / 3  # nnU-Net's share of foreground-centred patches
WINDOW_OVERLAP = 0.5
MAX_IMAGES = 1000  # image headers read for the fingerprint (evenly spaced over the split)
MAX_INSTANCE_MAPS = 200  # instance maps read for per-object sizes
PLANNED = ("crop_size", "scale", "object_crops")  # the DataConfig fields the plan fills


@dataclass(frozen=True)
class Fingerprint:
    """What the plan looks at: the median image (height, width) and objects' sizes in pixels
    (an empty tuple when the data records none)."""

    median_hw: tuple[float, float]
    object_pixels: tuple[float, ...] = ()

    @property
    def median_side(self) -> float:
        return max(self.median_hw)

    def object_side(self, percentile: float = 5.0) -> float | None:
        """The side (sqrt of the area) of the `percentile`-th object, None when unknown."""
        if not self.object_pixels:
            return None
        return math.sqrt(float(np.percentile(self.object_pixels, percentile)))


@dataclass(frozen=True)
class DataPlan:
    """The plan's choices (DataConfig's crop_size, scale, object_crops; the model's windows)
    and why, in short phrases."""

    crop_size: int
    scale: float
    object_crops: float
    window_overlap: float
    reasons: tuple[str, ...] = ()

    @property
    def window_size(self) -> int:
        """The inference windows: the crop size (0, whole images, without crops)."""
        return self.crop_size

    def describe(self) -> str:
        """One line: what was chosen and why."""
        if self.crop_size == 0:
            what = "whole images"
        else:
            what = (f"crops of {self.crop_size}x{self.crop_size} at scale {self.scale:g}, "
                    f"{self.object_crops:.0%} centred on an object; windows of "
                    f"{self.window_size} overlapping {self.window_overlap:g} at inference")
        return f"data plan: {what} ({'; '.join(self.reasons)})"


def _spread(count: int, limit: int) -> list[int]:
    """Up to `limit` indices evenly spread over range(count)."""
    return sorted({round(i * (count - 1) / max(limit - 1, 1)) for i in range(min(count, limit))})


def fingerprint(dataset: BiomedParseDataset, indices: Sequence[int] | None = None
                ) -> Fingerprint:
    """The fingerprint of `dataset`'s items at `indices` (all by default): headers of up to
    MAX_IMAGES images, object sizes from the recorded area fractions and up to
    MAX_INSTANCE_MAPS instance maps."""
    samples = [dataset.samples[i] for i in (range(len(dataset)) if indices is None
                                            else indices)]
    images = sorted({s.image_path for s in samples})
    shapes = {images[i]: image_shape(images[i], max_pixels=dataset.max_pixels)
              for i in _spread(len(images), MAX_IMAGES)}
    heights, widths = zip(*shapes.values(), strict=True)
    median_hw = (float(np.median(heights)), float(np.median(widths)))
    mapped = [s for s in samples if s.image_path in shapes and dataset.instance_path(s)]
    pixels: list[float] = []
    if mapped:
        for i in _spread(len(mapped), MAX_INSTANCE_MAPS):
            path = dataset.instance_path(mapped[i])
            assert path is not None  # kept above because it has one
            ids, counts = np.unique(read_instances(path), return_counts=True)
            pixels += [float(c) for i_, c in zip(ids, counts, strict=True) if i_ != 0]
    else:
        for s in samples:
            if s.image_path in shapes and s.area:  # recorded and present
                height, width = shapes[s.image_path]
                pixels.append(s.area * height * width)
    return Fingerprint(median_hw, tuple(pixels))


def plan_data(data: BiomedParseDataset | Fingerprint, image_size: int) -> DataPlan:
    """The plan for training a model of `image_size` on `data` (a data set, whose fingerprint
    is taken, or a fingerprint); the rules are the module's."""
    fp = data if isinstance(data, Fingerprint) else fingerprint(data)
    side = fp.median_side
    median = f"median image {fp.median_hw[1]:.0f}x{fp.median_hw[0]:.0f}"
    whole = DataPlan(0, 1.0, OBJECT_CROPS, WINDOW_OVERLAP, ())
    if side <= WHOLE_IMAGE_RATIO * image_size:
        return replace(whole, reasons=(f"{median}, no larger than {WHOLE_IMAGE_RATIO:g} x "
                                       f"image_size {image_size}",))
    reasons = [f"{median}, larger than {WHOLE_IMAGE_RATIO:g} x image_size {image_size}"]
    object_side = fp.object_side()
    if object_side is None:
        scale = 1.0
        reasons.append("object sizes unknown: native scale")
    else:
        wanted = max(image_size / side, MIN_OBJECT_SIDE / object_side)
        scale = min(1.0, math.ceil(wanted * 4 - 1e-9) / 4)
        kept = f"5th-percentile object {object_side:.0f} px across"
        # whole when resizing keeps the object: the steps of 0.25 alone would give images
        # over 5 S crops at scale 0.25 though the whole image resized keeps it
        if scale < 1.0 and (scale * side <= WHOLE_IMAGE_RATIO * image_size
                            or object_side * image_size / side >= MIN_OBJECT_SIDE):
            return replace(whole, reasons=(*reasons, f"{kept}: large enough to see the whole "
                                                     f"image at image_size"))
        reasons.append(f"{kept}: " + ("native scale" if scale == 1.0 else
                                      f"still {object_side * scale:.0f} px at scale {scale:g}"))
    return DataPlan(image_size, scale, OBJECT_CROPS, WINDOW_OVERLAP, tuple(reasons))


def resolve_plan(cfg: TrainConfig, saved: Path | None = None,
                 say: Callable[[str], object] | None = None) -> TrainConfig:
    """`cfg` with its data plan filled in: each of data.crop_size, scale, object_crops left
    null taken from the run's stored config `saved` (a config.yaml, when it exists: a resumed
    run is not re-planned) or else from `plan_data` on the training data, and the model's
    window_size / window_scale / window_overlap set from the crops (where the model section
    does not set them). `say` gets the plan's one-line description when one is made."""
    data, model = cfg.data, cfg.model
    if saved is not None and saved.is_file():
        stored = TrainConfig.from_yaml(saved)
        data = replace(data, **{name: getattr(stored.data, name) for name in PLANNED
                                if getattr(data, name) is None})
        window = {k: v for k, v in stored.model.overrides.items() if k.startswith("window_")}
        model = ModelSpec(model.preset, {**window, **model.overrides})
    overlap = WINDOW_OVERLAP
    if any(getattr(data, name) is None for name in PLANNED):
        if data.root is None:
            raise ValueError("no training data: set data.root in the config or pass --data DIR")
        base = BiomedParseDataset(data.root, data.split, image_size=None,
                                  skip_bad=data.skip_bad)
        plan = plan_data(base, model.resolve().image_size)
        set_by_user = [f"{name} {getattr(data, name):g} (planned {getattr(plan, name):g})"
                       for name in PLANNED if getattr(data, name) is not None]
        data = replace(data, **{name: getattr(plan, name) for name in PLANNED
                                if getattr(data, name) is None})
        overlap = plan.window_overlap
        if say is not None:  # what is used: the plan with the config's values in it
            used = replace(plan, **{name: getattr(data, name) for name in PLANNED})
            say(used.describe() + (f"; set in the config: {', '.join(set_by_user)}"
                                   if set_by_user else ""))
    assert data.crop_size is not None and data.scale is not None  # filled above
    if data.crop_size > 0:
        window = {"window_size": data.crop_size, "window_scale": data.scale,
                  "window_overlap": overlap}
        model = ModelSpec(model.preset, {**window, **model.overrides})
    return cfg.replace(data=data, model=model)
