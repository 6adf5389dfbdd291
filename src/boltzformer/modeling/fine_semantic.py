"""A finer mask path: the final masks at stride 2 instead of S's stride 4 (issue 18).

At stride 4 a 5x5-pixel adrenal gland is one or two cells of S, and a mask predicted on S and
upsampled outlines it poorly (docs/results/small_objects.md measures this ceiling). This module
adds one light top-down FPN step, a residual on S upsampled:

    x   = ReLU(GN(Conv3x3( GN(Conv1x1(F_2)) + up2(Conv1x1(S)) )))   (B, C, H/2, W/2), C = 32
    S_2 = up2(S) + W x + b                                            (B, D, H/2, W/2)

F_2 is the backbone's stride-2 feature map (the stem of a ResNet) or, for a backbone without one
(Hiera), a small stride-2 convolution of the image. S_2 is never built: the final mask of a
query with embedding mu (Eq. 1 on S_2) is

    mu . S_2 = up2(mu . S) + (W^T mu) . x + mu . b

so each prompt costs a C-channel dot product at stride 2 on top of the usual one on S, and
only the narrow x is kept per image. The decoder's queries, sampling and deep supervision are
unchanged (they use S at stride 4); PiGMA then returns masks at the input resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32 if channels % 32 == 0 else 1, channels)


def _up(x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FineSemantic(nn.Module):
    """The stride-2 residual x of S_2 = up2(S) + W x + b, and the final masks on S_2.

    `in_channels`: the backbone's stride-2 channels; None: F_2 is made from the image by a
    stride-2 3x3 convolution. `width`: C, the channels of x.
    """

    def __init__(self, mask_dim: int, *, in_channels: int | None, width: int = 32):
        super().__init__()
        if in_channels is None:
            self.stem: nn.Module | None = nn.Sequential(
                nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), _gn(width), nn.ReLU())
            in_channels = width
        else:
            self.stem = None
        self.lateral = nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False), _gn(width))
        self.reduce = nn.Conv2d(mask_dim, width, 1)
        self.output = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False),
                                    _gn(width), nn.ReLU())
        self.proj = nn.Conv2d(width, mask_dim, 1)  # W (D x C) and b (D)

    def forward(self, semantic: Tensor, fine: Tensor) -> Tensor:
        """S (B, D, H/4, W/4) and F_2 (B, C2, H/2, W/2) or the image (B, 3, H, W) -> x
        (B, C, H/2, W/2)."""
        if self.stem is not None:
            fine = self.stem(fine)
        lateral = self.lateral(fine)
        return self.output(lateral + _up(self.reduce(semantic), lateral.shape[-2:]))

    def masks(self, logits: Tensor, mu: Tensor, x: Tensor) -> Tensor:
        """mu . S_2: logits = mu . S (B, Q, H/4, W/4), mu (B, Q, D), x (B, C, H/2, W/2) ->
        (B, Q, H/2, W/2)."""
        w, b = self.proj.weight[:, :, 0, 0], self.proj.bias  # (D, C), (D)
        assert b is not None  # proj is made with a bias
        fine = torch.einsum("bqc,bchw->bqhw", mu @ w, x)
        return _up(logits, x.shape[-2:]) + fine + (mu @ b)[..., None, None]
