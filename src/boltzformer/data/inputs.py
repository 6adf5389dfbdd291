"""A user's input file -> uint8 display intensities for the model and the figures, and the
names of the files written for its prompts.

What `boltzformer predict`, `visualize` and the web app read: PNG/JPG/TIFF/BMP images and
DICOM slices as (H, W, 3) uint8 planes, NIfTI volumes as (X, Y, Z) uint8 with the nibabel
image kept to write results back, and a folder's images (`folder_files`, `read_planes`).
Intensities follow `medio`'s windows, so the Predictor's intensity rule has nothing to guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import DataError
from .medio import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_VOXELS,
    IMAGE_EXTENSIONS,
    apply_window,
    load_any,
    parse_window,
    read_mask,
    read_nifti,
)

if TYPE_CHECKING:
    from nibabel.nifti1 import Nifti1Image

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# What a folder's files are read as planes by: their extension, or none (DICOM often has none).
PLANE_SUFFIXES = (*IMAGE_EXTENSIONS, ".dcm", ".dicom")


def is_volume(path: Path) -> bool:
    """Whether `path` names a NIfTI volume (read with `read_volume`, else `read_plane`)."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Display intensities (floats in 0-255, any shape) -> uint8, rounded."""
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def read_plane(
    path: Path, window: str | None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A 2-D input (image or single-frame DICOM) -> (H, W, 3) uint8. `window` (a `medio`
    preset or "W,L" in HU) applies to DICOM only; inputs over `max_pixels` are refused
    before they are decoded."""
    if window is not None:
        parse_window(window)  # an unknown window is refused before the file is read
        if path.name.lower().endswith(IMAGE_EXTENSIONS):
            raise ValueError(
                f"a window applies to DICOM and NIfTI inputs, not to {path.name}; drop it")
    planes = load_any(path, window=window, max_pixels=max_pixels)
    if planes.shape[0] != 1:
        raise ValueError(
            f"{path}: a multi-frame DICOM ({planes.shape[0]} frames); convert it to NIfTI to "
            "segment it slice by slice, or give one frame"
        )
    return to_uint8(planes[0])


@dataclass
class Volume:
    """A NIfTI input: display intensities (X, Y, Z) uint8 and the nibabel image whose affine
    and header the outputs keep."""

    display: np.ndarray
    reference: Nifti1Image


def read_volume(
    path: Path, window: str | None, axis: int, *, max_voxels: int = DEFAULT_MAX_VOXELS
) -> Volume:
    """A NIfTI volume windowed as `medio.load_any` does: `window` in HU, else the volume's
    0.5-99.5 percentiles mapped to 0-255. Checks that `axis` (the one to slice along) exists;
    volumes over `max_voxels` are refused before their data is read."""
    if window is not None:
        parse_window(window)
    volume, reference = read_nifti(path, max_voxels=max_voxels)
    if volume.ndim == 4 and volume.shape[3] == 1:  # (X, Y, Z, 1): one time point
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {volume.shape}")
    if not -3 <= axis <= 2:
        raise ValueError(
            f"axis {axis} does not exist: the volume {path.name} of shape {volume.shape} has "
            "axes 0, 1 and 2"
        )
    if window is None:
        low, high = np.percentile(volume, [0.5, 99.5])
        width = max(float(high - low), 1e-6)
        window = f"{width},{float(low) + width / 2}"
    return Volume(display=to_uint8(apply_window(volume, window)), reference=reference)


@dataclass
class FolderFiles:
    """The files directly in a folder, sorted by name: `planes`, read as 2-D inputs (image or
    DICOM extensions, or no extension), and `others` (NIfTI volumes among them), not read."""

    planes: list[Path]
    others: list[Path]


def folder_files(folder: Path) -> FolderFiles:
    """The files of `folder` (not of its subfolders; hidden files left out). A folder without
    a file to read as a plane is a `DataError` naming what it holds instead."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    planes = [p for p in files if p.suffix == "" or p.name.lower().endswith(PLANE_SUFFIXES)]
    others = [p for p in files if p not in planes]
    if not planes:
        held = f"; it holds {len(others)} other file(s), e.g. {others[0].name}" if others else ""
        raise DataError(f"{folder}: no images in this folder (PNG/JPG/TIFF/BMP or DICOM){held}")
    return FolderFiles(planes, others)


def window_for(path: Path, window: str | None) -> str | None:
    """The window a folder's file is read with: `window` for DICOM, None for an image."""
    return None if path.name.lower().endswith(IMAGE_EXTENSIONS) else window


def read_planes(
    paths: Iterable[Path], window: str | None, skip: Callable[[Path, str], None],
    *, max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[tuple[Path, np.ndarray]]:
    """(path, (H, W, 3) uint8) for each readable file of `paths`, in order, read one at a time
    by `read_plane`; `window` applies to the DICOM files only (images are read as they are).
    A file that cannot be read is passed to `skip` with the one-line reason and left out."""
    for path in paths:
        try:
            plane = read_plane(path, window_for(path, window), max_pixels=max_pixels)
        except ValueError as err:
            skip(path, str(err).splitlines()[0])
            continue
        yield path, plane


def read_gt(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask PNG -> (H, W) bool, which must match the input's `size` (H, W)."""
    gt = read_mask(path)
    if gt.shape != size:
        raise ValueError(
            f"{path}: the mask is {gt.shape[0]}x{gt.shape[1]} but the input is "
            f"{size[0]}x{size[1]}; give the mask drawn on this image"
        )
    return gt


def file_names(prompts: list[str]) -> list[str]:
    """A distinct, file-safe NAME per prompt for its output files: 'Nodule in lung CT' ->
    'nodule-in-lung-ct' (a repeat gets '-2', '-3', ...)."""
    names: list[str] = []
    for prompt in prompts:
        base = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "prompt"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names
