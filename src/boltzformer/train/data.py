"""How the trainer uses a data set: a seeded split by image, epoch-seeded augmentation, and a
distributed sampler that can start part-way through an epoch (for exact resumption)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

from boltzformer.data import BiomedParseDataset, random_augment


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (seed, epoch, index, ...)."""
    value = 0x2545F4914F6CDD1D
    for part in parts:
        value = (value * 0x100000001B3 ^ (int(part) & 0xFFFFFFFFFFFF)) % 2**63
    return value


def split_by_image(
    dataset: BiomedParseDataset, val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Item indices (train, validation): a seeded `val_fraction` of the *images* with all
    their masks goes to validation, so no image is seen by both."""
    images = sorted({str(s.image_path) for s in dataset.samples})
    if len(images) < 2:
        raise ValueError(
            f"{dataset.root} [{dataset.split}] has {len(images)} image(s); holding out a "
            "validation set needs at least 2"
        )
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_val = min(len(images) - 1, max(1, round(val_fraction * len(images))))
    held_out = {images[i] for i in order[:n_val].tolist()}
    train = [i for i, s in enumerate(dataset.samples) if str(s.image_path) not in held_out]
    val = [i for i, s in enumerate(dataset.samples) if str(s.image_path) in held_out]
    return train, val


class EpochView(Dataset):
    """Training items of `base` (a BiomedParseDataset built with train=False, augment=False)
    at `indices`, with randomness that depends only on (seed, epoch, index): a random prompt
    among the sample's sentences and the paper's A.5 augmentation. A resumed run therefore
    sees exactly the items an uninterrupted one would, whatever the number of workers."""

    def __init__(
        self, base: BiomedParseDataset, indices: Sequence[int], *, seed: int, augment: bool
    ) -> None:
        self.base = base
        self.indices = list(indices)
        self.seed = seed
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before building each epoch's DataLoader iterator."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        item = self.base[index]
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))
        sample = self.base.samples[index]
        if len(sample.sentences) > 1 and item["mask_file"] == sample.mask_file:
            pick = int(torch.randint(len(sample.sentences), (), generator=generator))
            item["prompt"] = sample.sentences[pick]
        if self.augment:
            item["image"], item["mask"] = random_augment(item["image"], item["mask"], generator)
        return item


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (shuffled, seeded, padded to equal shards) that can skip the
    first `start` indices of this rank's shard of an epoch."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Iterate epoch `epoch`'s shard from its `start`-th index."""
        self.set_epoch(epoch)
        self.start = start

    def batches_per_epoch(self, batch_size: int) -> int:
        return math.ceil(self.num_samples / batch_size)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
