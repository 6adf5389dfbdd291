"""The whole model: image -> backbone -> pixel decoder -> decoder -> PiGMA -> mask logits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from boltzformer.config import BoltzFormerConfig
from boltzformer.modeling.backbone import TimmBackbone
from boltzformer.modeling.mask_decoder import BoltzFormerDecoder
from boltzformer.modeling.pigma import PiGMA
from boltzformer.modeling.pixel_decoder import PixelDecoder
from boltzformer.modeling.text_encoder import TextEncoder, TextFeatures

# ImageNet statistics on 0-255 RGB input (as the authors' release normalises).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class ImageFeatures:
    """What the decoder needs from an image, computed once per image.

    levels: decoder feature maps coarse to fine, each (B, d, h, w); semantic: S (B, D, H/4,
    W/4); pixels: the normalised image (B, 3, H, W) that PiGMA grounds on.
    """

    levels: list[Tensor]
    semantic: Tensor
    pixels: Tensor

    def repeat(self, n: int) -> ImageFeatures:
        """(N, ...) -> (N * n, ...): each image's features n times in a row (image-major), so
        one encoded image answers n prompts. A view when N == 1."""

        def rep(t: Tensor) -> Tensor:
            return t.unsqueeze(1).expand(t.shape[0], n, *t.shape[1:]).reshape(-1, *t.shape[1:])

        return ImageFeatures([rep(t) for t in self.levels], rep(self.semantic), rep(self.pixels))

    def select(self, index: Tensor) -> ImageFeatures:
        """(N, ...) -> (P, ...): row p holds image `index[p]`'s features, so P prompts share
        N encoded images (index (P,) long, any order, repeats allowed). Gradients of the P
        rows add up in their image's features."""

        def pick(t: Tensor) -> Tensor:
            return t.index_select(0, index.to(t.device))

        return ImageFeatures([pick(t) for t in self.levels], pick(self.semantic),
                             pick(self.pixels))


@dataclass
class BoltzFormerOutput:
    """logits (B, 1, H, W) at the input resolution (sigmoid -> probability);
    query_logits (B, Q, H/4, W/4), one mask per query; keep_masks, with return_sampling=True,
    one (B, Q, h_l, w_l) bool per decoder layer (True = the query attended to that token);
    layer_logits, with return_layers=True, the (B, Q, H/4, W/4) prediction, with gradient,
    that drove each decoder layer's sampling (for deep supervision)."""

    logits: Tensor
    query_logits: Tensor
    keep_masks: list[Tensor] | None = None
    layer_logits: list[Tensor] | None = None


class BoltzFormer(nn.Module):
    """Text-prompted segmentation with Boltzmann attention sampling."""

    def __init__(
        self,
        *,
        config: BoltzFormerConfig,
        backbone: TimmBackbone,
        pixel_decoder: PixelDecoder,
        text_encoder: TextEncoder,
        decoder: BoltzFormerDecoder,
        pigma: PiGMA,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.text_encoder = text_encoder
        self.decoder = decoder
        self.pigma = pigma
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # --- the three stages -----------------------------------------------------------------
    def encode_image(self, images: Tensor) -> ImageFeatures:
        """images (B, 3, H, W), float RGB in 0-255, H and W multiples of 32."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(
                f"image size {tuple(images.shape[-2:])} is not a multiple of 32; resize to "
                f"{self.config.image_size}x{self.config.image_size} (the Predictor does this)"
            )
        pixels = (images.float() - self.pixel_mean) / self.pixel_std
        levels, semantic = self.pixel_decoder(self.backbone(pixels))
        return ImageFeatures(levels=levels, semantic=semantic, pixels=pixels)

    def encode_text(self, prompts: list[str]) -> TextFeatures:
        """prompts, B strings -> TextFeatures (tokens (B, T, d), padding (B, T))."""
        return self.text_encoder(prompts)

    def decode(
        self,
        image: ImageFeatures,
        text: TextFeatures,
        *,
        generator: torch.Generator | None = None,
        return_sampling: bool = False,
        return_layers: bool = False,
    ) -> BoltzFormerOutput:
        """Decoder + PiGMA; logits come back at the resolution of `image.pixels`."""
        if text.tokens.shape[0] != image.semantic.shape[0]:
            raise ValueError(
                f"{text.tokens.shape[0]} prompts for {image.semantic.shape[0]} images: give "
                "one prompt per image"
            )
        out = self.decoder(
            image.levels, image.semantic, text.tokens, text.padding,
            generator=generator, return_sampling=return_sampling, return_layers=return_layers,
        )
        logits = self.pigma(out.query_logits, image.pixels)
        logits = F.interpolate(
            logits, size=image.pixels.shape[-2:], mode="bilinear", align_corners=False
        )
        return BoltzFormerOutput(logits, out.query_logits, out.keep_masks, out.layer_logits)

    def forward(
        self,
        images: Tensor,
        prompts: list[str],
        *,
        image_index: Tensor | None = None,
        generator: torch.Generator | None = None,
        return_sampling: bool = False,
        return_layers: bool = False,
    ) -> BoltzFormerOutput:
        """images (N, 3, H, W) in 0-255 and P prompts -> BoltzFormerOutput for P pairs.

        Without `image_index`, P == N: prompt i goes with image i. With it, (P,) long, prompt
        p goes with image `image_index[p]`: each image is encoded once for all its prompts
        (training with many prompts per image).
        """
        if image_index is None and len(prompts) != images.shape[0]:
            raise ValueError(
                f"{len(prompts)} prompts for {images.shape[0]} images: give one prompt per image"
            )
        features = self.encode_image(images)
        if image_index is not None:
            if image_index.shape != (len(prompts),):
                raise ValueError(f"image_index must be ({len(prompts)},), one image per prompt; "
                                 f"got {tuple(image_index.shape)}")
            features = features.select(image_index)
        return self.decode(
            features, self.encode_text(prompts),
            generator=generator, return_sampling=return_sampling, return_layers=return_layers,
        )

    # --- checkpoints ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(self.config.to_json())
        save_model(self, str(directory / WEIGHTS_FILE))
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, map_location: str | torch.device = "cpu", **overrides
    ) -> BoltzFormer:
        """Restore a model written by `save_pretrained` (safetensors only; nothing unpickled).

        `overrides` change settings that do not alter the weights (e.g. attention="full").
        """
        from boltzformer.build import build_from_config

        directory = Path(directory)
        cfg_path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (cfg_path, weights):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found: a checkpoint folder holds {CONFIG_FILE} and "
                    f"{WEIGHTS_FILE} (written by model.save_pretrained or boltzformer train)"
                )
        config = BoltzFormerConfig.from_dict(json.loads(cfg_path.read_text()))
        if overrides:
            config = config.override(**overrides)
        model = build_from_config(config)
        load_model(model, str(weights), device=str(map_location))
        return model.to(map_location)
