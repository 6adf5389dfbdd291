"""The training loss: Dice + binary cross-entropy (paper Sec. 3.3), plus deep supervision.

The paper and the authors' release supervise only the final PiGMA output. Deep supervision
(Mask2Former's auxiliary losses) adds Dice + BCE on each decoder layer's prediction, the
masks that drive the next layer's Boltzmann sampling; see docs/training.md for why and for
what it measured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEEP_SUPERVISION_TARGETS: tuple[str, ...] = ("query", "mean")


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


def layer_target(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """The mask (B, 1, H, W) at a layer prediction's (h, w): 1 in every cell that holds any
    object pixel (max pooling), so an object smaller than a cell is still a target."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.adaptive_max_pool2d(mask.float(), size)


def deep_supervision_loss(layer_logits: list[Tensor], mask: Tensor, target: str = "query"
                          ) -> Tensor:
    """Mean over layers of Dice + BCE on each layer's prediction.

    layer_logits: L tensors (B, Q, h, w) (the predictions that drove layers 0..L-1);
    mask: (B, 1, H, W). `target="query"` supervises every query's own mask (each drives its
    query's sampling); `"mean"` supervises the ensemble mean of the Q masks (Eq. 7's mean).
    """
    if target not in DEEP_SUPERVISION_TARGETS:
        raise ValueError(f"deep supervision target {target!r} is not valid; choose one of "
                         f"{', '.join(DEEP_SUPERVISION_TARGETS)}")
    goal = layer_target(mask, tuple(layer_logits[0].shape[-2:]))
    losses = []
    for logits in layer_logits:
        b, q, h, w = logits.shape
        if target == "mean":
            losses.append(dice_bce_loss(logits.mean(1, keepdim=True), goal))
        else:  # every query its own sample: (B * Q, 1, h, w) against its pair's mask
            per_query = goal.expand(b, q, h, w).reshape(b * q, 1, h, w)
            losses.append(dice_bce_loss(logits.reshape(b * q, 1, h, w), per_query))
    return torch.stack(losses).mean()


def training_loss(logits: Tensor, mask: Tensor, layer_logits: list[Tensor] | None = None, *,
                  weight: float = 1.0, target: str = "query") -> tuple[Tensor, Tensor | None]:
    """(total, deep-supervision term) for final logits (B, 1, H, W) and mask (B, 1, H, W).

    Without `layer_logits` it is the paper's (and the release's) loss, Dice + BCE on the final
    output; with them, `weight` times `deep_supervision_loss` is added.
    """
    final = dice_bce_loss(logits, mask)
    if not layer_logits:
        return final, None
    aux = deep_supervision_loss(layer_logits, mask, target)
    return final + weight * aux, aux
