"""How the trainer uses a data set: a seeded split by image, groups of up to K prompts per
image with epoch-seeded prompts and augmentation, and a distributed sampler that can start
part-way through an epoch (for exact resumption)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from boltzformer.data import BiomedParseDataset, random_augment, read_mask
from boltzformer.data.biomedparse import default_prompt
from boltzformer.data.crops import Crops
from boltzformer.evaluation.evaluate import TINY_AREA
from boltzformer.train.config import DataConfig


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


def run_split(data: DataConfig, image_size: int | None, seed: int
              ) -> tuple[BiomedParseDataset, list[int], list[int]]:
    """A run's un-augmented reader of its `data` split at `image_size` (None: at native size,
    for crops), and its item indices
    (train, validation) split by image with `seed`: what the trainer trains and validates on,
    and what `calibrate` reads again. ValueError when `data.root` is not set."""
    if data.root is None:
        raise ValueError("no training data: set data.root in the config or pass --data DIR")
    base = BiomedParseDataset(
        data.root, data.split, image_size=image_size, train=False, augment=False, seed=seed,
        skip_bad=data.skip_bad, prompt=data.prompt,
    )
    return (base, *split_by_image(base, data.val_fraction, seed))


def crops_of(data: DataConfig, image_size: int) -> Crops | None:
    """The crops `data` asks for (resized to the model's `image_size`), None for whole
    images (crop_size 0). Its crop_size, scale and object_crops must be resolved
    (`plan.resolve_plan`)."""
    if data.crop_size is None or data.scale is None or data.object_crops is None:
        raise ValueError("data.crop_size, data.scale and data.object_crops are not planned yet "
                         "(train/plan.py resolve_plan fills them in)")
    if data.crop_size == 0:
        return None
    return Crops(data.crop_size, data.scale, data.object_crops, out_size=image_size)


def group_by_image(dataset: BiomedParseDataset, indices: Sequence[int]) -> list[list[int]]:
    """The item `indices` of each image of `dataset`, images in order of first appearance."""
    by_image: dict[str, list[int]] = {}
    for index in indices:
        by_image.setdefault(str(dataset.samples[index].image_path), []).append(index)
    return list(by_image.values())


class EpochView(Dataset):
    """Training groups of `base` (a BiomedParseDataset built with train=False, augment=False):
    each group is one image with up to `prompts_per_image` (K) of its targets.

    Every epoch, each image's items among `indices` are shuffled and cut into groups of K, so
    an epoch still sees every (image, target) pair once; with K = 1 the groups are the items
    in order (one pair each). A group's randomness depends only on (seed, epoch, its first
    item): a random prompt among each sample's sentences, then the paper's A.5 augmentation
    (without its rotations when `rotations` is false) applied once to the image and
    identically to all its masks. A resumed run therefore sees
    exactly the groups an uninterrupted one would, whatever the number of workers.

    `negatives` (N > 0) adds to each group up to N absent targets: names of the data set's
    targets (all of `base`) that the image does not annotate, drawn per (seed, epoch, group)
    without replacement, each prompted `<target> in <site> <modality>` with an empty mask and
    area 0. It assumes every image annotates every target it holds, as the built-in
    phantoms do; the group's other draws are the same with and without it.

    `absent_repeat` (R > 1) lists every item whose recorded area is 0 (an annotated absent
    target, `"area_fraction": 0` in the JSON, as `boltzformer synth` and `convert` write
    them) R times per epoch instead of once, and `tiny_repeat` every item whose recorded
    area is under `TINY_AREA` (0.1 % of the image; the evaluator's tiny stratum): rare
    pairs seen more often. Items without a recorded area are listed once. With K = 1 a
    pair's copies draw the same prompt and augmentation within an epoch (a group's draws
    depend on its first item).

    `crops` (with `base` read at native size, image_size=None): each group's image and all
    its masks cut by one crop (`Crops.cut`, drawn after the prompts and before the
    augmentation from the group's generator), so the same seed gives the same crops. A
    target whose mask the crop leaves empty is absent for that step (an empty mask, which
    the loss and the existence head read as absent), and each item's "area" is its share of
    the crop. `cropped_out` (M, not None): of the targets present in the image that the crop
    leaves out, only the first M (in the group's shuffled order) stay; the others leave the
    group for that step (a group keeps at least one item). The `negatives` are not counted.
    """

    def __init__(
        self, base: BiomedParseDataset, indices: Sequence[int], *, seed: int, augment: bool,
        prompts_per_image: int = 1, rotations: bool = True, negatives: int = 0,
        absent_repeat: int = 1, tiny_repeat: int = 1, crops: Crops | None = None,
        cropped_out: int | None = None,
    ) -> None:
        if prompts_per_image < 1:
            raise ValueError(f"prompts_per_image must be >= 1, got {prompts_per_image}")
        if negatives < 0:
            raise ValueError(f"negatives must be >= 0, got {negatives}")
        if absent_repeat < 1 or tiny_repeat < 1:
            raise ValueError(f"absent_repeat and tiny_repeat must be >= 1, got {absent_repeat} "
                             f"and {tiny_repeat}")
        self.base = base
        self.indices = list(indices)
        self.seed = seed
        self.augment = augment
        self.rotations = rotations
        self.k = prompts_per_image
        self.negatives = negatives
        self.crops = crops
        self.cropped_out = cropped_out
        self.vocabulary = base.target_names
        areas = [base.samples[i].area for i in self.indices]
        repeats = [1 if a is None else absent_repeat if a == 0.0 else
                   tiny_repeat if a < TINY_AREA else 1 for a in areas]
        self.indices = [i for i, r in zip(self.indices, repeats) for _ in range(r)]
        self.images = group_by_image(base, self.indices)
        self.annotated: dict[str, set[str]] = {}  # image path -> every target it annotates
        for sample in base.samples:
            self.annotated.setdefault(str(sample.image_path), set()).add(sample.target)
        self.epoch = 0
        self.groups = self._groups(0)

    def _groups(self, epoch: int) -> list[list[int]]:
        if self.k == 1:
            return [[i] for i in self.indices]
        groups = []
        for number, items in enumerate(self.images):
            order = torch.randperm(len(items), generator=torch.Generator().manual_seed(
                mix_seed(self.seed, epoch, number, 2)))
            shuffled = [items[i] for i in order.tolist()]
            groups += [shuffled[j : j + self.k] for j in range(0, len(shuffled), self.k)]
        return groups

    def set_epoch(self, epoch: int) -> None:
        """Call before building each epoch's DataLoader iterator."""
        self.epoch = epoch
        self.groups = self._groups(epoch)

    def __len__(self) -> int:
        return len(self.groups)  # the same in every epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One image: "image" (3, S, S), "mask" (k, 1, S, S), and per-target lists."""
        group = self.groups[i]
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, group[0]))
        items = self.base.load_group(group)
        for index, item in zip(group, items):
            sample = self.base.samples[index]
            if len(sample.sentences) > 1 and item["mask_file"] == sample.mask_file:
                pick = int(torch.randint(len(sample.sentences), (), generator=generator))
                item["prompt"] = sample.sentences[pick]
        if self.negatives:
            items += self._absent_items(group[0], items[0])
        image = items[0]["image"]
        masks = torch.cat([item["mask"] for item in items])  # (k, S, S)
        if self.crops is not None:
            present = masks.flatten(1).any(1) if self.cropped_out is not None else None
            image, masks = self.crops.cut(image, masks, generator)
            for item, mask in zip(items, masks):
                item["area"] = float(mask.mean())
            if present is not None:
                items, masks = self._drop_cropped_out(items, masks, present.tolist())
        if self.augment:
            image, masks = random_augment(image, masks, generator, rotate=self.rotations)
        out: dict[str, Any] = {key: [item[key] for item in items] for key in items[0]
                               if key not in ("image", "mask")}
        out.update(image=image, mask=masks[:, None])
        return out

    def _drop_cropped_out(self, items: list[dict[str, Any]], masks: Tensor,
                          present: list[bool]) -> tuple[list[dict[str, Any]], Tensor]:
        """`items` and their cut `masks` (k, S, S) less the targets present in the image
        (`present`) that the crop left empty, beyond the first `cropped_out` of them; at
        least one item stays."""
        assert self.cropped_out is not None
        keep, left_out = [], 0
        for i, (item, was) in enumerate(zip(items, present)):
            if was and item["area"] == 0.0:
                left_out += 1
                if left_out > self.cropped_out:
                    continue
            keep.append(i)
        keep = keep or [0]
        return [items[i] for i in keep], masks[keep]

    def _absent_items(self, first: int, like: dict[str, Any]) -> list[dict[str, Any]]:
        """Up to `negatives` items of targets the image of item `first` does not annotate,
        made from its item `like`: an empty mask (1, S, S), area 0, no mask file."""
        sample = self.base.samples[first]
        absent = [t for t in self.vocabulary
                  if t not in self.annotated[str(sample.image_path)]]
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, first, 3))
        order = torch.randperm(len(absent), generator=generator)[: self.negatives].tolist()
        return [{**like, "target": absent[i], "mask": torch.zeros_like(like["mask"]),
                 "prompt": default_prompt(absent[i], sample.site, sample.modality),
                 "area": 0.0, "mask_file": "", "mask_path": "", "instances_path": ""}
                for i in order]


