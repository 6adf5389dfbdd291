"""Sliding-window inference settings, measured on one model trained on crops: the blending
weights (Gaussian against constant), the existence gate (per window against the image's
maximum alone, and off) and the overlap, each scored on the same test images at their own size.

    python benchmarks/window_settings.py RUN_DIR DATA --images 30 > table.md

RUN_DIR is a `lesion_controls.py train` run folder (its run/last checkpoint) or a checkpoint
folder. The first IMAGES test images (all their prompts) are scored with each setting, no
size floor; the rows give Dice (all, small, tiny), detection F1 by size bin, the absent
prompts painted and the seconds the evaluation took.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from boltzformer.evaluation.evaluate import evaluate, scoring_split
from boltzformer.modeling.boltzformer import BoltzFormer

# name -> changes to the checkpoint's WindowSettings
SETTINGS: dict[str, dict[str, Any]] = {
    "gaussian, per-window gate, overlap 0.5 (default)": {},
    "constant weights": {"mode": "constant"},
    "image-level gate only": {"per_window_gate": False},
    "overlap 0.25": {"overlap": 0.25},
    "existence head off (every prompt answered)": {"existence_threshold": 0.0},
}


def _pct(value: Any) -> str:
    return "–" if value is None or value != value else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = args.run / "run" / "last" if (args.run / "run" / "last").is_dir() else args.run
    model = BoltzFormer.from_pretrained(folder)
    test, windows = scoring_split(model.config, args.data)
    if windows is None:
        raise SystemExit(f"{folder}: the model has no windows (window_size 0)")
    images = sorted({s.image_path for s in test.samples})[: args.images]
    keep = [i for i, s in enumerate(test.samples) if s.image_path in set(images)]
    print(f"{folder}: {len(images)} test images, {len(keep)} prompts, windows of "
          f"{windows.size}\n")
    print("| setting | Dice all | small | tiny | F1 | F1 <0.01% | F1 0.01-0.1% | F1 0.1-1% | "
          "absent painted | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, change in SETTINGS.items():
        torch.manual_seed(args.seed)
        started = time.monotonic()
        change = dict(change)
        threshold = change.pop("existence_threshold", 0.5)
        ev = evaluate(model, Subset(test, keep), seed=args.seed, progress=False,
                      size_floor=False, windows=replace(windows, **change),
                      existence_threshold=threshold)
        m = ev.metrics
        strata, objects = m["size_strata"]["weighted"], m["objects"]["overall"]
        f1 = {k: v["f1"] for k, v in objects["by_size"].items()}
        print(f"| {name} | {_pct(m['overall']['dice_mean'])} | "
              f"{_pct(strata.get('small', {}).get('dice_mean'))} | "
              f"{_pct(strata.get('tiny', {}).get('dice_mean'))} | {_pct(objects['f1'])} | "
              f"{_pct(f1.get('<0.01%'))} | {_pct(f1.get('0.01-0.1%'))} | "
              f"{_pct(f1.get('0.1-1%'))} | {_pct(m['absent'].get('false_positive_rate'))} | "
              f"{time.monotonic() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
