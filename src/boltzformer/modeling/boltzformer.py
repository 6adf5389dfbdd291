"""The whole model: image -> backbone -> pixel decoder -> decoder -> PiGMA -> mask logits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from boltzformer.modeling.backbone import TimmBackbone
from boltzformer.modeling.checkpoint import (
    CONFIG_FILE,
    checkpoint_paths,
    load_weights,
    read_config,
)
from boltzformer.modeling.config import BoltzFormerConfig, get_preset
from boltzformer.modeling.existence import ExistenceHead, mask_evidence
from boltzformer.modeling.fine_semantic import FineSemantic
from boltzformer.modeling.hub import PublishedModel, model_folder
from boltzformer.modeling.mask_decoder import BoltzFormerDecoder
from boltzformer.modeling.model_card import ModelDescription
from boltzformer.modeling.pigma import PiGMA
from boltzformer.modeling.pixel_decoder import PixelDecoder
from boltzformer.modeling.size_floor import SizeFloor, size_floor_or_none
from boltzformer.modeling.text_encoder import TextEncoder, TextFeatures, build_text_encoder

# ImageNet statistics on 0-255 RGB input (as the authors' release normalises).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def normalise_images(images: Tensor, dtype: torch.dtype) -> Tensor:
    """images (B, 3, H, W) RGB in 0-255, any dtype -> ImageNet-normalised (B, 3, H, W) in
    `dtype`, a model's dtype. The arithmetic runs in float32 (float64 for a float64 model)
    with the exact statistics, then the result is cast: a bfloat16 copy of the mean would
    be off by up to 0.2 grey levels."""
    work = torch.promote_types(dtype, torch.float32)
    mean = torch.tensor(PIXEL_MEAN, dtype=work, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=work, device=images.device).view(1, 3, 1, 1)
    return ((images.to(work) - mean) / std).to(dtype)


@dataclass
class ImageFeatures:
    """What the decoder needs from an image, computed once per image.

    levels: decoder feature maps coarse to fine, each (B, d, h, w); semantic: S (B, D, H/4,
    W/4); pixels: the normalised image (B, 3, H, W) that PiGMA grounds on; fine, with
    semantic_stride 2, the stride-2 residual of the finer mask path (B, C, H/2, W/2).
    """

    levels: list[Tensor]
    semantic: Tensor
    pixels: Tensor
    fine: Tensor | None = None

    def repeat(self, n: int) -> ImageFeatures:
        """(N, ...) -> (N * n, ...): each image's features n times in a row (image-major), so
        one encoded image answers n prompts. A view when N == 1."""

        def rep(t: Tensor) -> Tensor:
            return t.unsqueeze(1).expand(t.shape[0], n, *t.shape[1:]).reshape(-1, *t.shape[1:])

        return ImageFeatures([rep(t) for t in self.levels], rep(self.semantic), rep(self.pixels),
                             None if self.fine is None else rep(self.fine))

    def select(self, index: Tensor) -> ImageFeatures:
        """(N, ...) -> (P, ...): row p holds image `index[p]`'s features, so P prompts share
        N encoded images (index (P,) long, any order, repeats allowed). Gradients of the P
        rows add up in their image's features."""

        def pick(t: Tensor) -> Tensor:
            return t.index_select(0, index.to(t.device))

        return ImageFeatures([pick(t) for t in self.levels], pick(self.semantic),
                             pick(self.pixels), None if self.fine is None else pick(self.fine))


@dataclass
class BoltzFormerOutput:
    """logits (B, 1, H, W) at the input resolution (sigmoid -> probability);
    query_logits (B, Q, H/4, W/4), one mask per query; keep_masks, with return_sampling=True,
    one (B, Q, h_l, w_l) bool per decoder layer (True = the query attended to that token);
    layer_logits, with return_layers=True, the (B, Q, H/4, W/4) prediction (coarser with
    layer_pool > 1), with gradient, that drove each decoder layer's sampling (for deep
    supervision); existence_logits (B,), with the existence head, the logit that the
    prompted target is in the image (the mask logits are not gated by it:
    `existence.gate_logits` does that)."""

    logits: Tensor
    query_logits: Tensor
    keep_masks: list[Tensor] | None = None
    layer_logits: list[Tensor] | None = None
    existence_logits: Tensor | None = None


