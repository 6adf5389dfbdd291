"""Reading medical images: PNG/JPG/TIFF, DICOM (HU and display windows) and NIfTI volumes.

Every reader raises `DataError` naming the file and the problem (missing, unreadable,
truncated, too large, ...). Shapes follow numpy: (H, W) for a plane, (H, W, 3) for colour.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping
from math import prod
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

if TYPE_CHECKING:
    from nibabel.nifti1 import Nifti1Image

#: Largest image (width x height) any reader decodes unless told otherwise: 8192 x 8192.
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Largest volume `read_nifti` decodes unless told otherwise (2**30 voxels = 4 GiB as float32).
DEFAULT_MAX_VOXELS = 2**30
#: File name endings read as ordinary images.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Foreground values a binary mask may use (one of them, besides 0).
MASK_FOREGROUND = (255, 1, 65535)
#: CT display windows as (width, level) in Hounsfield units.
WINDOWS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "lung": (1500.0, -600.0),
        "mediastinum": (350.0, 50.0),
        "abdomen": (400.0, 40.0),
        "liver": (150.0, 30.0),
        "bone": (1800.0, 400.0),
        "brain": (80.0, 40.0),
    }
)

Window = str | tuple[float, float] | None


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found")


def _open_image(path: str | Path, max_pixels: int) -> Image.Image:
    """Open an image lazily (header only) and refuse it if it is over `max_pixels`."""
    path = Path(path)
    _require_file(path)
    try:
        with warnings.catch_warnings():
            # Our own limit applies below; Pillow's softer warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: image is over Pillow's size limit ({err})") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from err
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise DataError(
            f"{path}: {width}x{height} = {width * height} pixels is over the limit of "
            f"{max_pixels} pixels (raise max_pixels if this is intended)"
        )
    return image


def _decode(path: str | Path, max_pixels: int) -> Image.Image:
    """Open and fully decode an image, turning truncated or corrupt data into `DataError`."""
    image = _open_image(path, max_pixels)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as err:
        image.close()
        raise DataError(f"{path}: truncated or corrupt image data ({err})") from err
    return image


def image_shape(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(H, W) of an image file, read from its header only (cheap); checks the pixel limit."""
    with _open_image(path, max_pixels) as image:
        width, height = image.size
    return height, width


def _minmax_255(values: np.ndarray) -> np.ndarray:
    """Scale to float32 0–255 by the array's own min and max (a constant array gives 0)."""
    values = values.astype(np.float32)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values)
    return (values - lo) * (255.0 / (hi - lo))


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a PNG/JPG/TIFF/BMP image as (H, W, 3).

    8-bit images (L, RGB, RGBA, P, 1, ...) give uint8; grayscale is replicated to three
    channels and an alpha channel is dropped (not composited). 16-bit and 32-bit images give
    float32 scaled to 0–255 by the image's own min and max. Multi-page files: first page.
    """
    with _decode(path, max_pixels) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            plane = _minmax_255(np.asarray(image))
            return np.repeat(plane[:, :, None], 3, axis=2)
        if image.mode in ("L", "LA", "1"):
            plane = np.asarray(image.convert("L"))
            return np.repeat(plane[:, :, None], 3, axis=2)
        return np.array(image.convert("RGB"))


def read_mask(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a binary mask as (H, W) bool.

    Rule: the mask is read from the colour (or gray) channels, which must be equal; values
    must be 0 and one foreground value, 255 (BiomedParse), 1 or 65535. An alpha channel must
    be fully opaque (it is not the mask). Anything else (anti-aliased edges, JPEG artefacts,
    label maps, colour masks) is refused with `DataError`.
    """
    with _decode(path, max_pixels) as image:
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        bands = image.getbands()
        if "A" in bands and int(np.asarray(image.getchannel("A")).min()) < 255:
            raise DataError(
                f"{path}: mask has a transparent alpha channel; masks are read from the "
                "colour channels and their alpha must be opaque"
            )
        if image.mode == "1":
            values = np.asarray(image.convert("L"))
        elif "R" in bands:
            rgb = np.asarray(image.convert("RGB"))
            values = rgb[:, :, 0]
            if not (np.array_equal(values, rgb[:, :, 1]) and np.array_equal(values, rgb[:, :, 2])):
                raise DataError(f"{path}: mask is coloured (its R, G and B channels differ)")
        elif image.mode in ("L", "LA"):
            values = np.asarray(image.getchannel("L"))
        else:
            values = np.asarray(image)
    if values.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    else:
        present = np.unique(values)
    foreground = [int(v) for v in present if v != 0]
    if len(foreground) > 1 or (foreground and foreground[0] not in MASK_FOREGROUND):
        shown = ", ".join(str(int(v)) for v in present[:8]) + (" ..." if len(present) > 8 else "")
        raise DataError(f"{path}: mask values must be 0 and 255 (or 0 and 1); found {shown}")
    return values > 0


