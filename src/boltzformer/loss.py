"""The training loss: Dice + binary cross-entropy, equal weights (paper Sec. 3.3)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss per sample, averaged: logits, target (B, 1, H, W) -> scalar."""
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    dice = (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)
    return (1 - dice).mean()


def dice_bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Dice + pixel-wise BCE, equal weights. logits, target (B, 1, H, W); target in {0, 1}."""
    target = target.to(logits.dtype)
    return dice_loss(logits, target) + F.binary_cross_entropy_with_logits(logits, target)
