"""Issue 24's controls: why `train_unet` trailed a plain multi-label U-Net, and the fix.

`plain` is the plain recipe written out here on its own (not through `train_unet`): smp
`Unet("tu-resnet10t", encoder_weights=None)` with one sigmoid channel per target (the
package's `UNetExpert`), every channel of every training image supervised with BCE (a target
the image does not annotate counts as empty) plus soft Dice 1 - (2 sum pt + 1) / (sum p +
sum t + 1) averaged over each image's annotated channels, AdamW at a constant 1e-3 (weight
decay 1e-4), batches of 8 images, no augmentation, no clipping, all training images. Every
other variant is `train_unet` with the keyword arguments in VARIANTS: "old" is the expert as
`boltzformer demo --expert` trained it before issue 24, the "old-..." rows change one thing
of it, "new-..." the four changes of issue 24 (constant lr, no clipping, weight decay 1e-4,
no augmentation) at lr 1e-3 or 2e-3, "expert" is `train_unet`'s defaults as the demo calls it
now (the same at 2e-3).

    python benchmarks/unet_controls.py train plain  --data DATA --out RUNS --minutes 9
    python benchmarks/unet_controls.py train old    --data DATA --out RUNS --steps 1500
    python benchmarks/unet_controls.py train expert --data DATA --out RUNS --minutes 9
    python benchmarks/unet_controls.py table RUNS

Each run trains on one thread (`--threads`), scores the model with the package's `evaluate`
on the test split (per (image, target), threshold 0.5, as the demo) and writes
RUNS/VARIANT-sSEED/result.json; `table` gathers them. On a shared machine compare variants at
equal steps (`--steps`, the steps `plain` takes in the minutes at hand); the images per
second of each variant are in its row. DATA is the demo's phantoms (`boltzformer synth DATA
--images 1200 --size 256 --seed 0`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from boltzformer.baselines import ImageTargets, UNetBaselineConfig, UNetExpert, train_unet
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import evaluate, write_report

BATCH = 8

# The expert as the demo trained it before issue 24 (its call and train_unet's defaults then).
OLD: dict[str, Any] = {"supervise": "annotated", "schedule": "cosine", "clip": 1.0,
                       "weight_decay": 1e-2, "augment": True, "rotations": False,
                       "val_fraction": 0.05}

# The old recipe with a constant lr, no clipping, weight decay 1e-4 and no augmentation.
NEW: dict[str, Any] = {**OLD, "schedule": "constant", "clip": None, "weight_decay": 1e-4,
                       "augment": False}

# name -> train_unet keyword arguments (on top of batch 8, 256 pixels, workers 0)
VARIANTS: dict[str, dict[str, Any]] = {
    "old": OLD,
    "old-all": {**OLD, "supervise": "all"},  # every channel supervised, absent ones empty
    "old-constant": {**OLD, "schedule": "constant"},  # no warm-up, no cosine
    "old-noclip": {**OLD, "clip": None},
    "old-noaug": {**OLD, "augment": False},
    "old-wd": {**OLD, "weight_decay": 1e-4},
    "expert": {"val_fraction": 0.05},  # train_unet's defaults (lr 2e-3), the demo's 5 % out
    # issue 24's four changes together, with either supervision, and at lr 2e-3
    "new-annotated": {**NEW, "supervise": "annotated"},
    "new-all": {**NEW, "supervise": "all"},
    "new-annotated-lr2": {**NEW, "supervise": "annotated", "lr": 2e-3},
}


def train_plain(data: Path, run_dir: Path, *, minutes: float | None, steps: int | None,
                seed: int, image_size: int) -> tuple[UNetExpert, dict[str, Any]]:
    """The plain recipe on every image of the train split; images held in memory."""
    base = BiomedParseDataset(data, "train", image_size=image_size, train=False, augment=False)
    targets = sorted({s.target for s in base.samples})
    items = ImageTargets(base, range(len(base)), targets)
    images = torch.stack([items[i]["image"].to(torch.uint8) for i in range(len(items))])
    masks = torch.stack([items[i]["masks"].bool() for i in range(len(items))])
    annotated = torch.stack([items[i]["annotated"] for i in range(len(items))])
    torch.manual_seed(seed)
    model = UNetExpert(UNetBaselineConfig(tuple(targets), image_size=image_size)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    order = torch.Generator().manual_seed(seed)
    step, started = 0, time.monotonic()

    def done() -> bool:
        if steps is not None:
            return step >= steps
        assert minutes is not None
        return time.monotonic() - started >= 60 * minutes

    while not done():
        for batch in torch.randperm(len(images), generator=order).split(BATCH):
            logits = model.channel_logits(images[batch].float())
            target = masks[batch].float()
            p, t = logits.sigmoid().flatten(2), target.flatten(2)
            dice = 1 - (2 * (p * t).sum(2) + 1) / (p.sum(2) + t.sum(2) + 1)  # (B, C)
            present = annotated[batch].float()
            dice_per_image = (dice * present).sum(1) / present.sum(1).clamp(min=1)
            loss = F.binary_cross_entropy_with_logits(logits, target) + dice_per_image.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if done():
                break
    seconds = time.monotonic() - started
    model.eval()
    model.save_pretrained(run_dir / "run")
    return model, {"steps": step, "images": step * BATCH, "seconds": seconds,
                   "images_per_s": step * BATCH / seconds, "train_images": len(images)}


def run(variant: str, data: Path, out: Path, *, minutes: float | None, steps: int | None,
        seed: int, threads: int, image_size: int = 256) -> dict[str, Any]:
    """Train `variant`, score it on the test split, write RUNS/VARIANT-sSEED/result.json."""
    torch.set_num_threads(threads)
    run_dir = out / f"{variant}-s{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    if variant == "plain":
        model, metrics = train_plain(data, run_dir, minutes=minutes, steps=steps, seed=seed,
                                     image_size=image_size)
    else:
        result = train_unet(data, run_dir / "run", minutes=minutes, steps=steps,
                            image_size=image_size, batch_size=BATCH, seed=seed, workers=0,
                            progress=False, **VARIANTS[variant])
        model, metrics = result.model, result.metrics
    test = BiomedParseDataset(data, "test", image_size=image_size, train=False)
    ev = evaluate(model, test, seed=seed, progress=False)
    write_report(ev, run_dir / "eval")
    m = ev.metrics
    summary = {
        "variant": variant, "seed": seed, "minutes": minutes, "budget_steps": steps,
        "threads": threads, "image_size": image_size, "steps": metrics["steps"],
        "images_seen": metrics["images"],
        "train_images": metrics["train_images"], "seconds": round(metrics["seconds"], 1),
        "images_per_s": round(metrics["images_per_s"], 3),
        "small": m["size_strata"]["weighted"]["small"]["dice_mean"],
        "large": m["size_strata"]["weighted"]["large"]["dice_mean"],
        "all": m["overall"]["dice_mean"],
        "zero_targets": sorted(k for k, v in m["by_target"].items() if v["dice_mean"] < 0.005),
        "by_target": {k: v["dice_mean"] for k, v in m["by_target"].items()},
    }
    (run_dir / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def table(folders: list[Path]) -> str:
    """One Markdown row per result.json under `folders` (Dice in %)."""
    rows = [json.loads(p.read_text()) for f in folders for p in sorted(f.glob("*/result.json"))]
    lines = ["| variant | size | seed | budget | steps | images/s | small | large | all "
             "| targets < 0.5 % |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        budget = f"{r['budget_steps']} steps" if r["budget_steps"] else f"{r['minutes']:g} min"
        lines.append(f"| {r['variant']} | {r['image_size']} | {r['seed']} | {budget} | "
                     f"{r['steps']} | "
                     f"{r['images_per_s']:.2f} | {100 * r['small']:.1f} | {100 * r['large']:.1f} | "
                     f"{100 * r['all']:.1f} | {len(r['zero_targets'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train and score one variant")
    tr.add_argument("variant", choices=["plain", *VARIANTS])
    tr.add_argument("--data", type=Path, required=True)
    tr.add_argument("--out", type=Path, required=True)
    budget = tr.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float)
    budget.add_argument("--steps", type=int)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument("--image-size", type=int, default=256,
                    help="side the images are resized to, training and test (the demo: 256)")
    tb = sub.add_parser("table", help="a Markdown table of the runs in folders")
    tb.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "train":
        summary = run(args.variant, args.data, args.out, minutes=args.minutes, steps=args.steps,
                      seed=args.seed, threads=args.threads, image_size=args.image_size)
        print(json.dumps({k: v for k, v in summary.items() if k != "by_target"}, indent=2))
    else:
        print(table(args.folders))


if __name__ == "__main__":
    main()