def parse_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """A window as (width, level): a preset name from `WINDOWS`, a "W,L" string or a pair."""
    if isinstance(window, str):
        key = window.strip().lower()
        if key in WINDOWS:
            return WINDOWS[key]
        parts = key.split(",")
        try:
            width, level = (float(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"unknown window {window!r}: use one of {', '.join(WINDOWS)} or 'WIDTH,LEVEL'"
            ) from None
    else:
        width, level = (float(v) for v in window)
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return width, level


def apply_window(values: np.ndarray, window: str | tuple[float, float]) -> np.ndarray:
    """Map values (e.g. HU) through a display window to float32 0–255, same shape."""
    width, level = parse_window(window)
    low = level - width / 2.0
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / width)
    return np.clip(scaled, 0.0, 255.0)


def read_dicom_dataset(path: Path, *, header_only: bool = False):  # -> pydicom.Dataset
    """The pydicom dataset of a DICOM file (without its pixel data with `header_only`)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    _require_file(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise DataError(f"{path}: not a readable DICOM file ({err})") from err


def read_dicom_hu(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """DICOM pixel values after RescaleSlope/RescaleIntercept (HU for CT), float32.

    Shape (H, W), or (frames, H, W) for a multi-frame file. Colour DICOM is refused.
    """
    path = Path(path)
    ds = read_dicom_dataset(path)
    return dicom_values(ds, path, max_pixels)


def dicom_values(ds, path: Path, max_pixels: int) -> np.ndarray:
    """A read dataset's pixel values after its rescale, float32 (see `read_dicom_hu`)."""
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > max_pixels:
        raise DataError(
            f"{path}: {cols}x{rows} = {rows * cols} pixels is over the limit of {max_pixels}"
        )
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(
            f"{path}: colour DICOM ({ds.get('PhotometricInterpretation')}) "
            "is not supported; expected a grayscale slice"
        )
    try:
        stored = ds.pixel_array
    except Exception as err:  # pydicom raises many types for bad or truncated pixel data
        raise DataError(f"{path}: cannot decode DICOM pixel data ({err})") from err
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read_dicom(
    path: str | Path, window: Window = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A DICOM slice for display: float32 0–255, shape (H, W) (or (frames, H, W)).

    `window`: a preset from `WINDOWS` ("lung", "abdomen", "bone", ...), "WIDTH,LEVEL" or a
    (width, level) pair, applied to the HU values (see `read_dicom_hu`); None scales the
    slice by its own min and max. MONOCHROME1 images are inverted so bright means dense.
    """
    path = Path(path)
    ds = read_dicom_dataset(path)
    values = dicom_values(ds, path, max_pixels)
    shown = _minmax_255(values) if window is None else apply_window(values, window)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        shown = 255.0 - shown
    return shown


def read_nifti(
    path: str | Path, *, max_voxels: int = DEFAULT_MAX_VOXELS
) -> tuple[np.ndarray, Nifti1Image]:
    """Read a NIfTI volume: (float32 array in the file's voxel order, the nibabel image).

    Keep the nibabel image to write masks back aligned (`write_nifti_mask`).
    """
    import nibabel as nib

    path = Path(path)
    _require_file(path)
    try:
        image = nib.load(path)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as err:
        raise DataError(f"{path}: not a readable NIfTI file ({err})") from err
    if not isinstance(image, nib.Nifti1Image):  # NIfTI-1 or -2 (a subclass)
        raise DataError(f"{path}: not a NIfTI image (nibabel reads a {type(image).__name__})")
    if prod(image.shape) > max_voxels:
        raise DataError(f"{path}: volume {image.shape} is over the limit of {max_voxels} voxels")
    try:
        volume = np.asarray(image.get_fdata(dtype=np.float32))
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise DataError(f"{path}: truncated or corrupt NIfTI data ({err})") from err
    return volume, image


def nifti_slices(volume: np.ndarray, axis: int = 2) -> np.ndarray:
    """2D slices of a 3D volume along `axis`: (N, A, B), a view (no copy, no reorientation)."""
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    return np.moveaxis(volume, axis, 0)


def stack_slices(slices: np.ndarray, axis: int = 2) -> np.ndarray:
    """Inverse of `nifti_slices`: (N, A, B) slices back into a volume with N along `axis`."""
    return np.moveaxis(np.asarray(slices), 0, axis)


def write_nifti_mask(
    mask_volume: np.ndarray, reference_img: Nifti1Image, path: str | Path
) -> None:
    """Write a mask volume (same shape as the reference) as uint8 NIfTI with its affine/header."""
    _write_like(np.asarray(mask_volume) > 0, np.uint8, "mask", reference_img, path)


def write_nifti_float(
    values: np.ndarray, reference_img: Nifti1Image, path: str | Path
) -> None:
    """Write a float volume (same shape as the reference; probabilities, stds) as float32
    NIfTI with the reference's affine and header, as `write_nifti_mask` does masks."""
    _write_like(np.asarray(values), np.float32, "volume", reference_img, path)


def _write_like(values: np.ndarray, dtype: type, what: str, reference_img: Nifti1Image,
                path: str | Path) -> None:
    """`values` as `dtype` NIfTI with the reference's affine and header (scaling reset)."""
    import nibabel as nib

    if values.shape != tuple(reference_img.shape):
        raise DataError(
            f"{path}: {what} shape {values.shape} differs from the reference image's "
            f"{tuple(reference_img.shape)}"
        )
    header = reference_img.header.copy()
    header.set_data_dtype(dtype)
    out = type(reference_img)(values.astype(dtype), reference_img.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    nib.save(out, str(path))


def is_dicom(path: Path) -> bool:
    """Whether `path` is read as DICOM: a .dcm/.dicom extension, or none and the DICOM magic."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    if path.suffix:
        return False
    with path.open("rb") as handle:  # DICOM files often have no extension: check the magic
        return handle.read(132)[128:] == b"DICM"


def load_any(
    path: str | Path,
    *,
    window: Window = None,
    axis: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read an image, DICOM slice or NIfTI volume as 2D RGB slices: (N, H, W, 3) float32 0–255.

    Dispatches on the extension: .dcm/.dicom (or DICOM magic), .nii/.nii.gz, else an image.
    `window` applies to DICOM and NIfTI (in HU); without it DICOM is scaled by min/max and
    NIfTI by the volume's 0.5–99.5 percentiles. NIfTI slices are taken along `axis` in voxel
    order; to write a mask back aligned use `read_nifti`, `stack_slices`, `write_nifti_mask`.
    """
    path = Path(path)
    _require_file(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        volume, _ = read_nifti(path)
        if window is None:
            low, high = np.percentile(volume, [0.5, 99.5])
            width = max(float(high - low), 1e-6)
            shown = apply_window(volume, (width, float(low) + width / 2))
        else:
            shown = apply_window(volume, window)
        planes = nifti_slices(shown, axis)
    elif is_dicom(path):
        planes = read_dicom(path, window, max_pixels=max_pixels)
        if planes.ndim == 2:
            planes = planes[None]
    elif name.endswith(IMAGE_EXTENSIONS):
        return read_image(path, max_pixels=max_pixels).astype(np.float32)[None]
    else:
        raise DataError(
            f"{path}: unknown file type; expected .dcm, .nii, .nii.gz or one of "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    return np.repeat(np.ascontiguousarray(planes)[..., None], 3, axis=-1)
