"""What `predict` and `visualize` share: model and input options, reading inputs for display.

Every reader turns its input into uint8 display intensities (0-255) the way
`boltzformer.data.medio` defines them, so the Predictor's intensity rule has nothing to guess.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from boltzformer.data.medio import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_VOXELS,
    IMAGE_EXTENSIONS,
    WINDOWS,
    apply_window,
    load_any,
    parse_window,
    read_mask,
    read_nifti,
)
from boltzformer.predictor import Predictor

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, type=Path, metavar="DIR",
        help="checkpoint folder holding config.json and model.safetensors",
    )
    parser.add_argument(
        "--device", default="cpu",
        help="where to run: cpu (default), cuda or cuda:N",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S",
        help="seed of the Boltzmann sampling draws; same seed, same masks (default 0)",
    )


def add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", required=True, type=Path, metavar="FILE",
        help="PNG/JPG/TIFF/BMP image, DICOM slice (.dcm) or NIfTI volume (.nii, .nii.gz)",
    )
    parser.add_argument(
        "--window", metavar="NAME|W,L",
        help=f"CT display window for DICOM and NIfTI, in HU after rescale: "
        f"{', '.join(WINDOWS)} or WIDTH,LEVEL (e.g. 1500,-600). Default: DICOM is scaled by "
        "its min and max, NIfTI by its 0.5-99.5 percentiles",
    )
    parser.add_argument(
        "--axis", type=int, default=2, metavar="A",
        help="NIfTI only: the voxel axis (0, 1 or 2) to slice along (default 2)",
    )


def is_volume(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def load_predictor(args: argparse.Namespace) -> Predictor:
    """The Predictor for --checkpoint on --device, seeded with --seed."""
    if not args.checkpoint.is_dir():
        raise FileNotFoundError(
            f"--checkpoint {args.checkpoint}: no such folder; give the folder written by "
            "model.save_pretrained(DIR) or boltzformer train"
        )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    return Predictor.from_pretrained(args.checkpoint, device=args.device, seed=args.seed)


def check_prompt(text: str, what: str = "--prompt") -> str:
    if not text.strip():
        raise ValueError(f"{what} is empty: describe the object to find, e.g. 'nodule in lung CT'")
    return text.strip()


def check_window(window: str | None) -> None:
    """Refuse an unknown --window before any file is read."""
    if window is not None:
        try:
            parse_window(window)
        except ValueError as err:
            raise ValueError(f"--window {window}: {err}") from None


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Display intensities (floats in 0-255) -> uint8, rounded."""
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def read_plane(
    path: Path, window: str | None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A 2-D input (image or single-frame DICOM) -> (H, W, 3) uint8 for display and the model.
    Inputs over `max_pixels` are refused before they are decoded."""
    check_window(window)
    if window is not None and path.name.lower().endswith(IMAGE_EXTENSIONS):
        raise ValueError(f"--window applies to DICOM and NIfTI inputs, not to {path.name}; drop it")
    planes = load_any(path, window=window, max_pixels=max_pixels)
    if planes.shape[0] != 1:
        raise ValueError(
            f"{path}: a multi-frame DICOM ({planes.shape[0]} frames); convert it to NIfTI to "
            "segment it slice by slice, or give one frame"
        )
    return to_uint8(planes[0])


@dataclass
class Volume:
    """A NIfTI input: display intensities (X, Y, Z) uint8 and the nibabel image to write back."""

    display: np.ndarray
    reference: object  # nibabel SpatialImage: affine and header for the outputs


def read_volume(
    path: Path, window: str | None, axis: int, *, max_voxels: int = DEFAULT_MAX_VOXELS
) -> Volume:
    """A NIfTI volume windowed as `medio.load_any` does: --window in HU, else the volume's
    0.5-99.5 percentiles mapped to 0-255. Checks that `axis` exists; volumes over
    `max_voxels` are refused before their data is read."""
    check_window(window)
    volume, reference = read_nifti(path, max_voxels=max_voxels)
    if volume.ndim == 4 and volume.shape[3] == 1:  # (X, Y, Z, 1): one time point
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {volume.shape}")
    if not -3 <= axis <= 2:
        raise ValueError(
            f"--axis {axis} does not exist: the volume {path.name} of shape {volume.shape} has "
            "axes 0, 1 and 2"
        )
    if window is None:
        low, high = np.percentile(volume, [0.5, 99.5])
        width = max(float(high - low), 1e-6)
        window = f"{width},{float(low) + width / 2}"
    return Volume(display=to_uint8(apply_window(volume, window)), reference=reference)


def read_gt(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask PNG -> (H, W) bool, which must match the input's size."""
    gt = read_mask(path)
    if gt.shape != size:
        raise ValueError(
            f"--mask {path}: mask is {gt.shape[0]}x{gt.shape[1]} but the input is "
            f"{size[0]}x{size[1]}; give the mask drawn on this image"
        )
    return gt
