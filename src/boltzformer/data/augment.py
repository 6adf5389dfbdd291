"""Training augmentation of the paper's appendix A.5: 90-degree rotations (optional) and a
jittered crop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_augment(
    image: Tensor,
    mask: Tensor,
    generator: torch.Generator,
    p: float = 0.5,
    *,
    max_shift: float = 0.1,
    max_scale: float = 0.1,
    rotate: bool = True,
) -> tuple[Tensor, Tensor]:
    """With probability `p`, rotate by k x 90 degrees and take a jittered crop, identically.

    image: (C, H, W) float; mask: (K, H, W) with values 0/1, K masks of the image moved alike
    (the data set passes one; the U-Net baseline one per target). The crop's centre moves by
    up to ±`max_shift` of the image size and its side by up to ±`max_scale`; it is resampled
    back to (H, W) (bilinear; outside the image is 0), and the masks are thresholded at 0.5
    so they stay binary. Returns tensors of the input shapes (the inputs when not applied).

    `rotate=False` leaves out the rotation (the same random draws, so the crops are those a
    rotating run takes): a patient's left then stays on one side of the image.
    """
    if image.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape)} and mask {tuple(mask.shape)} differ in size")
    if float(torch.rand((), generator=generator)) >= p:
        return image, mask
    k = int(torch.randint(0, 4, (), generator=generator))  # drawn either way (see `rotate`)
    k = k if rotate else 0
    shift = (torch.rand(2, generator=generator) * 2 - 1) * max_shift
    scale = 1 + (float(torch.rand((), generator=generator)) * 2 - 1) * max_scale
    image = torch.rot90(image, k, dims=(-2, -1))
    mask = torch.rot90(mask, k, dims=(-2, -1))
    if max_shift == 0 and max_scale == 0:
        return image, mask
    # Output pixel at normalised position q samples the input at scale * q + 2 * shift:
    # a crop of side `scale` (relative) centred at `shift` (relative to the size).
    theta = torch.tensor(
        [[scale, 0.0, 2 * float(shift[0])], [0.0, scale, 2 * float(shift[1])]],
        dtype=torch.float32,
    )[None]
    height, width = image.shape[-2:]
    grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)
    warped_image = F.grid_sample(
        image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]
    warped_mask = F.grid_sample(
        mask[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]
    return warped_image.to(image.dtype), (warped_mask >= 0.5).to(mask.dtype)
