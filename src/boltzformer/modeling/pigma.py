"""PiGMA: pixel-grounded mask aggregation (paper Sec. 3.3, Fig. 3).

    ensemble   = mean_i(query logits), upsampled x2                                 (Eq. 7)
    correction = Conv1x1([ConvT_k4s2([query logits, image@S]), image@2S])
    output     = (ensemble + correction) / 2       -> sigmoid is the probability

With `correction=False` the output is the ensemble alone (the paper's Table 8 ablation). The
authors' release, as described in NOTES.md, has no non-linearity between the two
convolutions; none is added here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PiGMA(nn.Module):
    """(B, Q, Hs, Ws) query logits + (B, 3, H, W) image -> (B, 1, 2Hs, 2Ws) mask logits."""

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
        x = self.up(torch.cat([query_logits, img_s], 1))
        correction = self.out(torch.cat([x, img_2s], 1))
        return (ensemble + correction) / 2
