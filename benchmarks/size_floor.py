"""An offline check: what a per-target size floor would do to absent prompts, the fraction read
off the test split (the trade-off, not a setting). The feature that came of it, the floor
chosen on the validation split (`boltzformer calibrate`), is measured by calibrated_floor.py;
this script stays because demo.md's 2026-12-03 (night) figures were printed by it.

A prompt is answered "absent" when its mask covers fewer pixels than FRACTION times the 5th
percentile of that target's sizes in the training split (`area_fraction` in the JSON, at the
model's image size). Printed per run and FRACTION from the runs' per_sample.csv (RUN as
absent_targets.py reads it: a demo's folder, a run folder with eval/, an evaluation
folder): absent prompts still painted, and mean Dice on all present targets and on tiny
ones (< 0.1 %), a present answer under the floor scoring 0; with several runs, their mean.

    python benchmarks/size_floor.py DATA RUN [RUN ...] [--size 256] [--fractions 0,0.25,0.5,0.75]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from absent_targets import _label, _rows  # this folder's script: the same RUN forms

from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import TINY_AREA


def floors(data: str, size: int) -> dict[str, float]:
    """Each target's 5th-percentile size in pixels at size x size, from the training split."""
    pixels: dict[str, list[float]] = defaultdict(list)
    for sample in BiomedParseDataset(data, "train", image_size=size).samples:
        if sample.area:
            pixels[sample.target].append(sample.area * size * size)
    return {t: float(np.percentile(v, 5)) for t, v in pixels.items()}


def score(rows: list[dict[str, str]], floor: dict[str, float], fraction: float
          ) -> tuple[int, int, float, float]:
    """(absent prompts still painted, absent prompts, mean Dice % on all present targets, on
    tiny ones) with the floor at `fraction`."""
    painted = absent = 0
    dice, tiny = [], []
    for row in rows:
        p = int(row["pred_pixels"])
        kept = p > 0 and p >= fraction * floor.get(row["target"], 0.0)
        if row["size"] == "absent":
            absent += 1
            painted += kept
            continue
        value = float(row["dice"]) if kept or p == 0 else 0.0
        dice.append(value)
        if float(row["area"]) < TINY_AREA:
            tiny.append(value)
    return painted, absent, 100 * statistics.mean(dice), 100 * statistics.mean(tiny)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--fractions", default="0,0.25,0.5,0.75")
    args = parser.parse_args()
    floor = floors(args.data, args.size)
    print("| run | fraction | absent painted | all | tiny |\n|---|---:|---:|---:|---:|")
    rows = {run: _rows(run) for run in args.runs}
    for fraction in map(float, args.fractions.split(",")):
        shares, alls, tinies = [], [], []
        for run in args.runs:
            painted, absent, dice, tiny = score(rows[run], floor, fraction)
            shares.append(100 * painted / absent)
            alls.append(dice)
            tinies.append(tiny)
            print(f"| {_label(run)} | {fraction} | {painted}/{absent} = {shares[-1]:.1f} % | "
                  f"{dice:.1f} | {tiny:.1f} |")
        if len(args.runs) > 1:
            print(f"| mean of {len(args.runs)} | {fraction} | "
                  f"{statistics.mean(shares):.1f} % | {statistics.mean(alls):.1f} | "
                  f"{statistics.mean(tinies):.1f} |")


if __name__ == "__main__":
    main()
