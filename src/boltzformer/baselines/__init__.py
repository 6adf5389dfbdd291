"""Baselines BoltzFormer is compared with. Needs the extra: pip install 'boltzformer[baselines]'.

`UNetExpert`: the paper's per-class "expert" (its nnU-Net comparison), a U-Net with one output
channel per target; `boltzformer.evaluate.evaluate` scores it like BoltzFormer.
"""

from boltzformer.baselines.unet import UNetBaselineConfig, UNetExpert, UNetOutput

__all__ = ["UNetBaselineConfig", "UNetExpert", "UNetOutput"]
