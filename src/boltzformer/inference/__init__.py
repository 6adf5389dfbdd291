"""Inference: `Predictor` (encode an image once, answer many prompts), `predict_files` (the
`predict` verb as a function: files, folders, DICOM series and volumes to masks, NIfTI and
DICOM SEG) and `viz` (the figures)."""

from boltzformer.inference.predict_files import PredictOptions, predict_files
from boltzformer.inference.predictor import Prediction, Predictor, SamplingTrace

__all__ = ["PredictOptions", "Prediction", "Predictor", "SamplingTrace", "predict_files"]
