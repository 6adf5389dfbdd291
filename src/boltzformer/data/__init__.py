"""Data: the BiomedParse-format reader, synthetic phantoms, augmentation and medical image I/O."""

from .augment import random_augment
from .biomedparse import BiomedParseDataset, Sample, Skipped, collate, default_prompt, list_splits
from .errors import DataError
from .medio import (
    WINDOWS,
    apply_window,
    load_any,
    nifti_slices,
    read_dicom,
    read_dicom_hu,
    read_image,
    read_mask,
    read_nifti,
    stack_slices,
    write_nifti_mask,
)
from .phantoms import Phantom, generate_phantoms, make_phantom

__all__ = [
    "WINDOWS",
    "BiomedParseDataset",
    "DataError",
    "Phantom",
    "Sample",
    "Skipped",
    "apply_window",
    "collate",
    "default_prompt",
    "generate_phantoms",
    "list_splits",
    "load_any",
    "make_phantom",
    "nifti_slices",
    "random_augment",
    "read_dicom",
    "read_dicom_hu",
    "read_image",
    "read_mask",
    "read_nifti",
    "stack_slices",
    "write_nifti_mask",
]
