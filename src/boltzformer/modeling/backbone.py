"""Image backbones from timm, as multi-scale feature extractors (strides 4, 8, 16, 32, and
2 where the model has it and it is asked for)."""

from __future__ import annotations

import timm
from timm.models import FeatureInfo
from torch import Tensor, nn

STRIDES: tuple[int, ...] = (4, 8, 16, 32)


class TimmBackbone(nn.Module):
    """Any timm model with `features_only=True`, returning the maps at strides 4, 8, 16, 32.

    Examples: "resnet10t" (the CPU-fast default), "sam2_hiera_small", "sam2_hiera_base_plus",
    "focalnet_large_fl4" (the paper's backbones). `pretrained=True` needs a network or a
    populated Hugging Face cache.
    """

    def __init__(self, name: str, *, pretrained: bool = False, image_size: int | None = None,
                 stride2: bool = False):
        super().__init__()
        self.model = _create(name, pretrained=pretrained, image_size=image_size)
        info = self.model.feature_info
        assert isinstance(info, FeatureInfo)  # what timm's features_only models carry
        reductions = list(info.reduction())
        missing = [s for s in STRIDES if s not in reductions]
        if missing:
            raise ValueError(
                f"backbone {name!r} has feature strides {reductions}; BoltzFormer needs "
                f"{list(STRIDES)} (missing {missing}). Choose a hierarchical timm model."
            )
        self.indices = [reductions.index(s) for s in STRIDES]
        channels = info.channels()
        self.channels: list[int] = [channels[i] for i in self.indices]
        # With stride2=True, the stride-2 map too, when the model has one (a ResNet's stem).
        self.stride2_index = reductions.index(2) if stride2 and 2 in reductions else None
        self.stride2_channels = (None if self.stride2_index is None
                                 else channels[self.stride2_index])

    def forward(self, images: Tensor) -> list[Tensor]:
        """images (B, 3, H, W) normalised -> [(B, C_i, H/s, W/s) for s in 4, 8, 16, 32],
        preceded by the stride-2 map when `stride2_channels` is not None."""
        feats = self.model(images)
        first = [] if self.stride2_index is None else [feats[self.stride2_index]]
        return first + [feats[i] for i in self.indices]


def _create(name: str, *, pretrained: bool, image_size: int | None) -> nn.Module:
    if name not in timm.list_models():
        raise ValueError(
            f"unknown backbone {name!r}: not a timm model name (see timm.list_models())"
        )
    kwargs: dict = {"features_only": True, "pretrained": pretrained}
    try:
        try:
            # Transformer backbones (Hiera, ViT) fix their input size at construction.
            return timm.create_model(name, img_size=image_size, **kwargs)
        except TypeError:
            return timm.create_model(name, **kwargs)
    except OSError as err:  # a download that could not happen
        raise RuntimeError(
            f"could not load pretrained weights for backbone {name!r} ({err}). Pretrained "
            "weights need a network connection or a local Hugging Face cache; set "
            "backbone_pretrained=False to start from random weights."
        ) from err
