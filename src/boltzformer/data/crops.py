"""Crops at native resolution (nnU-Net's way of training on large images): one image and its
K masks resampled by a scale, then one square crop cut from all of them, placed on an object
of one of the targets for a share of the crops and at random for the rest.

Masks come as (K, H, W) or (K, 1, H, W); every function returns the shapes it was given. All
randomness comes from a passed `torch.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def resample(image: Tensor, masks: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """image (3, H, W) and masks (K, H, W) or (K, 1, H, W) resized to `size` (h, w): the image
    antialiased bilinear (clamped to 0-255), each mask resampled alike and thresholded at 0.5;
    a non-empty mask that would vanish keeps its most covered pixel, so small objects survive.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image, masks
    image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True,
                          align_corners=False)[0].clamp_(0.0, 255.0)
    return image, resample_masks(masks, size)


def resample_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """masks (K[, 1], H, W) resized to `size` as `resample` does."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    flat = masks.reshape(-1, *masks.shape[-2:])  # (K, H, W)
    soft = F.interpolate(flat[None], size=size, mode="bilinear", antialias=True,
                         align_corners=False)[0]
    binary = (soft >= 0.5).to(masks.dtype)
    for k in range(flat.shape[0]):
        if flat[k].any() and not binary[k].any():
            binary[k].view(-1)[int(soft[k].argmax())] = 1
    return binary.reshape(*masks.shape[:-2], *size)


def _scaled(hw: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(round(H * scale), round(W * scale)), at least one pixel a side."""
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def rescale(image: Tensor, masks: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """image (3, H, W) and masks (K[, 1], H, W) resampled by `scale` (as `resample`) to
    (round(H * scale), round(W * scale)), at least one pixel a side; scale 1 changes nothing."""
    if scale == 1.0:
        return image, masks
    return resample(image, masks, _scaled(tuple(image.shape[-2:]), scale))


def _placement(length: int, crop: int) -> tuple[int, int]:
    """The lowest and highest origin of a crop along a side: inside the image when it is
    longer than the crop, else any origin that keeps the whole image inside the crop."""
    return min(0, length - crop), max(0, length - crop)


def crop_origin(masks: Tensor, crop: int, object_share: float,
                generator: torch.Generator) -> tuple[int, int]:
    """(top, left) of a `crop` x `crop` window over masks (K[, 1], H, W) (negative or past the
    image where the image is smaller than the crop: the crop is then padded).

    With probability `object_share` the crop holds a foreground pixel of a random one of the
    non-empty masks, placed at a random position in the crop's middle three quarters (so the
    object is not always in the centre); otherwise, and when every mask is empty, the origin
    is uniform over the placements. Every call draws the same number of random numbers."""
    height, width = masks.shape[-2:]
    (top_lo, top_hi), (left_lo, left_hi) = _placement(height, crop), _placement(width, crop)
    on_object = float(torch.rand((), generator=generator)) < object_share
    uniform = (int(torch.randint(top_lo, top_hi + 1, (), generator=generator)),
               int(torch.randint(left_lo, left_hi + 1, (), generator=generator)))
    jitter = torch.randint(crop // 8, crop - crop // 8, (2,), generator=generator).tolist()
    pick = float(torch.rand((), generator=generator))
    point = float(torch.rand((), generator=generator))
    present = [k for k in range(masks.shape[0]) if masks[k].any()]
    if not on_object or not present:
        return uniform
    pixels = masks[present[int(pick * len(present))]].reshape(height, width).nonzero()
    y, x = pixels[int(point * len(pixels))].tolist()
    top = min(max(y - jitter[0], top_lo), top_hi)
    left = min(max(x - jitter[1], left_lo), left_hi)
    return top, left


def take_crop(image: Tensor, masks: Tensor, top: int, left: int, size: int
              ) -> tuple[Tensor, Tensor]:
    """The `size` x `size` window at (top, left) of image (3, H, W) and masks (K[, 1], H, W),
    zero where it runs past the image: (3, size, size) and (K[, 1], size, size)."""
    height, width = image.shape[-2:]
    rows = slice(max(top, 0), max(min(top + size, height), top, 0))
    cols = slice(max(left, 0), max(min(left + size, width), left, 0))
    into_rows = slice(rows.start - top, rows.stop - top)
    into_cols = slice(cols.start - left, cols.stop - left)
    out_image = image.new_zeros(*image.shape[:-2], size, size)
    out_masks = masks.new_zeros(*masks.shape[:-2], size, size)
    out_image[..., into_rows, into_cols] = image[..., rows, cols]
    out_masks[..., into_rows, into_cols] = masks[..., rows, cols]
    return out_image, out_masks


@dataclass(frozen=True)
class Crops:
    """How training cuts an image: resampled by `scale`, one `size` x `size` crop (placed by
    `crop_origin` with `object_share`), resized to `out_size` (the model's image size) when
    that differs. The one recipe BoltzFormer's trainer and the U-Net expert share."""

    size: int
    scale: float = 1.0
    object_share: float = 1 / 3
    out_size: int | None = None

    def __post_init__(self) -> None:
        if self.size < 1 or not self.scale > 0 or not 0.0 <= self.object_share <= 1.0:
            raise ValueError(f"crops need size >= 1, scale > 0 and object_share in [0, 1], "
                             f"got {self.size}, {self.scale}, {self.object_share}")

    def cut(self, image: Tensor, masks: Tensor, generator: torch.Generator, *,
            object_share: float | None = None, place_on: Tensor | None = None
            ) -> tuple[Tensor, Tensor]:
        """image (3, H, W) and masks (K[, 1], H, W) → (3, S, S) and (K[, 1], S, S), S =
        `out_size` (or `size`), the same crop for every mask; `object_share` overrides the
        recipe's, and the crop is placed on the masks `place_on` (J[, 1], H, W) instead of
        `masks` when given (validation: every item of an image cut alike)."""
        image, masks = rescale(image, masks, self.scale)
        share = self.object_share if object_share is None else object_share
        place = masks if place_on is None else resample_masks(
            place_on, _scaled(tuple(place_on.shape[-2:]), self.scale))
        top, left = crop_origin(place, self.size, share, generator)
        image, masks = take_crop(image, masks, top, left, self.size)
        if self.out_size is not None and self.out_size != self.size:
            image, masks = resample(image, masks, (self.out_size, self.out_size))
        return image, masks
