"""A DICOM series folder read as one volume: its slices sorted by position, windowed for
display, with a NIfTI affine for the volume outputs and the source datasets a DICOM SEG
references.

The rule (`series_files`): a folder is one series volume when its files read as planes (`.dcm`,
`.dicom` or no extension; no PNG/JPG/TIFF/BMP among them) are at least two DICOM files, all of
one SeriesInstanceUID and all with ImagePositionPatient and ImageOrientationPatient. Other
files (an XML of annotations, a README) are not read. Any other folder is a folder of images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError
from .inputs import Volume, folder_files, to_uint8
from .medio import (
    DEFAULT_MAX_VOXELS,
    IMAGE_EXTENSIONS,
    apply_window,
    dicom_values,
    is_dicom,
    parse_window,
    read_dicom_dataset,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

#: Directions (ImageOrientationPatient) that differ by less than this are the same.
ORIENTATION_TOLERANCE = 1e-4


@dataclass
class DicomSeries:
    """A series volume: `volume.display` (rows, columns, slices) uint8, so that slicing it along
    axis 2 gives the slices as the DICOM shows them, and `volume.reference` a NIfTI header with
    the series' affine (RAS); `datasets` the slices' headers (no pixel data) in the same order,
    feet to head along the slice normal; `paths` their files."""

    volume: Volume
    datasets: list[Dataset]
    paths: list[Path]


def _header(path: Path) -> Dataset | None:
    """`path`'s DICOM header, or None if it is not readable DICOM."""
    try:
        return read_dicom_dataset(path, header_only=True)
    except DataError:
        return None


def series_files(folder: Path) -> list[Path] | None:
    """The files of `folder` that make it one DICOM series volume (the module's rule), or None
    when it is a folder of images."""
    planes = folder_files(folder).planes
    if len(planes) < 2 or any(p.name.lower().endswith(IMAGE_EXTENSIONS) for p in planes):
        return None
    uids = set()
    for path in planes:
        ds = _header(path) if is_dicom(path) else None
        if ds is None or "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            return None
        uids.add(str(ds.get("SeriesInstanceUID", "")))
        if len(uids) > 1:  # two series: images, read no further headers
            return None
    return planes


def _orientation(ds: Any, path: Path) -> np.ndarray:
    """(2, 3): the directions of a row and of a column in the patient frame (LPS)."""
    try:
        values = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        position = [float(v) for v in ds.ImagePositionPatient]
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: unreadable ImageOrientationPatient or "
                        f"ImagePositionPatient ({err})") from None
    if values.shape != (6,) or len(position) != 3:
        raise DataError(f"{path}: ImageOrientationPatient needs 6 values and "
                        "ImagePositionPatient 3")
    return values.reshape(2, 3)


def sort_by_position(datasets: Sequence[Any], paths: Sequence[Path]) -> list[int]:
    """The order of a series' slices along the slice normal (row x column direction), feet to
    head for axial CT: ImagePositionPatient projected on the normal, not file names or
    InstanceNumbers. One-line `DataError`s for slices of another orientation or size, for a
    multi-frame file, and for two slices at one position."""
    first = _orientation(datasets[0], paths[0])
    normal = np.cross(first[0], first[1])
    size = (int(datasets[0].get("Rows", 0)), int(datasets[0].get("Columns", 0)))
    depth = []
    for ds, path in zip(datasets, paths):
        if np.abs(_orientation(ds, path) - first).max() > ORIENTATION_TOLERANCE:
            raise DataError(f"{path}: its ImageOrientationPatient differs from {paths[0].name}'s; "
                            "a series volume has one orientation (give its files one by one)")
        if (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) != size:
            raise DataError(f"{path}: {ds.get('Rows')}x{ds.get('Columns')} pixels, but "
                            f"{paths[0].name} has {size[0]}x{size[1]}; a series volume has one "
                            "slice size")
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise DataError(f"{path}: a multi-frame file in a series folder; give it on its own")
        depth.append(float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)))
    order = sorted(range(len(depth)), key=depth.__getitem__)
    for a, b in zip(order, order[1:]):
        if depth[b] - depth[a] < 1e-3:
            raise DataError(f"{paths[a]} and {paths[b].name}: two slices at one position "
                            f"({depth[a]:.3f} mm along the normal); is this two series?")
    return order


def series_affine(datasets: Sequence[Any]) -> np.ndarray:
    """(4, 4) NIfTI (RAS) affine of the volume (rows, columns, slices) of sorted `datasets`:
    voxel axis 0 runs down the rows (the column direction, PixelSpacing[0] apart), axis 1 along
    a row (PixelSpacing[1]), axis 2 from the first slice to the last (their mean step)."""
    directions = np.asarray([float(v) for v in datasets[0].ImageOrientationPatient]).reshape(2, 3)
    row_spacing, col_spacing = (float(v) for v in datasets[0].get("PixelSpacing", (1.0, 1.0)))
    first = np.asarray([float(v) for v in datasets[0].ImagePositionPatient])
    last = np.asarray([float(v) for v in datasets[-1].ImagePositionPatient])
    step = (last - first) / max(len(datasets) - 1, 1)
    lps = np.eye(4)
    lps[:3, 0] = directions[1] * row_spacing
    lps[:3, 1] = directions[0] * col_spacing
    lps[:3, 2] = step
    lps[:3, 3] = first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS (DICOM) -> RAS (NIfTI)


def read_dicom_series(
    paths: Sequence[Path], window: str | None, *, max_voxels: int = DEFAULT_MAX_VOXELS
) -> DicomSeries:
    """The files of one series (`series_files`) as a volume sorted by position. `window` (a
    `medio` preset or "W,L") maps HU to display values, else the volume's 0.5-99.5 percentiles
    do, as for a NIfTI volume; MONOCHROME1 is inverted. Volumes over `max_voxels` are refused
    before their pixels are read."""
    import nibabel as nib

    if window is not None:
        parse_window(window)
    headers = [read_dicom_dataset(p, header_only=True) for p in paths]
    order = sort_by_position(headers, paths)
    headers, paths = [headers[i] for i in order], [paths[i] for i in order]
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    if rows * cols * len(paths) > max_voxels:
        raise DataError(f"{paths[0].parent}: {len(paths)} slices of {rows}x{cols} is over the "
                        f"limit of {max_voxels} voxels")
    values = np.empty((rows, cols, len(paths)), np.float32)
    for k, path in enumerate(paths):  # one slice's pixels in memory at a time
        values[:, :, k] = dicom_values(read_dicom_dataset(path), path, rows * cols)
    if window is None:
        low, high = np.percentile(values, [0.5, 99.5])
        width = max(float(high - low), 1e-6)
        window = f"{width},{float(low) + width / 2}"
    display = to_uint8(apply_window(values, window))
    if str(headers[0].get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        display = 255 - display
    reference = nib.Nifti1Image(display, series_affine(headers))
    reference.set_qform(reference.affine, code=1)  # scanner coordinates
    reference.set_sform(reference.affine, code=1)
    reference.header.set_xyzt_units("mm")
    return DicomSeries(Volume(display, reference), headers, list(paths))
