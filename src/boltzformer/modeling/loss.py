"""The training loss: Dice + binary cross-entropy (paper Sec. 3.3), plus deep supervision.

Two Dice forms (`dice=`, the `loss.dice` setting), per sample and averaged over the batch:

- "mask2former": 1 - (2 sum pt + 1) / (sum p + sum t + 1), Mask2Former's Dice loss (linear
  denominator, smoothing 1); this package's original form.
- "vnet": 1 - (2 sum pt + 1e-5) / (sum p^2 + sum t^2 + 1e-5), the V-Net Dice the paper cites
  [18] (Milletari et al. 2016), as the authors' release computes it (MONAI's DiceLoss with
  sigmoid=True, squared_pred=True).

A prediction at another resolution than the mask is resized to the mask bicubically with
antialiasing first, as the release does. The paper and the release supervise only the final
PiGMA output (`deep_supervision: false`, with "vnet": the release's loss). Deep supervision
(Mask2Former's auxiliary losses) adds Dice + BCE on each decoder layer's prediction, the
masks that drive the next layer's Boltzmann sampling; see docs/training.md for why and for
what it measured, and docs/fidelity.md for the choice of the default Dice form.

With the existence head (not the paper's; `existence_loss`), BCE of its per-prompt logit
against whether the mask has a pixel is added, times `loss.existence_weight`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEEP_SUPERVISION_TARGETS: tuple[str, ...] = ("query", "mean")
DICE_FORMS: tuple[str, ...] = ("mask2former", "vnet")
DEFAULT_DICE = "mask2former"  # chosen by the demo measurement in docs/fidelity.md


def check_dice(form: str) -> str:
    """Return `form` if it names a Dice form, else raise."""
    if form not in DICE_FORMS:
        raise ValueError(f"Dice form {form!r} is not valid; choose one of {', '.join(DICE_FORMS)}")
    return form


def has_target(mask: Tensor) -> Tensor:
    """(B,) bool: whether each mask (B, ...) has a pixel, i.e. its target is present."""
    return mask.flatten(1).amax(1) > 0.5


def dice_loss(logits: Tensor, target: Tensor, form: str = DEFAULT_DICE, *,
              present_only: bool = False) -> Tensor:
    """Dice loss per sample, averaged: logits, target (B, 1, H, W) -> scalar (see module doc
    for the forms). `present_only`: averaged over the samples whose target has a pixel (0 if
    none), so an empty target is left to BCE."""
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    if present_only:
        keep = has_target(t)
        if not bool(keep.any()):
            return logits.sum() * 0.0
        p, t = p[keep], t[keep]
    if check_dice(form) == "vnet":
        dice = (2 * (p * t).sum(1) + 1e-5) / ((p * p).sum(1) + (t * t).sum(1) + 1e-5)
    else:
        dice = (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return (1 - dice).mean()


def resize_to_mask(logits: Tensor, size: Sequence[int]) -> Tensor:
    """logits (B, C, h, w) at the mask's (H, W): bicubic with antialiasing, as the release."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bicubic", align_corners=False,
                         antialias=True)


def dice_bce_loss(logits: Tensor, target: Tensor, dice: str = DEFAULT_DICE, *,
                  absent_dice: bool = True) -> Tensor:
    """Dice + pixel-wise BCE (mean), equal weights. logits (B, 1, h, w), resized to the
    target's (B, 1, H, W) when they differ; target in {0, 1}. `absent_dice=False`: Dice over
    the pairs whose target is present only (an empty target gets BCE alone)."""
    logits = resize_to_mask(logits, target.shape[-2:])
    target = target.to(logits.dtype)
    return (dice_loss(logits, target, dice, present_only=not absent_dice)
            + F.binary_cross_entropy_with_logits(logits, target))


def existence_loss(existence_logits: Tensor, mask: Tensor) -> Tensor:
    """BCE of existence logits (B,) against "the mask (B, 1, H, W) has a pixel" (mean).
    """
    present = has_target(mask).to(existence_logits.dtype)
    return F.binary_cross_entropy_with_logits(existence_logits, present)


def layer_target(mask: Tensor, size: Sequence[int]) -> Tensor:
    """The mask (B, 1, H, W) at a layer prediction's (h, w): 1 in every cell that holds any
    object pixel (max pooling), so an object smaller than a cell is still a target."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.adaptive_max_pool2d(mask.float(), tuple(size))


def deep_supervision_loss(layer_logits: list[Tensor], mask: Tensor, target: str = "query",
                          dice: str = DEFAULT_DICE, *, absent_dice: bool = True) -> Tensor:
    """Mean over layers of Dice + BCE on each layer's prediction.

    layer_logits: L tensors (B, Q, h, w) (the predictions that drove layers 0..L-1);
    mask: (B, 1, H, W). `target="query"` supervises every query's own mask (each drives its
    query's sampling); `"mean"` supervises the ensemble mean of the Q masks (Eq. 7's mean).
    `absent_dice` as in `dice_bce_loss`.
    """
    if target not in DEEP_SUPERVISION_TARGETS:
        raise ValueError(f"deep supervision target {target!r} is not valid; choose one of "
                         f"{', '.join(DEEP_SUPERVISION_TARGETS)}")
    goal = layer_target(mask, tuple(layer_logits[0].shape[-2:]))
    losses = []
    for logits in layer_logits:
        b, q, h, w = logits.shape
        if target == "mean":
            losses.append(dice_bce_loss(logits.mean(1, keepdim=True), goal, dice,
                                        absent_dice=absent_dice))
        else:  # every query its own sample: (B * Q, 1, h, w) against its pair's mask
            per_query = goal.expand(b, q, h, w).reshape(b * q, 1, h, w)
            losses.append(dice_bce_loss(logits.reshape(b * q, 1, h, w), per_query, dice,
                                        absent_dice=absent_dice))
    return torch.stack(losses).mean()


def training_loss(logits: Tensor, mask: Tensor, layer_logits: list[Tensor] | None = None, *,
                  weight: float = 1.0, target: str = "query", dice: str = DEFAULT_DICE,
                  absent_dice: bool = True) -> tuple[Tensor, Tensor | None]:
    """(total, deep-supervision term) for final logits (B, 1, h, w) and mask (B, 1, H, W).

    Without `layer_logits` it is the paper's loss, Dice + BCE on the final output (the
    release's with dice="vnet"); with them, `weight` times `deep_supervision_loss` is added.
    `absent_dice=False` leaves pairs with an empty mask to BCE alone (no Dice term).
    """
    final = dice_bce_loss(logits, mask, dice, absent_dice=absent_dice)
    if not layer_logits:
        return final, None
    aux = deep_supervision_loss(layer_logits, mask, target, dice, absent_dice=absent_dice)
    return final + weight * aux, aux
