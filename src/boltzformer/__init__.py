"""BoltzFormer: Boltzmann attention sampling for text-prompted small-object segmentation."""

from boltzformer.inference.predict_files import PredictOptions, predict_files
from boltzformer.inference.predictor import Prediction, Predictor, SamplingTrace
from boltzformer.modeling.boltzformer import BoltzFormer, BoltzFormerOutput, build_model
from boltzformer.modeling.checkpoint import CheckpointError
from boltzformer.modeling.config import PRESETS, BoltzFormerConfig, get_preset
from boltzformer.modeling.loss import dice_bce_loss

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "BoltzFormer",
    "BoltzFormerConfig",
    "BoltzFormerOutput",
    "CheckpointError",
    "PredictOptions",
    "Prediction",
    "Predictor",
    "SamplingTrace",
    "build_model",
    "dice_bce_loss",
    "get_preset",
    "predict_files",
]
