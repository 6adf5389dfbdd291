"""Pixel decoder: backbone features (strides 4-32) -> decoder levels and the semantic map S.

Mask2Former's transformer-encoder FPN, as the authors' release configures it
(`TransformerEncoderPixelDecoder`, norm "GN"), weight for weight:

    s32:  1x1 conv (bias) -> L post-norm encoder layers, the sine positions added to queries
          and keys in every layer -> 3x3 conv + GroupNorm + ReLU          -> level s32
    s16, s8, s4:  1x1 conv + GroupNorm (lateral) + nearest-upsampled level above
          -> 3x3 conv + GroupNorm + ReLU                                  -> levels s16, s8
    S = 3x3 conv (bias) of the s4 map                                     (the mask features)

The decoder attends to the levels at strides 32, 16, 8 (coarse to fine); S is at stride 4.
(The paper's appendix describes Mask2Former's deformable-attention pixel decoder; the release's
configs use this one, which needs no compiled kernel.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from boltzformer.modeling.position import sine_position_encoding


def _conv_gn(cin: int, cout: int, k: int) -> nn.Sequential:
    """k x k convolution (no bias) followed by GroupNorm (32 groups where the width allows)."""
    groups = 32 if cout % 32 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.GroupNorm(groups, cout)
    )


def _conv_gn_relu(dim: int) -> nn.Sequential:
    """3x3 convolution + GroupNorm + ReLU (an FPN output convolution)."""
    return nn.Sequential(_conv_gn(dim, dim, 3), nn.ReLU())


class EncoderLayer(nn.Module):
    """DETR's post-norm encoder layer: x <- LN(x + SelfAttn(q = k = x + pos, v = x));
    x <- LN(x + Linear(ReLU(Linear(x))))."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x (B, n, d), pos (n, d) -> (B, n, d)."""
        qk = x + pos
        x = self.norm1(x + self.self_attn(qk, qk, x, need_weights=False)[0])
        return self.norm2(x + self.linear2(torch.relu(self.linear1(x))))


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
        ffn_dim: int = 2048,
    ) -> None:
        super().__init__()
        c4, c8, c16, c32 = in_channels
        self.input_proj = nn.Conv2d(c32, hidden_dim, 1)
        self.encoder = nn.ModuleList(
            EncoderLayer(hidden_dim, num_heads, ffn_dim) for _ in range(encoder_layers)
        )
        self.top = _conv_gn_relu(hidden_dim)
        self.lateral = nn.ModuleList(_conv_gn(c, hidden_dim, 1) for c in (c16, c8, c4))
        self.output = nn.ModuleList(_conv_gn_relu(hidden_dim) for _ in range(3))
        self.mask_proj = nn.Conv2d(hidden_dim, mask_dim, 3, padding=1)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Returns ([stride 32, 16, 8 maps, each (B, d, h, w)], S (B, mask_dim, H/4, W/4))."""
        f4, f8, f16, f32 = feats
        x = self.input_proj(f32)
        b, d, h, w = x.shape
        pos = sine_position_encoding(h, w, d, device=x.device).to(x.dtype)
        tokens = x.flatten(2).transpose(1, 2)
        for layer in self.encoder:
            tokens = layer(tokens, pos)
        x = self.top(tokens.transpose(1, 2).reshape(b, d, h, w))
        outs = [x]
        for lateral, output, f in zip(self.lateral, self.output, (f16, f8, f4)):
            x = lateral(f) + F.interpolate(x, size=f.shape[-2:], mode="nearest")
            x = output(x)
            outs.append(x)
        return outs[:3], self.mask_proj(outs[3])