class CropItems(Dataset):
    """The items of `base` (read at native size) at `indices`, each cut by its image's one
    validation crop: deterministic (seeded by the image), centred on the object of one of the
    image's targets (drawn among those not recorded absent), so every item of an image shows
    the same pixels and the image is encoded once for all its prompts, as a whole-image
    validation does. Dataset index i is `indices[i]`; an item is `base`'s, its image (3, S,
    S), mask (1, S, S) and "area" (its share of the crop) those of the crop."""

    def __init__(self, base: BiomedParseDataset, indices: Sequence[int], crops: Crops, *,
                 seed: int) -> None:
        self.base, self.indices, self.crops, self.seed = base, list(indices), crops, seed
        self.anchor: dict[int, tuple[int, int]] = {}  # item -> (image number, anchor item)
        for number, items in enumerate(group_by_image(base, self.indices)):
            present = [i for i in items if base.samples[i].area != 0.0] or items
            draw = torch.Generator().manual_seed(mix_seed(seed, number, 4))
            anchor = present[int(torch.randint(len(present), (), generator=draw))]
            self.anchor.update({i: (number, anchor) for i in items})

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        number, anchor = self.anchor[index]
        item = self.base[index]
        place = item["mask"] if anchor == index else torch.from_numpy(read_mask(
            self.base.samples[anchor].mask_path, max_pixels=self.base.max_pixels)[None]
            .astype(np.float32))
        draw = torch.Generator().manual_seed(mix_seed(self.seed, number, 5))
        image, mask = self.crops.cut(item["image"], item["mask"], draw, object_share=1.0,
                                     place_on=place)
        return {**item, "image": image, "mask": mask, "area": float(mask.mean())}


def collate_groups(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch EpochView groups: "image" (N, 3, S, S); "mask" (P, 1, S, S), "prompt" and the
    other per-target lists flattened over the P pairs; "image_index" (P,) long, the image of
    each pair."""
    if not groups:
        raise ValueError("cannot collate an empty batch")
    counts = [len(g["prompt"]) for g in groups]
    out: dict[str, Any] = {key: [value for g in groups for value in g[key]] for key in groups[0]
                           if key not in ("image", "mask")}
    out["image"] = torch.stack([g["image"] for g in groups])
    out["mask"] = torch.cat([g["mask"] for g in groups])
    out["image_index"] = torch.repeat_interleave(torch.arange(len(groups)),
                                                 torch.tensor(counts))
    return out


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
