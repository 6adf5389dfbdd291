"""Model configuration: one plain dataclass, named presets, YAML round trip."""

from __future__ import annotations

import json
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

# The valid values of the string settings; the modules that act on them import them from here.
ATTENTION_MODES: tuple[str, ...] = ("boltzmann", "masked", "full")
SAMPLERS: tuple[str, ...] = ("bernoulli", "multinomial")
SAMPLING_LOGITS: tuple[str, ...] = ("lowres", "reference")
CROSS_ATTENTION_IMPLS: tuple[str, ...] = ("auto", "sparse", "dense")


@dataclass(frozen=True)
class BoltzFormerConfig:
    """Every setting of a BoltzFormer model. Presets below fill it in; override any field."""

    # Input
    image_size: int = 256
    # Backbone: any timm model that supports features_only (strides 4, 8, 16, 32)
    backbone: str = "resnet10t"
    backbone_pretrained: bool = False
    # Pixel decoder: transformer encoder layers on the stride-32 map, then an FPN
    pixel_decoder_layers: int = 1
    hidden_dim: int = 128
    mask_dim: int = 128
    # Stride of the semantic map S that the final masks are taken on: 4 (the paper) or 2 (a
    # finer S from the backbone's stride-2 features, for objects of a few pixels; see
    # modeling/fine_semantic.py). Decoder layers are supervised at stride 4 either way.
    semantic_stride: int = 4
    # Text encoder: "builtin" (offline, trained from scratch), "labels" (a closed vocabulary:
    # one learned token per name in text_labels) or a Hugging Face name or path
    text_encoder: str = "builtin"
    text_labels: tuple[str, ...] = ()  # "labels" only; `boltzformer train` reads them from data
    text_max_tokens: int = 77
    text_trainable: bool = True
    text_width: int = 128
    text_layers: int = 2
    text_vocab_size: int = 8192
    # Decoder
    num_queries: int = 10
    num_heads: int = 4
    ffn_dim: int = 512
    num_layers: int = 9
    num_levels: int = 3
    dropout: float = 0.0
    text_prior: bool = True
    query_init_std: float = 1.0  # std of the learnable initial queries Q (Eq. 4) at init
    # Attention sampling
    attention: str = "boltzmann"
    sampler: str = "bernoulli"
    sampling_ratio: float = 0.1
    tau0: float = 1.0
    keep_threshold: float = 1.1
    sampling_explore: float = 0.0  # share of draws made uniformly; 0 = the paper (Eq. 5)
    mask_threshold: float = 0.5
    sampling_logits: str = "lowres"
    attention_impl: str = "auto"
    # Mask aggregation
    pigma: bool = True
    pigma_channels: int = 10
    # Fidelity switches (docs/fidelity.md): where the paper and the authors' release differ
    sampling_per_head: bool = False  # True: one draw per query and head (the release)
    # Not in the paper: a per-prompt existence probability (modeling/existence.py); an answer
    # below 0.5 is an empty mask. Off: the paper's model, which answers every prompt.
    existence_head: bool = False
    # True: the head reads the queries and text detached, so its loss leaves the mask path as
    # it is without the head; False: its BCE trains the decoder and text encoder too
    existence_detach: bool = True
    # True: the head also reads S pooled under the prompt's predicted mask and the mask's peak
    # probability (the image's evidence where the model looks), not only queries and text
    existence_evidence: bool = False
    # Not in the paper: the size floor (modeling/size_floor.py). size_floors: target name ->
    # a low percentile of its areas (share of the image) in the training split; an answer
    # smaller than size_floor_fraction times its target's size is an empty mask. 0: off.
    # `boltzformer calibrate` fills both in (the fraction chosen on the validation split).
    size_floors: dict[str, float] = field(default_factory=dict)
    size_floor_fraction: float = 0.0
    # Not in the paper: with the existence head, an answer whose existence probability is
    # below this is an empty mask (the Predictor's and evaluate's default gate; 0: never).
    # `boltzformer calibrate` chooses it on the validation split, with the size floor.
    existence_threshold: float = 0.5
    # Inference on windows (inference/sliding_window.py): window_size 0 = the whole image
    # resized to image_size (the paper's way); N > 0 = the image resampled by window_scale,
    # cut into overlapping N x N windows (each resized to image_size if N differs), every
    # window answered and the answers blended. A model trained on crops (data.crop_size)
    # gets its crop size and scale here, so it predicts as it was trained.
    window_size: int = 0
    window_scale: float = 1.0
    window_overlap: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_labels", tuple(self.text_labels))  # JSON/YAML give lists
        if len(set(self.text_labels)) != len(self.text_labels) or not all(
                isinstance(t, str) and t.strip() for t in self.text_labels):
            raise ValueError(f"text_labels must be distinct non-empty names, got "
                             f"{list(self.text_labels)}")
        choices = {
            "attention": ATTENTION_MODES,
            "sampler": SAMPLERS,
            "sampling_logits": SAMPLING_LOGITS,
            "attention_impl": CROSS_ATTENTION_IMPLS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not valid; choose one of "
                    f"{', '.join(allowed)}"
                )
        if self.semantic_stride not in (2, 4):
            raise ValueError(f"semantic_stride must be 4 or 2, got {self.semantic_stride}")
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {self.image_size}")
        if self.tau0 <= 0:
            raise ValueError(f"tau0 must be > 0, got {self.tau0}")
        if not self.sampling_ratio > 0:
            raise ValueError(f"sampling_ratio must be > 0, got {self.sampling_ratio}")
        if not 0.0 <= self.sampling_explore < 1.0:
            raise ValueError(f"sampling_explore must be in [0, 1), got {self.sampling_explore}")
        if self.num_queries < 1 or self.num_layers < 1:
            raise ValueError("num_queries and num_layers must be at least 1")
        if not 1 <= self.num_levels <= 3:
            raise ValueError(f"num_levels must be 1, 2 or 3, got {self.num_levels}")
        object.__setattr__(self, "size_floors", dict(self.size_floors))
        check_size_floor(self.size_floors, self.size_floor_fraction)
        if not 0.0 <= self.existence_threshold <= 1.0:
            raise ValueError(f"existence_threshold must be in [0, 1], got "
                             f"{self.existence_threshold}")
        check_window(self.window_size, self.window_scale, self.window_overlap)

    # --- round trips -------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BoltzFormerConfig:
        """Build from a dict; an unknown key or a value of the wrong type is an error that
        names it (an int is accepted where a float is expected)."""
        check_keys(values, cls.field_names(), what="model config")
        for f in fields(cls):
            if f.name in values and not _same_kind(values[f.name], _default(f)):
                raise ValueError(
                    f"model config key {f.name} must be of type {type(_default(f)).__name__}, got "
                    f"{values[f.name]!r}"
                )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["text_labels"] = list(self.text_labels)
        return values

    def override(self, **changes: Any) -> BoltzFormerConfig:
        check_keys(changes, self.field_names(), what="model config")
        return replace(self, **changes)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> BoltzFormerConfig:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _default(f: Field[Any]) -> Any:
    """A field's default value, made by its factory if it has one."""
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[operator]


