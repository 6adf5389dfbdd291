"""Paper A.5 augmentation: k x 90-degree rotation and a ±10% crop, identical on image and mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from boltzformer.data import random_augment


def _scene(seed: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """An asymmetric image whose channel 0 is 255 x mask; channels 1-2 are unrelated noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(4):
        cx, cy, r = rng.uniform(8, size - 8), rng.uniform(8, size - 8), rng.uniform(3, 9)
        mask |= (xx - cx) ** 2 + ((yy - cy) * 1.5) ** 2 < r * r
    mask[2:6, 2:20] = True  # a bar in one corner breaks every symmetry
    noise = rng.uniform(0, 255, (2, size, size))
    image = np.concatenate([mask[None] * 255.0, noise]).astype(np.float32)
    return torch.from_numpy(image), torch.from_numpy(mask[None].astype(np.float32))


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / max(int((a | b).sum()), 1))


@pytest.mark.parametrize("seed", range(12))
def test_image_and_mask_stay_aligned(seed):
    image, mask = _scene(seed)
    generator = torch.Generator().manual_seed(seed)
    out_image, out_mask = random_augment(image, mask, generator, p=1.0)
    assert out_image.shape == image.shape and out_mask.shape == mask.shape
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    derived = out_image[0] >= 127.5  # the mask derived from the augmented image
    mismatch = (derived != out_mask[0].bool()).float().mean().item()
    assert mismatch < 0.002


def test_alignment_check_detects_a_misaligned_mask():
    """The check above is meaningful: the untransformed mask does not match the output."""
    misses = 0
    for seed in range(12):
        image, mask = _scene(seed)
        out_image, _ = random_augment(image, mask, torch.Generator().manual_seed(seed), p=1.0)
        misses += _iou(out_image[0] >= 127.5, mask[0].bool()) < 0.9
    assert misses >= 8


def test_rotation_alone_is_exact():
    image, mask = _scene(0)
    seen = set()
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        out_image, out_mask = random_augment(image, mask, generator, 1.0, max_shift=0, max_scale=0)
        k = next(k for k in range(4) if torch.equal(out_image, torch.rot90(image, k, (-2, -1))))
        assert torch.equal(out_mask, torch.rot90(mask, k, (-2, -1)))
        seen.add(k)
    assert seen == {0, 1, 2, 3}


def test_crop_shift_and_scale_stay_within_ten_percent():
    size = 100
    yy, xx = np.mgrid[:size, :size]
    square = torch.from_numpy(
        ((abs(xx - 49.5) < 20) & (abs(yy - 49.5) < 20))[None].astype(np.float32)
    )
    image = square.repeat(3, 1, 1) * 255
    for seed in range(30):
        _, out = random_augment(image, square, torch.Generator().manual_seed(seed), p=1.0)
        rows, cols = torch.nonzero(out[0], as_tuple=True)
        shift = max(abs(rows.float().mean() - 49.5), abs(cols.float().mean() - 49.5))
        assert shift <= 0.1 * size / 0.9 + 1  # centre moves by at most 10% (of the crop)
        ratio = out.sum().item() / square.sum().item()
        assert 1 / 1.1**2 - 0.05 <= ratio <= 1 / 0.9**2 + 0.05  # side changes by at most 10%


def test_probability_and_determinism():
    image, mask = _scene(3)
    generator = torch.Generator().manual_seed(0)
    applied = 0
    for _ in range(400):
        out_image, _ = random_augment(image, mask, generator)  # p = 0.5
        applied += out_image is not image
    assert 160 <= applied <= 240
    a = random_augment(image, mask, torch.Generator().manual_seed(7), p=1.0)
    b = random_augment(image, mask, torch.Generator().manual_seed(7), p=1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    none = random_augment(image, mask, torch.Generator().manual_seed(7), p=0.0)
    assert none[0] is image and none[1] is mask


def test_without_rotations_left_stays_left_and_the_crops_are_the_same():
    """rotate=False: an object in the image's left half stays there under every seed (with
    rotations some seeds move it right), and the output is the rotating augmentation's
    whenever that one drew no rotation: the random draws are the same."""
    size = 64
    yy, xx = np.mgrid[:size, :size]
    left = ((xx >= 6) & (xx < 22) & (yy >= 24) & (yy < 40))[None].astype(np.float32)
    mask = torch.from_numpy(left)
    image = mask.repeat(3, 1, 1) * 255
    columns = torch.arange(size, dtype=torch.float32)
    moved_right, unrotated = 0, 0
    for seed in range(20):
        kept = random_augment(image, mask, torch.Generator().manual_seed(seed), 1.0, rotate=False)
        turned = random_augment(image, mask, torch.Generator().manual_seed(seed), 1.0)
        centre = float((kept[1][0].sum(0) * columns).sum() / kept[1][0].sum())
        assert centre < size / 2
        turned_centre = float((turned[1][0].sum(0) * columns).sum() / turned[1][0].sum())
        moved_right += turned_centre > size / 2
        rotation = random_augment(image, mask, torch.Generator().manual_seed(seed), 1.0,
                                  max_shift=0, max_scale=0)
        if torch.equal(rotation[0], image):  # this seed drew k = 0
            unrotated += 1
            assert torch.equal(kept[0], turned[0]) and torch.equal(kept[1], turned[1])
    assert moved_right >= 3 and 1 <= unrotated < 20
