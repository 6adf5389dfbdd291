"""The paper's "expert" baseline (its nnU-Net comparison): a U-Net with one output channel per
target, told its target by the channel rather than by text.

The network is `segmentation_models_pytorch.Unet` on a timm encoder (`tu-resnet10t` by
default, randomly initialised like the `tiny` BoltzFormer). One forward pass predicts every
target of an image; `UNetExpert.forward` then keeps, for each sample, the channel of its
target, so the model answers the same `(images, prompts) -> .logits` call as BoltzFormer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from boltzformer.modeling.boltzformer import normalise_images
from boltzformer.modeling.checkpoint import (
    CONFIG_FILE,
    checkpoint_paths,
    load_weights,
    read_config,
)
from boltzformer.modeling.config import check_size_floor, check_window
from boltzformer.modeling.hub import PublishedModel, model_folder
from boltzformer.modeling.model_card import ModelDescription
from boltzformer.modeling.size_floor import SizeFloor, size_floor_or_none
from boltzformer.modeling.text_encoder import label_of_prompt

try:
    import segmentation_models_pytorch as smp
except ImportError as err:
    raise ImportError(
        "the U-Net baseline needs segmentation-models-pytorch: "
        "pip install 'boltzformer[baselines]'"
    ) from err


@dataclass(frozen=True)
class UNetBaselineConfig:
    """targets: one output channel each, in this order (training sorts them); image_size:
    the square input side (a multiple of 32); encoder: an smp encoder name ("tu-<timm
    model>"); decoder_channels: the U-Net decoder's widths, coarse to fine (smp's default);
    size_floors, size_floor_fraction: the size floor, as BoltzFormer's (set by
    `boltzformer calibrate`, modeling/size_floor.py)."""

    targets: tuple[str, ...]
    image_size: int = 256
    encoder: str = "tu-resnet10t"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    size_floors: dict[str, float] = field(default_factory=dict)
    size_floor_fraction: float = 0.0
    window_size: int = 0  # sliding-window inference, as BoltzFormerConfig's window_* fields
    window_scale: float = 1.0
    window_overlap: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "decoder_channels", tuple(self.decoder_channels))
        object.__setattr__(self, "size_floors", dict(self.size_floors))
        check_size_floor(self.size_floors, self.size_floor_fraction)
        check_window(self.window_size, self.window_scale, self.window_overlap)
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets must be distinct names, at least one: {self.targets}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {self.image_size}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UNetBaselineConfig:
        return cls(**values)


@dataclass
class UNetOutput:
    """logits (B, 1, H, W): each sample's target channel; channel_logits (B, C, H, W): all."""

    logits: Tensor
    channel_logits: Tensor