def _same_kind(value: Any, default: Any) -> bool:
    """Whether `value` has the type of the field's `default` (bool is not a number here)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, tuple):
        return isinstance(value, list | tuple)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def check_size_floor(sizes: dict[str, float], fraction: float) -> None:
    """ValueError unless every size is in (0, 1] under a non-empty name and fraction >= 0."""
    bad = [k for k, v in sizes.items() if not (isinstance(k, str) and k.strip())
           or not isinstance(v, int | float) or not 0 < v <= 1]
    if bad:
        raise ValueError(f"size_floors must map target names to areas in (0, 1] (shares of the "
                         f"image), got {', '.join(repr(b) for b in bad)}")
    if not fraction >= 0:
        raise ValueError(f"size_floor_fraction must be >= 0, got {fraction}")


def check_window(size: int, scale: float, overlap: float) -> None:
    """The sliding-window settings a model config holds: size 0 (off) or >= 32 pixels, scale
    in (0, 4], overlap in [0, 1)."""
    if size != 0 and size < 32:
        raise ValueError(f"window_size must be 0 (whole image) or >= 32, got {size}")
    if not 0.0 < scale <= 4.0:
        raise ValueError(f"window_scale must be in (0, 4], got {scale}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"window_overlap must be in [0, 1), got {overlap}")


def check_keys(values: dict[str, Any], valid: list[str], *, what: str) -> None:
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown {what} key(s) {', '.join(unknown)}; valid keys are: {', '.join(valid)}"
        )


_PAPER: dict[str, Any] = dict(
    image_size=1024,
    hidden_dim=512,
    mask_dim=512,
    pixel_decoder_layers=6,
    num_queries=101,
    num_heads=8,
    ffn_dim=2048,
    num_layers=9,
    sampling_ratio=0.1,
    tau0=1.0,
    text_width=512,
    text_layers=6,
)

PRESETS: dict[str, BoltzFormerConfig] = {
    # CPU-fast: 256x256 input, a 5M-parameter ResNet, 10 queries (the paper's Table 6 shows
    # 10 queries are enough).
    "tiny": BoltzFormerConfig(),
    "paper-hiera-s": BoltzFormerConfig(backbone="sam2_hiera_small", **_PAPER),
    "paper-hiera-bp": BoltzFormerConfig(backbone="sam2_hiera_base_plus", **_PAPER),
    "paper-focal-l": BoltzFormerConfig(backbone="focalnet_large_fl4", **_PAPER),
}


def get_preset(name: str, **overrides: Any) -> BoltzFormerConfig:
    """The named preset with `overrides` applied; unknown names or keys list the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].override(**overrides) if overrides else PRESETS[name]

