"""What a training step's data costs: the U-Net expert's and BoltzFormer's items (an image with
all its masks) read the way the trainers read them now (`BiomedParseDataset.load_group`: the
image decoded once) against item by item (the image decoded once per mask, as before).

    python benchmarks/loader_cost.py DATA --image-size 128 --items 16

DATA is a BiomedParse folder; the crops and the whole-image resize are the plan's for
`--image-size` (`train/plan.py`), as `lesion_controls.py` trains. One thread; the two ways
are timed in turns (`--rounds`), and the items are checked equal.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from boltzformer.apps.demo import TRAINING
from boltzformer.baselines import ImageTargets
from boltzformer.data import BiomedParseDataset
from boltzformer.train.data import crops_of, split_by_image
from boltzformer.train.plan import resolve_plan


class ItemByItem(BiomedParseDataset):
    """The reader as it was: every item of a group read on its own."""

    def load_group(self, indices: Any) -> list[dict[str, Any]]:
        return [self[i] for i in indices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a BiomedParse folder")
    parser.add_argument("--image-size", type=int, default=256, help="the model's input side")
    parser.add_argument("--items", type=int, default=16, help="expert items (images) a round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each way")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = resolve_plan(TRAINING.with_overrides({"data.root": str(args.data),
                                                "model.image_size": args.image_size}),
                       say=print)
    crops = crops_of(cfg.data, args.image_size)
    size = None if crops else args.image_size
    views = {}
    for name, kind in (("one decode an image", BiomedParseDataset),
                       ("one decode a mask", ItemByItem)):
        base = kind(args.data, "train", image_size=size, train=False, augment=False)
        train_idx, _ = split_by_image(base, cfg.data.val_fraction, 0)
        views[name] = ImageTargets(base, train_idx, base.target_names, crops=crops)
    masks = sum(len(g) for g in next(iter(views.values())).groups[: args.items])
    print(f"{args.items} images with {masks} masks a round, {args.rounds} rounds each")
    seconds: dict[str, list[float]] = {name: [] for name in views}
    last: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for name, view in views.items():
            started = time.perf_counter()
            last[name] = [view[i] for i in range(args.items)]
            seconds[name].append(time.perf_counter() - started)
    first, second = last.values()
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])
               for a, b in zip(first, second)), "the two ways gave different items"
    best = {name: min(times) for name, times in seconds.items()}
    for name, value in best.items():
        print(f"{name}: {value:.2f} s for {args.items} images ({value / args.items * 1e3:.0f} "
              "ms an image, best round)")
    old, new = best["one decode a mask"], best["one decode an image"]
    print(f"ratio: {old / new:.2f}x")


if __name__ == "__main__":
    main()
