"""PiGMA: pixel-grounded mask aggregation (paper Sec. 3.3, Fig. 3).

    ensemble   = mean_i(query logits), upsampled x2                                 (Eq. 7)
    correction = Conv1x1([image@2S, ConvT_k4s2([image@S, query logits])])
    output     = (ensemble + correction) / 2       -> sigmoid is the probability

With `correction=False` the output is the ensemble alone (the paper's Table 8 ablation). As in
the authors' release, the (normalised) image comes first in both concatenations, so its
weights load here, and there is no non-linearity between the two convolutions. The release
resizes the image to a fixed 256² and 512² (S and 2S at its 1024² input); here to S and 2S.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PiGMA(nn.Module):
    """(B, Q, Hs, Ws) query logits + (B, 3, H, W) normalised image -> (B, 1, 2Hs, 2Ws) mask
    logits."""

    def __init__(self, num_queries: int, *, channels: int = 10, correction: bool = True):
        super().__init__()
        self.correction = correction
        if correction:
            self.up = nn.ConvTranspose2d(num_queries + 3, channels, 4, stride=2, padding=1)
            self.out = nn.Conv2d(channels + 3, 1, 1)

    def forward(self, query_logits: Tensor, image: Tensor) -> Tensor:
        hs, ws = query_logits.shape[-2:]
        size = (2 * hs, 2 * ws)
        ensemble = F.interpolate(
            query_logits.mean(1, keepdim=True), size=size, mode="bilinear", align_corners=False
        )
        if not self.correction:
            return ensemble
        img_s = F.interpolate(image, size=(hs, ws), mode="bilinear", align_corners=False)
        img_2s = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        x = self.up(torch.cat([img_s, query_logits], 1))
        correction = _pointwise(self.out, [img_2s, x])
        return (ensemble + correction) / 2


def _pointwise(conv: nn.Conv2d, parts: list[Tensor]) -> Tensor:
    """The 1x1 convolution `conv` of the channel concatenation of `parts` (each (B, C_i, H,
    W)) as matrix products, one per part: the same function without the concatenated copy,
    and far faster on the CPU than the convolution kernel for so few channels (measured
    181 -> 26 ms forward+backward for 32 x 13 x 128², one thread)."""
    weights = conv.weight.flatten(1).split([x.shape[1] for x in parts], 1)  # (out, C_i)
    products = [torch.matmul(w, x.flatten(2)) for w, x in zip(weights, parts, strict=True)]
    out = torch.stack(products).sum(0)
    if conv.bias is not None:
        out = out + conv.bias.view(1, -1, 1)
    return out.unflatten(2, parts[0].shape[-2:])
