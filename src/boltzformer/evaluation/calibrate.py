"""The size floor chosen for a trained model (`boltzformer calibrate`; modeling/size_floor.py).

- sizes: per target, the `percentile` (5th) of its objects' areas (the JSON's `area`, a share
  of the image) over the run's training items: the trainer's split by image, with the run's
  seed and `val_fraction`, so the validation images stay unseen.
- fraction: of `fractions`, the one whose floor gives the best mean score over the validation
  items, answered without a floor once: an absent target scores 1 when its answer is empty
  (under the floor or already empty), else 0; a present one its Dice, 0 when its answer falls
  under the floor. That is `evaluate`'s Dice with "both empty" counting 1, over every item.
  Ties go to the smaller fraction (0: no floor).

The floor is written into the checkpoint's config.json (`size_floors`,
`size_floor_fraction`); the weights are not touched. Training the run further writes new
checkpoints without it: calibrate again.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from boltzformer.data.biomedparse import Sample
from boltzformer.data.medio import image_shape
from boltzformer.evaluation.evaluate import evaluate
from boltzformer.inference.windowed import WindowSettings, window_settings
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.checkpoint import CONFIG_FILE
from boltzformer.modeling.size_floor import SizeFloor
from boltzformer.train.config import TrainConfig
from boltzformer.train.data import run_split
from boltzformer.train.publish import refresh_card
from boltzformer.train.run_dir import CONFIG_NAME, run_checkpoint

#: the percentile of a target's training areas that its floor is a fraction of
PERCENTILE = 5.0
#: the fractions tried on the validation split
FRACTIONS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def training_sizes(samples: Sequence[Sample], percentile: float = PERCENTILE
                   ) -> dict[str, float]:
    """Per target name, the `percentile` of the areas (shares of the image) of its present
    objects among `samples` (each with its area); targets never present are left out."""
    areas: dict[str, list[float]] = defaultdict(list)
    for sample in samples:
        if sample.area is None:
            raise ValueError(f"{sample.mask_path}: its area is not known")
        if sample.area > 0:
            areas[sample.target].append(sample.area)
    return {t: float(np.percentile(a, percentile)) for t, a in sorted(areas.items())}


def window_share(sample: Sample, windows: WindowSettings) -> float:
    """A sample's area (a share of its image) as a share of one window: the unit in which a
    windowed model's size floor is compared (`inference/windowed.py`), at most 1."""
    height, width = image_shape(sample.image_path)
    pixels = (sample.area or 0.0) * height * width * windows.scale**2
    return min(1.0, pixels / windows.size**2)


def score_fractions(rows: Sequence[dict[str, Any]], sizes: dict[str, float],
                    fractions: Sequence[float] = FRACTIONS) -> list[dict[str, float]]:
    """For each fraction, over `rows` (evaluate's per-item rows, answered without a floor):
    the mean score (see the module docstring), the share of absent targets still painted,
    and the mean Dice of present ones, with answers under `fraction * sizes[target]` empty."""
    table = []
    for fraction in fractions:
        scores, painted, dice = [], [], []
        for row in rows:
            kept = row["pred_area"] > 0 and (
                row["pred_area"] >= fraction * sizes.get(row["target"], 0.0))
            if row["size"] == "absent":
                painted.append(kept)
                scores.append(0.0 if kept else 1.0)
            else:
                dice.append(row["dice"] if kept else 0.0)
                scores.append(dice[-1])
        table.append({
            "fraction": fraction,
            "score": float(np.mean(scores)) if scores else float("nan"),
            "absent_painted": float(np.mean(painted)) if painted else float("nan"),
            "present_dice": float(np.mean(dice)) if dice else float("nan"),
        })
    return table


def best_fraction(table: Sequence[dict[str, float]]) -> float:
    """The fraction of the highest score (the smallest one among equals)."""
    best = max(table, key=lambda r: (r["score"], -r["fraction"]))
    return best["fraction"]


@dataclass
class Calibration:
    """The floor chosen, the table it was chosen from, and the validation items scored
    (`rows`: evaluate's per-item rows, answered without a floor)."""

    floor: SizeFloor
    table: list[dict[str, float]]
    percentile: float
    rows: list[dict[str, Any]]

    @property
    def n_val(self) -> int:
        return len(self.rows)

    @property
    def n_absent(self) -> int:
        return sum(r["size"] == "absent" for r in self.rows)


