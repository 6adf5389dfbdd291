"""Pixel decoder: backbone features (strides 4-32) -> decoder levels and the semantic map S.

A transformer-encoder FPN in the manner of MaskFormer's pixel decoder: a few transformer
encoder layers over the stride-32 tokens (global context at low cost), then a top-down FPN.
The decoder attends to the levels at strides 32, 16, 8 (coarse to fine); S is at stride 4.
(The paper's pixel decoder follows Mask2Former, whose encoder uses deformable attention; that
needs a compiled kernel, so this is the portable variant.)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from boltzformer.modeling.position import sine_position_encoding


def _conv_gn(cin: int, cout: int, k: int) -> nn.Sequential:
    """k x k convolution followed by GroupNorm (32 groups where the width allows)."""
    groups = 32 if cout % 32 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.GroupNorm(groups, cout)
    )


class PixelDecoder(nn.Module):
    """(B, C_i, H/s, W/s) for s = 4, 8, 16, 32 -> levels [(B, d, H/32..), (H/16), (H/8)] and S."""

    def __init__(
        self,
        in_channels: list[int],
        *,
        hidden_dim: int,
        mask_dim: int,
        encoder_layers: int = 1,
        num_heads: int = 8,
    ) -> None:
        super().__init__()
        c4, c8, c16, c32 = in_channels
        self.input_proj = _conv_gn(c32, hidden_dim, 1)
        layer = nn.TransformerEncoderLayer(
            hidden_dim, num_heads, 4 * hidden_dim, dropout=0.0, batch_first=True
        )
        self.encoder = (
            nn.TransformerEncoder(layer, encoder_layers, enable_nested_tensor=False)
            if encoder_layers > 0
            else None
        )
        self.lateral = nn.ModuleList(_conv_gn(c, hidden_dim, 1) for c in (c16, c8, c4))
        self.output = nn.ModuleList(
            nn.Sequential(_conv_gn(hidden_dim, hidden_dim, 3), nn.ReLU()) for _ in range(3)
        )
        self.mask_proj = nn.Conv2d(hidden_dim, mask_dim, 1)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Returns ([stride 32, 16, 8 maps, each (B, d, h, w)], S (B, mask_dim, H/4, W/4))."""
        f4, f8, f16, f32 = feats
        x = self.input_proj(f32)
        if self.encoder is not None:
            b, d, h, w = x.shape
            pos = sine_position_encoding(h, w, d, device=x.device).to(x.dtype)
            tokens = x.flatten(2).transpose(1, 2) + pos
            x = self.encoder(tokens).transpose(1, 2).reshape(b, d, h, w)
        outs = [x]
        for lateral, output, f in zip(self.lateral, self.output, (f16, f8, f4)):
            x = lateral(f) + F.interpolate(x, size=f.shape[-2:], mode="bilinear",
                                           align_corners=False)
            x = output(x)
            outs.append(x)
        return outs[:3], self.mask_proj(outs[3])