class BoltzFormer(PublishedModel, nn.Module):
    """Text-prompted segmentation with Boltzmann attention sampling."""

    #: `forward` takes the items' target names (`targets=`): `evaluate` passes them.
    takes_targets: ClassVar[bool] = True

    def __init__(
        self,
        *,
        config: BoltzFormerConfig,
        backbone: TimmBackbone,
        pixel_decoder: PixelDecoder,
        text_encoder: TextEncoder,
        decoder: BoltzFormerDecoder,
        pigma: PiGMA,
        fine_semantic: FineSemantic | None = None,
        existence: ExistenceHead | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.fine_semantic = fine_semantic
        self.text_encoder = text_encoder
        self.decoder = decoder
        self.pigma = pigma
        self.existence = existence

    @property
    def size_floor(self) -> SizeFloor | None:
        """The config's size floor (modeling/size_floor.py), applied by `evaluate` and the
        `Predictor`; None when it is off (no sizes, or a fraction of 0)."""
        return size_floor_or_none(self.config.size_floors, self.config.size_floor_fraction)

    @classmethod
    def from_config(cls, config: BoltzFormerConfig) -> BoltzFormer:
        """Every component of `config`, freshly initialised."""
        fine = config.semantic_stride == 2
        backbone = TimmBackbone(
            config.backbone, pretrained=config.backbone_pretrained,
            image_size=config.image_size, stride2=fine,
        )
        pixel_decoder = PixelDecoder(
            backbone.channels,
            hidden_dim=config.hidden_dim,
            mask_dim=config.mask_dim,
            encoder_layers=config.pixel_decoder_layers,
            num_heads=config.num_heads,
            ffn_dim=config.ffn_dim,
        )
        text_encoder = build_text_encoder(
            config.text_encoder,
            out_dim=config.hidden_dim,
            trainable=config.text_trainable,
            max_tokens=config.text_max_tokens,
            width=config.text_width,
            layers=config.text_layers,
            vocab_size=config.text_vocab_size,
            labels=config.text_labels,
        )
        return cls(
            config=config,
            backbone=backbone,
            pixel_decoder=pixel_decoder,
            text_encoder=text_encoder,
            decoder=BoltzFormerDecoder.from_config(config),
            pigma=PiGMA(config.num_queries, channels=config.pigma_channels,
                        correction=config.pigma),
            fine_semantic=(FineSemantic(config.mask_dim, in_channels=backbone.stride2_channels)
                           if fine else None),
            existence=(ExistenceHead(config.hidden_dim, config.mask_dim
                                     if config.existence_evidence else None)
                       if config.existence_head else None),
        )

    @property
    def device(self) -> torch.device:
        return self.decoder.query_feat.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the weights (what `model.to(dtype)` set): inputs are cast
        to it at `encode_image`, and the constants the model makes follow it."""
        return self.decoder.query_feat.weight.dtype

    # --- the three stages -----------------------------------------------------------------
    def encode_image(self, images: Tensor) -> ImageFeatures:
        """images (B, 3, H, W), RGB in 0-255 of any dtype (cast to the model's), H and W
        multiples of 32."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(
                f"image size {tuple(images.shape[-2:])} is not a multiple of 32; resize to "
                f"{self.config.image_size}x{self.config.image_size} (the Predictor does this)"
            )
        pixels = normalise_images(images, self.dtype)
        feats = self.backbone(pixels)
        levels, semantic = self.pixel_decoder(feats[-4:])
        fine = None
        if self.fine_semantic is not None:  # the stride-2 mask path
            fine = self.fine_semantic(semantic, feats[0] if len(feats) == 5 else pixels)
        return ImageFeatures(levels=levels, semantic=semantic, pixels=pixels, fine=fine)

    def encode_text(self, prompts: list[str], targets: list[str] | None = None) -> TextFeatures:
        """prompts, B strings -> TextFeatures (tokens (B, T, d), padding (B, T)).

        `targets`, the B items' target names, replace the prompts for a closed-vocabulary
        ("labels") text encoder, which reads names, not sentences; open encoders ignore them.
        """
        if targets is not None and self.text_encoder.labels is not None:
            if len(targets) != len(prompts):
                raise ValueError(f"{len(targets)} targets for {len(prompts)} prompts")
            return self.text_encoder(list(targets))
        return self.text_encoder(prompts)

    def decode(
        self,
        image: ImageFeatures,
        text: TextFeatures,
        *,
        generator: torch.Generator | None = None,
        return_sampling: bool = False,
        return_layers: bool = False,
        layer_semantic: Tensor | None = None,
    ) -> BoltzFormerOutput:
        """Decoder + PiGMA; logits come back at the resolution of `image.pixels`.
        `layer_semantic`: S at the resolution the layer predictions take (the decoder's)."""
        if text.tokens.shape[0] != image.semantic.shape[0]:
            raise ValueError(
                f"{text.tokens.shape[0]} prompts for {image.semantic.shape[0]} images: give "
                "one prompt per image"
            )
        out = self.decoder(
            image.levels, image.semantic, text.tokens, text.padding,
            generator=generator, return_sampling=return_sampling, return_layers=return_layers,
            layer_semantic=layer_semantic,
        )
        query_logits = out.query_logits
        if self.fine_semantic is not None and image.fine is not None:  # Eq. 1 on S at stride 2
            query_logits = self.fine_semantic.masks(query_logits, out.mask_embedding, image.fine)
        logits = self.pigma(query_logits, image.pixels)
        logits = F.interpolate(
            logits, size=image.pixels.shape[-2:], mode="bilinear", align_corners=False
        )
        existence = None
        if self.existence is not None:  # detached: its BCE leaves the mask path alone
            queries, tokens, semantic = out.queries, text.tokens, image.semantic
            if self.config.existence_detach:
                queries, tokens, semantic = queries.detach(), tokens.detach(), semantic.detach()
            evidence = (mask_evidence(out.query_logits, semantic)
                        if self.config.existence_evidence else None)
            existence = self.existence(queries, tokens, text.padding, evidence)
        return BoltzFormerOutput(logits, query_logits, out.keep_masks, out.layer_logits,
                                 existence)

    def forward(
        self,
        images: Tensor,
        prompts: list[str],
        *,
        image_index: Tensor | None = None,
        targets: list[str] | None = None,
        generator: torch.Generator | None = None,
        return_sampling: bool = False,
        return_layers: bool = False,
        layer_pool: int = 1,
    ) -> BoltzFormerOutput:
        """images (N, 3, H, W) in 0-255 and P prompts -> BoltzFormerOutput for P pairs.

        `targets` (P target names, optional) are what a closed-vocabulary ("labels") model
        reads instead of the prompts (training and evaluation pass them); see `encode_text`.

        Without `image_index`, P == N: prompt i goes with image i. With it, (P,) long, prompt
        p goes with image `image_index[p]`: each image is encoded once for all its prompts
        (training with many prompts per image).

        `layer_pool` > 1 (with `return_layers`): the layer predictions are taken on S
        average-pooled by that factor, once per image (a cheaper deep supervision,
        `loss.layer_pool`); the sampling and the final output are unchanged.
        """
        if layer_pool < 1:
            raise ValueError(f"layer_pool must be >= 1, got {layer_pool}")
        if image_index is None and len(prompts) != images.shape[0]:
            raise ValueError(
                f"{len(prompts)} prompts for {images.shape[0]} images: give one prompt per image"
            )
        features = self.encode_image(images)
        coarse = (F.avg_pool2d(features.semantic, layer_pool)
                  if return_layers and layer_pool > 1 else None)
        if image_index is not None:
            if image_index.shape != (len(prompts),):
                raise ValueError(f"image_index must be ({len(prompts)},), one image per prompt; "
                                 f"got {tuple(image_index.shape)}")
            features = features.select(image_index)
            if coarse is not None:
                coarse = coarse.index_select(0, image_index.to(coarse.device))
        return self.decode(
            features, self.encode_text(prompts, targets),
            generator=generator, return_sampling=return_sampling, return_layers=return_layers,
            layer_semantic=coarse,
        )

    # --- checkpoints ------------------------------------------------------------------------
    @staticmethod
    def describe(c: BoltzFormerConfig) -> ModelDescription:
        """What the model card says of a model of config `c`."""
        closed = c.text_encoder == "labels"
        floor = (f"{len(c.size_floors)} targets, fraction {c.size_floor_fraction:g}"
                 if c.size_floors and c.size_floor_fraction > 0 else "off")
        return ModelDescription(
            kind="BoltzFormer",
            summary=(
                "A BoltzFormer (Boltzmann attention sampling, CVPR 2025) checkpoint of the "
                "`boltzformer` package: it segments the object a text prompt names in a 2D "
                "medical image (or each slice of a volume), with small objects in mind. "
                "Input: an RGB or grey image of any size; output: one probability mask per "
                "prompt at the image's size."),
            settings=(
                ("backbone", f"{c.backbone} (timm)"), ("input size", f"{c.image_size} px"),
                ("text encoder", c.text_encoder), ("attention", c.attention),
                ("queries x layers", f"{c.num_queries} x {c.num_layers}"),
                ("existence head", f"yes, threshold {c.existence_threshold:g}"
                 if c.existence_head else "no"),
                ("size floor", floor), ("format", "config.json + model.safetensors"),
            ),
            vocabulary=tuple(c.text_labels) if closed else tuple(sorted(c.size_floors)),
            closed=closed,
            python=(
                "from boltzformer import Predictor\n\n"
                'predictor = Predictor.from_pretrained("{ref}")\n'
                "predictor.set_image(image)  # (H, W, 3) or (H, W) array\n"
                'pred = predictor.predict(["{prompt}"])\n'
                "masks = Predictor.threshold(pred.prob)  # (P, H, W) bool\n"),
            cli=True,
        )

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, revision: str | None = None,
        cache_dir: str | Path | None = None, token: str | bool | None = None,
        local_files_only: bool = False, map_location: str | torch.device = "cpu", **overrides,
    ) -> BoltzFormer:
        """Restore a model written by `save_pretrained` (safetensors only; nothing unpickled)
        from a local folder or a Hugging Face Hub id (`org/name`, at `revision`, through the
        Hub cache, `cache_dir`, with `token`; offline with `local_files_only` or
        HF_HUB_OFFLINE=1: see `modeling/hub.py`).

        `overrides` change settings that do not alter the weights (e.g. attention="full").
        A missing local file raises FileNotFoundError; a Hub id that cannot be fetched, a
        config.json that is not valid JSON or holds unknown keys, and weights that are
        corrupt or do not fit the config, raise `CheckpointError` (a ValueError) with a
        one-line message naming the id or file.
        """
        directory = model_folder(name_or_path, revision=revision, cache_dir=cache_dir,
                                 token=token, local_files_only=local_files_only)
        cfg_path, weights = checkpoint_paths(
            directory, written_by="model.save_pretrained or boltzformer train")
        config = read_config(cfg_path, BoltzFormerConfig.from_dict)
        if overrides:
            config = config.override(**overrides)
        model = cls.from_config(config)
        load_weights(model, weights, model_from=str(cfg_path),
                     fix=f"use the {CONFIG_FILE} saved with these weights")
        return model.to(map_location)


def build_model(preset: str = "tiny", **overrides: Any) -> BoltzFormer:
    """A BoltzFormer from a named preset ("tiny", "paper-hiera-s", "paper-hiera-bp",
    "paper-focal-l") with any config field overridden, e.g. attention="full"."""
    return BoltzFormer.from_config(get_preset(preset, **overrides))
