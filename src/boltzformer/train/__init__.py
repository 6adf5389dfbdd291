"""Training: `TrainConfig` (YAML sections model/data/optim/train) and `train(cfg, run_dir)`."""

from boltzformer.train.config import DataConfig, LoopConfig, ModelSpec, OptimConfig, TrainConfig
from boltzformer.train.trainer import NonFiniteLossError, TrainResult, train

__all__ = [
    "DataConfig",
    "LoopConfig",
    "ModelSpec",
    "NonFiniteLossError",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "train",
]
