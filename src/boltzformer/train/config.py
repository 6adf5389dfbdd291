"""`TrainConfig`: everything a training run needs, in four YAML sections.

```yaml
model:  {preset: tiny, image_size: 128}   # a preset plus any BoltzFormerConfig field
data:   {root: data/phantoms, val_fraction: 0.2}
optim:  {lr: 1.0e-3, weight_decay: 1.0e-2}
loss:   {deep_supervision: true, weight: 1.0}
train:  {batch_size: 8, prompts_per_image: 8, epochs: 40}
```

Unknown sections, keys and presets are errors that list the valid ones; values are checked
against the field's type (a YAML string such as "1e-3" is read as the float it spells).
Command-line overrides are `section.key=value` pairs with YAML scalars: `optim.lr=2e-5`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from boltzformer.modeling.config import PRESETS, BoltzFormerConfig, check_keys, get_preset
from boltzformer.modeling.loss import DEEP_SUPERVISION_TARGETS, DEFAULT_DICE, DICE_FORMS

AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16", "auto")
NAN_POLICIES: tuple[str, ...] = ("stop", "skip")
SCHEDULES: tuple[str, ...] = ("cosine", "constant")


@dataclass(frozen=True)
class ModelSpec:
    """A model preset and the BoltzFormerConfig fields that change it."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        check_keys(self.overrides, BoltzFormerConfig.field_names(), what="model config")
        types = {f.name: f.type for f in fields(BoltzFormerConfig)}
        coerced = {k: _coerce(v, types[k], f"model.{k}") for k, v in self.overrides.items()}
        object.__setattr__(self, "overrides", coerced)
        self.resolve()  # value errors (e.g. attention="sparse") surface now

    def resolve(self) -> BoltzFormerConfig:
        """The full model configuration."""
        return get_preset(self.preset, **self.overrides)


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how the training split is used."""

    root: str | None = None  # a BiomedParse-format folder
    split: str = "train"  # 20% of it (seeded, by image) becomes the validation set
    val_fraction: float = 0.2
    augment: bool = True  # the paper's A.5 rotations and jittered crops
    rotations: bool = True  # A.5's 90-degree rotations (false: crops only; left stays left)
    workers: int = 2  # DataLoader worker processes (0: load in the main process)
    skip_bad: bool = False  # skip unreadable samples instead of stopping
    prompt: str | None = None  # replace every prompt with this one (a text-reliance control)
    # absent targets added to each training image: other target names of the data set that
    # the image does not annotate, with empty masks (needs complete annotation per image)
    negatives: int = 0
    # each annotated absent target (area 0 in the JSON) and each tiny one (under 0.1 % of the
    # image) seen this many times per epoch
    absent_repeat: int = 1
    tiny_repeat: int = 1
    # Crops at native resolution (train/plan.py plans each one left null from the data):
    # crop_size 0 = the whole image resized to model.image_size (the paper's way); N > 0 =
    # N x N crops of the image resampled by `scale` (resized to model.image_size if N
    # differs); object_crops = the share of crops centred on an object of one of the
    # group's targets (nnU-Net: a third), the rest placed at random.
    crop_size: int | None = None
    scale: float | None = None
    object_crops: float | None = None
    # how many of a group's targets that its crop leaves out stay in the group as absent
    # targets (empty masks); the others are dropped for that step (null: all stay)
    cropped_out: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.workers < 0 or self.negatives < 0:
            raise ValueError("data.workers and data.negatives must be >= 0, got "
                             f"{self.workers} and {self.negatives}")
        if self.absent_repeat < 1 or self.tiny_repeat < 1:
            raise ValueError("data.absent_repeat and data.tiny_repeat must be >= 1, got "
                             f"{self.absent_repeat} and {self.tiny_repeat}")
        if self.crop_size is not None and self.crop_size != 0 and self.crop_size < 32:
            raise ValueError(f"data.crop_size must be 0 (whole image), >= 32 or null (planned), "
                             f"got {self.crop_size}")
        if self.scale is not None and not 0.0 < self.scale <= 4.0:
            raise ValueError(f"data.scale must be in (0, 4] or null (planned), got {self.scale}")
        if self.cropped_out is not None and self.cropped_out < 0:
            raise ValueError(f"data.cropped_out must be >= 0 or null (all kept), got "
                             f"{self.cropped_out}")
        if self.object_crops is not None and not 0.0 <= self.object_crops <= 1.0:
            raise ValueError(f"data.object_crops must be in [0, 1] or null (planned), got "
                             f"{self.object_crops}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay. Defaults train `tiny` from scratch; the
    paper fine-tunes pretrained backbones with lr 2e-5 and weight_decay 1e-2 (appendix A.4)."""

    lr: float = 1e-3
    weight_decay: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 100
    schedule: str = "cosine"  # after warm-up: "cosine" (down to min_lr_ratio * lr) or "constant"
    min_lr_ratio: float = 0.05
    grad_clip: float | None = 1.0  # max global gradient norm; null turns clipping off

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("optim.weight_decay and optim.warmup_steps must be >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"optim.schedule={self.schedule!r} is not valid; choose one of "
                f"{', '.join(SCHEDULES)}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"optim.grad_clip must be > 0 or null, got {self.grad_clip}")


@dataclass(frozen=True)
class LossConfig:
    """Dice + BCE on the final mask (the paper's loss), plus deep supervision: Dice + BCE on
    every decoder layer's prediction (the masks that drive the sampling), times `weight`.
    `dice` is the Dice form (loss.py): "mask2former" (linear denominator) or "vnet" (the
    paper's citation and the release's); `deep_supervision: false, dice: vnet` is the
    authors' release's loss. `existence_weight` weighs the existence head's BCE (a model
    with `existence_head: true`; not the paper's). `layer_pool` p takes the supervised layer
    predictions on S average-pooled by p (1: at S's resolution)."""

    deep_supervision: bool = True
    weight: float = 1.0
    target: str = "query"  # "query": each query's own mask; "mean": the ensemble mean
    dice: str = DEFAULT_DICE  # "mask2former" | "vnet" (docs/fidelity.md)
    existence_weight: float = 1.0  # BCE of the existence head, when the model has one
    # Deep supervision on S average-pooled by this factor (the mask max-pooled alike): 1 is
    # S's resolution; 2 supervises the layer predictions at stride 8, the final output
    # unchanged: at equal steps as accurate, each step faster (docs/training.md, "A cheaper
    # deep supervision")
    layer_pool: int = 2
    # pairs whose target is absent (an empty mask) train the mask path too (the paper's loss
    # on every pair); false: only the existence head learns from them (needs the head)
    absent_masks: bool = True
    # with absent_masks: the Dice term counts present pairs only, an absent pair's empty mask
    # is taught by BCE alone (its Dice, 1 - 1/(sum p + 1), punishes any pixel hard)
    absent_dice: bool = True

    def __post_init__(self) -> None:
        if self.layer_pool < 1:
            raise ValueError(f"loss.layer_pool must be >= 1, got {self.layer_pool}")
        if not self.weight >= 0:
            raise ValueError(f"loss.weight must be >= 0, got {self.weight}")
        if not self.existence_weight >= 0:
            raise ValueError(f"loss.existence_weight must be >= 0, got {self.existence_weight}")
        if self.target not in DEEP_SUPERVISION_TARGETS:
            raise ValueError(f"loss.target={self.target!r} is not valid; choose one of "
                             f"{', '.join(DEEP_SUPERVISION_TARGETS)}")
        if self.dice not in DICE_FORMS:
            raise ValueError(f"loss.dice={self.dice!r} is not valid; choose one of "
                             f"{', '.join(DICE_FORMS)}")


@dataclass(frozen=True)
class LoopConfig:
    """The training loop: batches, stopping rules, checkpoints, precision."""

    batch_size: int = 8  # images per step, per process
    prompts_per_image: int = 8  # K: up to K of an image's targets per step (1: one pair each)
    epochs: int = 40  # the paper's maximum
    patience: int | None = 5  # epochs without a lower validation loss before stopping
    max_steps: int | None = None  # stop after this many optimiser steps in total
    max_minutes: float | None = None  # stop after this much wall-clock time (all invocations)
    seed: int = 0
    checkpoint_every: int = 250  # steps between mid-epoch checkpoints (also after each epoch)
    snapshot_minutes: float | None = None  # keep the weights every this many minutes
    log_every: int = 10  # steps between training records in metrics.jsonl
    nan_policy: str = "stop"  # a non-finite loss: "stop" the run or "skip" the step
    # "bf16" autocast (CPU or CUDA), "fp16" (CUDA, with loss scaling), "auto": bf16 where the
    # hardware computes it natively (a CUDA GPU with bf16, a CPU with AVX-512 BF16 or AMX)
    amp: str = "none"
    channels_last: bool = False  # the convolutions in channels-last layout (pays with bf16)
    compile: bool = False  # torch.compile the model (CUDA)
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda"

    def __post_init__(self) -> None:
        for name in ("batch_size", "prompts_per_image", "epochs", "checkpoint_every",
                     "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("patience", "max_steps", "max_minutes", "snapshot_minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"train.{name} must be > 0 or null, got {value}")
        for name, allowed in (("nan_policy", NAN_POLICIES), ("amp", AMP_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"train.{name}={getattr(self, name)!r} is not valid; choose one of "
                    f"{', '.join(allowed)}"
                )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"train.device must be auto, cpu or cuda, got {self.device!r}")


_SECTIONS: dict[str, type] = {
    "data": DataConfig, "optim": OptimConfig, "loss": LossConfig, "train": LoopConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: model, data, optimiser and loop settings."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """From nested sections (`{"optim": {"lr": 1e-3}}`); missing keys keep defaults."""
        if not isinstance(values, dict):
            raise ValueError(f"a training config is a mapping of sections, got {values!r}")
        check_keys(values, ["model", *_SECTIONS], what="config section")
        sections: dict[str, Any] = {}
        for name, section in values.items():
            if section is None:
                continue
            if not isinstance(section, dict):
                raise ValueError(f"config section {name!r} must be a mapping, got {section!r}")
            if name == "model":
                section = dict(section)
                preset = section.pop("preset", ModelSpec.preset)
                sections[name] = ModelSpec(str(preset), section)
            else:
                sections[name] = _build_section(_SECTIONS[name], name, section)
        return cls(**sections)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        try:
            values = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from err
        try:
            return cls.from_dict(values or {})
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err

    @classmethod
    def load(
        cls, path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None
    ) -> TrainConfig:
        """A YAML file (or the defaults) with dotted overrides: {"optim.lr": 2e-5} or
        ["optim.lr=2e-5"]."""
        cfg = cls.from_yaml(path) if path is not None else cls()
        return cfg.with_overrides(overrides) if overrides else cfg

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> TrainConfig:
        """A copy with `section.key` values replaced; strings in a list are `key=value`."""
        if isinstance(overrides, list):
            overrides = parse_overrides(overrides)
        values = self.to_dict()
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            if not name or section not in values:
                raise ValueError(
                    f"override {key!r} must be section.key with section one of "
                    f"{', '.join(values)} (e.g. optim.lr=2e-5, model.attention=full)"
                )
            values[section][name] = value
        return TrainConfig.from_dict(values)

    # --- output --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain values; the model section is the preset plus its overrides."""
        out: dict[str, Any] = {"model": {"preset": self.model.preset, **self.model.overrides}}
        out.update({name: asdict(getattr(self, name)) for name in _SECTIONS})
        return out

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self, **sections: Any) -> TrainConfig:
        """A copy with whole sections replaced (`cfg.replace(train=...)`)."""
        return replace(self, **sections)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """["optim.lr=2e-5", "model.attention=full"] -> {"optim.lr": 2e-05, ...} (YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {pair!r} is not key=value (e.g. optim.lr=2e-5)")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ValueError(f"override {pair!r}: {text!r} is not a YAML scalar ({err})") from err
    return out


def _build_section(cls: type, name: str, values: dict[str, Any]) -> Any:
    valid = [f.name for f in fields(cls)]
    check_keys(values, valid, what=f"{name!r} config")
    types = {f.name: f.type for f in fields(cls)}
    return cls(**{k: _coerce(v, types[k], f"{name}.{k}") for k, v in values.items()})


def _coerce(value: Any, type_name: Any, key: str) -> Any:
    """Check `value` against a field type written as a string ("float | None", "int", ...)."""
    names = [t.strip() for t in str(type_name).split("|")]
    base = next(t for t in names if t != "None")
    if isinstance(value, str) and base != "str" and value.lower() in ("null", "none", "~"):
        value = None
    if value is None:
        if "None" in names:
            return None
        raise ValueError(f"{key} cannot be null")
    if base == "bool":
        if isinstance(value, bool):
            return value
    elif base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif base == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isnan(number):
                return number
    elif base == "str":
        if isinstance(value, str):
            return value
    else:  # dict and other structured fields are taken as given
        return value
    raise ValueError(f"{key} must be {' or '.join(names)}, got {value!r}")
