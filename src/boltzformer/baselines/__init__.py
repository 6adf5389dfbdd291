"""Baselines BoltzFormer is compared with. Needs the extra: pip install 'boltzformer[baselines]'.

`UNetExpert`: the paper's per-class "expert" (its nnU-Net comparison), a U-Net with one output
channel per target; `train_unet` trains it on the same split as the BoltzFormer trainer, and
`boltzformer.evaluation.evaluate.evaluate` scores it like BoltzFormer.
"""

from boltzformer.baselines.unet import UNetBaselineConfig, UNetExpert, UNetOutput
from boltzformer.baselines.unet_training import (
    ImageTargets,
    UNetTrainResult,
    lr_factor_at,
    masked_dice_bce,
    multilabel_dice_bce,
    train_unet,
)

__all__ = [
    "ImageTargets",
    "UNetBaselineConfig",
    "UNetExpert",
    "UNetOutput",
    "UNetTrainResult",
    "lr_factor_at",
    "masked_dice_bce",
    "multilabel_dice_bce",
    "train_unet",
]