def calibrate_size_floor(
    model: nn.Module, cfg: TrainConfig, *, fractions: Sequence[float] = FRACTIONS,
    percentile: float = PERCENTILE, batch_size: int = 8, progress: bool = True,
) -> Calibration:
    """Sizes from the training items and the fraction from the validation items of the run
    that `cfg` (its config.yaml) describes; `model` is answered without a floor. The model
    is not changed (`with_size_floor` applies the result)."""
    if not fractions or any(f < 0 for f in fractions):
        raise ValueError(f"fractions must be numbers >= 0, at least one, got {list(fractions)}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    seed = cfg.train.seed
    config = getattr(model, "config", None)  # a model without one answers whole images
    windows = window_settings(config) if config is not None else None
    size = None if windows is not None else cfg.model.resolve().image_size
    base, train_idx, val_idx = run_split(cfg.data, size, seed)
    # the JSON's area where it records one (synth, convert), else measured on the mask
    train = [replace(base.samples[i], area=float(base[i]["area"]))
             if base.samples[i].area is None else base.samples[i] for i in train_idx]
    if windows is not None:  # a windowed answer's area is a share of one window
        train = [replace(s, area=window_share(s, windows)) for s in train]
    sizes = training_sizes(train, percentile)
    result = evaluate(model, Subset(base, val_idx), seed=seed, batch_size=batch_size,
                      size_floor=False, progress=progress, windows=windows)
    table = score_fractions(result.samples, sizes, fractions)
    return Calibration(SizeFloor(sizes, best_fraction(table)), table, percentile,
                       result.samples)


def with_size_floor(model: Any, floor: SizeFloor) -> None:
    """Give `model` (BoltzFormer or the U-Net expert: a dataclass `config` with the size
    floor's two fields) the floor."""
    model.config = replace(model.config, size_floors=dict(floor.sizes),
                           size_floor_fraction=floor.fraction)


def write_size_floor(checkpoint: Path, floor: SizeFloor) -> Path:
    """Write the floor into the checkpoint folder's config.json (replaced atomically; every
    other setting and the weights as they were), and its model card again to match
    (`publish.refresh_card`) -> the config's path."""
    path = checkpoint / CONFIG_FILE
    values = json.loads(path.read_text(encoding="utf-8"))
    values.update(size_floors=dict(floor.sizes), size_floor_fraction=floor.fraction)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    refresh_card(checkpoint)
    return path


def format_table(cal: Calibration) -> str:
    """The calibration table in Markdown, the chosen fraction marked."""
    lines = [f"Size floor on {cal.n_val} validation items ({cal.n_absent} absent): a "
             f"fraction of each target's {cal.percentile:g}th-percentile training size.", "",
             "| fraction | score | absent painted | present Dice |", "|---:|---:|---:|---:|"]
    for row in cal.table:
        mark = " (chosen)" if row["fraction"] == cal.floor.fraction else ""
        lines.append(f"| {row['fraction']:g}{mark} | {100 * row['score']:.2f} | "
                     f"{100 * row['absent_painted']:.1f} % | {100 * row['present_dice']:.2f} |")
    return "\n".join(lines) + "\n"


def calibrate_run(run_dir: str | Path, *, data: str | Path | None = None,
                  fractions: Sequence[float] = FRACTIONS, percentile: float = PERCENTILE,
                  batch_size: int = 8, device: str = "auto", dry_run: bool = False,
                  progress: bool = True) -> str:
    """`boltzformer calibrate`: a training run's checkpoint (best/, else last/) calibrated on
    its validation items (`data`: its data folder, if it has moved) and, unless `dry_run`,
    its floor written into the checkpoint's config.json. Returns the table and the choice,
    as the verb prints them."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"--percentile must be in [0, 100], got {percentile}")
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_yaml(run_dir / CONFIG_NAME)
    if data is not None:
        cfg = cfg.with_overrides({"data.root": str(data)})
    checkpoint = run_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: no best/ or last/ checkpoint to calibrate")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = BoltzFormer.from_pretrained(checkpoint, map_location=device)
    cal = calibrate_size_floor(model, cfg, fractions=fractions, percentile=percentile,
                               batch_size=batch_size, progress=progress)
    if dry_run:
        return format_table(cal) + (f"fraction {cal.floor.fraction:g} chosen; nothing written "
                                    "(--dry-run)\n")
    path = write_size_floor(checkpoint, cal.floor)
    return format_table(cal) + f"fraction {cal.floor.fraction:g} chosen; the floor is in {path}\n"
