"""What the Predictor takes as an image: any numeric array, tensor or PIL image -> RGB 0-255.

Intensity rule (`to_255`): uint8 values are used as they are; bool becomes {0, 255}; floats
that all lie in [0, 1] are multiplied by 255; any other values that all lie in [0, 255] are
used as they are; everything else (16-bit PNGs, CT in Hounsfield units, ...) is min-max
scaled to [0, 255] over the whole array (a constant array becomes 0). For CT, window it
first (`boltzformer.data.medio.read_dicom(path, window="lung")`) rather than rely on min-max.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch import Tensor

ImageLike = np.ndarray | Image.Image | Tensor

# PIL modes that hold more than 8 bits per pixel: read as numbers, then scaled by `to_255`.
_WIDE_PIL_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def to_255(values: np.ndarray) -> np.ndarray:
    """Any numeric array -> float32 array of the same shape in [0, 255] (module docstring rule)."""
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values.astype(np.float32)
    if values.dtype == np.bool_:
        return values.astype(np.float32) * 255.0
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ValueError(f"image values must be numbers, got dtype {values.dtype}")
    if values.size == 0:
        raise ValueError(f"image is empty (shape {values.shape})")
    is_float = np.issubdtype(values.dtype, np.floating)
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("image contains NaN or infinite values; replace them before predicting")
    lo, hi = float(values.min()), float(values.max())
    if is_float and lo >= 0.0 and hi <= 1.0:
        return (values * 255.0).astype(np.float32)
    if lo >= 0.0 and hi <= 255.0:
        return values.astype(np.float32)
    if hi == lo:
        return np.zeros(values.shape, np.float32)
    return ((values - lo) * (255.0 / (hi - lo))).astype(np.float32)


def to_rgb255(image: ImageLike) -> np.ndarray:
    """An image in any accepted form -> (H, W, 3) float32 RGB in [0, 255].

    Accepts numpy arrays (H, W) or (H, W, C) channels-last, torch tensors (H, W) or (C, H, W)
    channels-first, and PIL images; C is 1 (grey), 3 (RGB) or 4 (RGBA, alpha dropped).
    Intensities follow `to_255`.
    """
    if isinstance(image, Image.Image):
        if image.mode not in _WIDE_PIL_MODES:
            image = image.convert("RGB")
        array = np.asarray(image)
    elif isinstance(image, Tensor):
        array = image.detach().cpu().numpy()
        if array.ndim == 3:
            array = np.moveaxis(array, 0, -1)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(
            f"image must be a numpy array, a PIL image or a torch tensor, got "
            f"{type(image).__name__}"
        )
    if not is_plane(array):
        layout = "(H, W) or (C, H, W)" if isinstance(image, Tensor) else "(H, W) or (H, W, C)"
        raise ValueError(
            f"image of shape {tuple(getattr(image, 'shape', array.shape))} is not an image: "
            f"give {layout} with C = 1, 3 or 4"
        )
    return plane_rgb(to_255(array))


def is_plane(array: np.ndarray) -> bool:
    """(H, W) or (H, W, C) with C in 1, 3, 4, and H, W >= 1."""
    ok = array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))
    return ok and min(array.shape[:2]) >= 1


def plane_rgb(plane: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) float, C in 1, 3, 4 -> (H, W, 3): grey repeated, alpha dropped."""
    if plane.ndim == 2:
        plane = plane[..., None]
    if plane.shape[-1] == 1:
        plane = np.repeat(plane, 3, axis=-1)
    return np.ascontiguousarray(plane[..., :3], dtype=np.float32)