class UNetExpert(PublishedModel, nn.Module):
    """A U-Net with one output channel per target, behind BoltzFormer's call signature."""

    #: `forward` takes the items' target names (`targets=`): `evaluate` passes them.
    takes_targets: ClassVar[bool] = True
    COMMIT_MESSAGE = "Upload boltzformer U-Net expert"

    def __init__(self, config: UNetBaselineConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = smp.Unet(
            config.encoder,
            encoder_weights=None,
            decoder_channels=config.decoder_channels,
            classes=len(config.targets),
        )
        self.channel_of = {name: i for i, name in enumerate(config.targets)}

    @property
    def size_floor(self) -> SizeFloor | None:
        """The config's size floor, as BoltzFormer's; None when it is off."""
        return size_floor_or_none(self.config.size_floors, self.config.size_floor_fraction)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' floating dtype (what `model.to(dtype)` set); inputs are cast to it."""
        return next(self.unet.parameters()).dtype

    def channel_logits(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) RGB in 0-255 of any dtype, H and W multiples of 32 ->
        (B, C, H, W) in the model's dtype, one channel per target of `config.targets`."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
        return self.unet(normalise_images(images, self.dtype))

    def channels(self, targets: Sequence[str]) -> Tensor:
        """Target names -> their channel indices (B,); an unknown name is a ValueError."""
        unknown = sorted({t for t in targets if t not in self.channel_of})
        if unknown:
            raise ValueError(
                f"unknown target(s) {unknown}: this U-Net was trained for "
                f"{list(self.config.targets)}"
            )
        return torch.tensor([self.channel_of[t] for t in targets], dtype=torch.long)

    def target_of_prompt(self, prompt: str) -> str:
        """The target of a canonical prompt, `<target>` or `<target> in <site> <modality>`
        (the longest known name that fits). Paraphrases are not guessed: a ValueError says
        to pass `targets=` instead."""
        target = label_of_prompt(prompt, self.config.targets)
        if target is None:
            raise ValueError(
                f"cannot tell the target of the prompt {prompt!r}: the U-Net expert reads only "
                f"'<target> in <site> <modality>' prompts with a target among "
                f"{list(self.config.targets)}; pass targets=[...] (evaluate() does)"
            )
        return target

    def forward(
        self,
        images: Tensor,
        prompts: Sequence[str],
        *,
        image_index: Tensor | None = None,
        generator: torch.Generator | None = None,
        targets: Sequence[str] | None = None,
    ) -> UNetOutput:
        """images (N, 3, H, W) in 0-255; P prompts; optional P target names (used instead of
        the prompts when given) -> UNetOutput with logits (P, 1, H, W), channel_logits
        (P, C, H, W).

        As with BoltzFormer, `image_index` (P,) gives each prompt's image, so each image goes
        through the U-Net once for all its targets; without it P == N. `generator` is
        accepted for the evaluator's sake and unused: the U-Net draws nothing.
        """
        if targets is None:
            targets = [self.target_of_prompt(p) for p in prompts]
        if image_index is None:
            image_index = torch.arange(images.shape[0], device=images.device)
        if len(targets) != image_index.shape[0]:
            raise ValueError(f"{len(targets)} targets for {image_index.shape[0]} images: give "
                             "one each")
        channel_logits = self.channel_logits(images)[image_index.to(images.device)]
        index = self.channels(targets).to(channel_logits.device)
        logits = channel_logits[torch.arange(len(index), device=index.device), index]
        return UNetOutput(logits[:, None], channel_logits)

    @staticmethod
    def describe(c: UNetBaselineConfig) -> ModelDescription:
        """What the model card says of a model of config `c`."""
        floor = (f"{len(c.size_floors)} targets, fraction {c.size_floor_fraction:g}"
                 if c.size_floors and c.size_floor_fraction > 0 else "off")
        return ModelDescription(
            kind="U-Net expert (boltzformer baseline)",
            summary=(
                "The per-target U-Net baseline of the `boltzformer` package (the paper's "
                "expert comparison): a U-Net with one output channel per target, told its "
                "target by the channel rather than by text. Input: RGB images at the "
                "input size; output: one logit map per target."),
            settings=(
                ("encoder", c.encoder), ("input size", f"{c.image_size} px"),
                ("decoder channels", ", ".join(map(str, c.decoder_channels))),
                ("size floor", floor), ("format", "config.json + model.safetensors"),
                ("needs", "pip install 'boltzformer[baselines]'"),
            ),
            vocabulary=tuple(c.targets),
            closed=True,
            python=(
                "import torch\n"
                "from boltzformer.baselines.unet import UNetExpert\n\n"
                'model = UNetExpert.from_pretrained("{ref}").eval()\n'
                "images = torch.zeros(1, 3, model.config.image_size, model.config.image_size)"
                "  # RGB 0-255\n"
                'logits = model(images, ["{prompt}"], targets=["{prompt}"]).logits'
                "  # (1, 1, H, W)\n"),
            cli=False,
        )

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, revision: str | None = None,
        cache_dir: str | Path | None = None, token: str | bool | None = None,
        local_files_only: bool = False, map_location: str | torch.device = "cpu",
    ) -> UNetExpert:
        """Restore a model written by `save_pretrained` (safetensors only; nothing unpickled)
        from a local folder or a Hugging Face Hub id (`org/name`; `revision`, `cache_dir`,
        `token`, `local_files_only` as `BoltzFormer.from_pretrained`). A Hub id that cannot be
        fetched, a config.json that cannot be read and weights that are corrupt or do not fit
        it raise `CheckpointError` (a ValueError) with a one-line message naming the id or
        file."""
        directory = model_folder(name_or_path, revision=revision, cache_dir=cache_dir,
                                 token=token, local_files_only=local_files_only)
        cfg_path, weights = checkpoint_paths(
            directory, written_by="UNetExpert.save_pretrained or train_unet")
        model = cls(read_config(cfg_path, UNetBaselineConfig.from_dict))
        load_weights(model, weights, model_from=str(cfg_path),
                     fix=f"use the {CONFIG_FILE} saved with these weights", device=map_location)
        return model.to(map_location)
