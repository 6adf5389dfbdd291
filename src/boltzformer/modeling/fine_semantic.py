"""A finer semantic map S: stride 2 instead of the pixel decoder's stride 4 (issue 18).

At stride 4 a 5x5-pixel adrenal gland is one or two cells of S, and no mask predicted on S
and upsampled can outline it (docs/results/small_objects.md measures this ceiling). This module
adds one top-down FPN step to S:

    S_2 = Conv1x1( ReLU(GN(Conv3x3( up2(S_4) + GN(Conv1x1(F_2)) ))) )

F_2 is the backbone's stride-2 feature map (the stem of a ResNet) or, for a backbone without one
(Hiera), a small stride-2 convolution of the image. The decoder's queries, sampling and deep
supervision are unchanged; only the final per-query masks (Eq. 1) are taken on S_2, and PiGMA
then returns masks at the input resolution.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32 if channels % 32 == 0 else 1, channels)


class FineSemantic(nn.Module):
    """(S (B, D, H/4, W/4), F_2 (B, C, H/2, W/2) or the image (B, 3, H, W)) -> (B, D, H/2, W/2).

    `in_channels`: the backbone's stride-2 channels; None: F_2 is made from the image by a
    stride-2 3x3 convolution with `stem_channels` outputs.
    """

    def __init__(self, mask_dim: int, *, in_channels: int | None, stem_channels: int = 32):
        super().__init__()
        if in_channels is None:
            self.stem: nn.Module | None = nn.Sequential(
                nn.Conv2d(3, stem_channels, 3, stride=2, padding=1, bias=False),
                _gn(stem_channels), nn.ReLU())
            in_channels = stem_channels
        else:
            self.stem = None
        self.lateral = nn.Sequential(nn.Conv2d(in_channels, mask_dim, 1, bias=False),
                                     _gn(mask_dim))
        self.output = nn.Sequential(nn.Conv2d(mask_dim, mask_dim, 3, padding=1, bias=False),
                                    _gn(mask_dim), nn.ReLU())
        self.proj = nn.Conv2d(mask_dim, mask_dim, 1)

    def forward(self, semantic: Tensor, fine: Tensor) -> Tensor:
        if self.stem is not None:
            fine = self.stem(fine)
        x = self.lateral(fine) + F.interpolate(semantic, size=fine.shape[-2:], mode="bilinear",
                                               align_corners=False)
        return self.proj(self.output(x))
