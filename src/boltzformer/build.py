"""`build_model(preset)`: assemble a BoltzFormer from its configuration."""

from __future__ import annotations

from typing import Any

from boltzformer.config import BoltzFormerConfig, get_preset
from boltzformer.modeling.backbone import TimmBackbone
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.fine_semantic import FineSemantic
from boltzformer.modeling.mask_decoder import BoltzFormerDecoder, SamplingSettings
from boltzformer.modeling.pigma import PiGMA
from boltzformer.modeling.pixel_decoder import PixelDecoder
from boltzformer.modeling.text_encoder import build_text_encoder


def build_decoder(config: BoltzFormerConfig) -> BoltzFormerDecoder:
    """The transformer decoder of `config` alone, freshly initialised."""
    return BoltzFormerDecoder(
        hidden_dim=config.hidden_dim,
        mask_dim=config.mask_dim,
        num_queries=config.num_queries,
        num_heads=config.num_heads,
        ffn_dim=config.ffn_dim,
        num_layers=config.num_layers,
        num_levels=config.num_levels,
        text_prior=config.text_prior,
        query_init_std=config.query_init_std,
        dropout=config.dropout,
        sampling=SamplingSettings(
            attention=config.attention,
            sampler=config.sampler,
            ratio=config.sampling_ratio,
            tau0=config.tau0,
            keep_threshold=config.keep_threshold,
            mask_threshold=config.mask_threshold,
            logits=config.sampling_logits,
            per_head=config.sampling_per_head,
            explore=config.sampling_explore,
        ),
        attention_impl=config.attention_impl,
    )


def build_from_config(config: BoltzFormerConfig) -> BoltzFormer:
    """Instantiate every component of `config` with freshly initialised weights."""
    fine = config.semantic_stride == 2
    backbone = TimmBackbone(
        config.backbone, pretrained=config.backbone_pretrained, image_size=config.image_size,
        stride2=fine,
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
    decoder = build_decoder(config)
    pigma = PiGMA(config.num_queries, channels=config.pigma_channels, correction=config.pigma)
    fine_semantic = (FineSemantic(config.mask_dim, in_channels=backbone.stride2_channels)
                     if fine else None)
    return BoltzFormer(
        config=config,
        backbone=backbone,
        pixel_decoder=pixel_decoder,
        text_encoder=text_encoder,
        decoder=decoder,
        pigma=pigma,
        fine_semantic=fine_semantic,
    )


def build_model(preset: str = "tiny", **overrides: Any) -> BoltzFormer:
    """A BoltzFormer from a named preset ("tiny", "paper-hiera-s", "paper-hiera-bp",
    "paper-focal-l") with any config field overridden, e.g. attention="full"."""
    return build_from_config(get_preset(preset, **overrides))
