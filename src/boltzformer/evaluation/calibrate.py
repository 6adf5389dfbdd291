"""The gates chosen for a trained model on its validation split (`boltzformer calibrate`):
the existence head's threshold (modeling/existence.py) and the size floor
(modeling/size_floor.py), together.

- sizes: per target, the `percentile` (5th) of its objects' areas (the JSON's `area`, a share
  of the image) over the run's training items: the trainer's split by image, with the run's
  seed and `val_fraction`, so the validation images stay unseen.
- threshold and fraction: of `thresholds` (a model with the existence head; none without)
  and `fractions`, the pair whose gates give the best mean score over the validation items:
  an absent target scores 1 when its answer is empty, else 0; a present one its Dice, 0 when
  its answer is gated away. That is `evaluate`'s Dice with "both empty" counting 1, over every
  item. Ties go to the lower threshold (0: the gate off, every answer its mask), then to the
  smaller fraction (0: no floor). A model answering whole images is answered once without
  either gate and each pair applied to its rows (exact: a gated answer is an empty mask); one
  answering by sliding windows, whose gate acts per window, is answered once per threshold of
  `WINDOW_THRESHOLDS`.

Both are written into the checkpoint's config.json (`existence_threshold`, `size_floors`,
`size_floor_fraction`); the weights are not touched. Training the run further writes new
checkpoints without them: calibrate again.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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
#: the existence thresholds tried (a model with the existence head)
THRESHOLDS: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
#: those tried for a model answering by sliding windows: one evaluation each
WINDOW_THRESHOLDS: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5)


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


def best_row(table: Sequence[dict[str, float]]) -> dict[str, float]:
    """The row of `score_fractions`' table with the highest score (the smallest fraction
    among equals)."""
    return max(table, key=lambda r: (r["score"], -r["fraction"]))


def best_fraction(table: Sequence[dict[str, float]]) -> float:
    """The fraction of the highest score (the smallest one among equals)."""
    return best_row(table)["fraction"]


def gated_rows(rows: Sequence[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """`rows` answered without the existence gate, as the gate at `threshold` answers them:
    an answer whose existence probability is below it is empty (its Dice 1 when its target
    is absent, else 0). Rows without an existence probability (NaN) are kept as they are."""
    out = []
    for row in rows:
        if row["existence"] < threshold and row["pred_area"] > 0:  # NaN < t is False
            absent = row["size"] == "absent"
            row = {**row, "pred_area": 0.0, "pred_pixels": 0, "intersection": 0,
                   "dice": 1.0 if absent else 0.0}
        out.append(row)
    return out


@dataclass
class Calibration:
    """The gates chosen: the floor and (a model with the existence head) the existence
    threshold; `thresholds`, per threshold tried, its best fraction and that pair's figures;
    `table`, the fractions at the chosen threshold; the validation items scored at the chosen
    threshold without a floor (`rows`: evaluate's per-item rows)."""

    floor: SizeFloor
    table: list[dict[str, float]]
    percentile: float
    rows: list[dict[str, Any]]
    existence_threshold: float | None = None
    thresholds: list[dict[str, float]] = field(default_factory=list)

    @property
    def n_val(self) -> int:
        return len(self.rows)

    @property
    def n_absent(self) -> int:
        return sum(r["size"] == "absent" for r in self.rows)


def calibrate_gates(
    model: nn.Module, cfg: TrainConfig, *, fractions: Sequence[float] = FRACTIONS,
    thresholds: Sequence[float] | None = None, percentile: float = PERCENTILE,
    batch_size: int = 8, progress: bool = True,
) -> Calibration:
    """Sizes from the training items, and the existence threshold and floor fraction from the
    validation items, of the run that `cfg` (its config.yaml) describes. `thresholds`: those
    tried when `model` has the existence head (None: THRESHOLDS, or WINDOW_THRESHOLDS for a
    windowed model). The model is not changed (`with_calibration` applies the result)."""
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
    has_head = bool(getattr(config, "existence_head", False))
    if thresholds is None:
        thresholds = WINDOW_THRESHOLDS if windows is not None else THRESHOLDS
    if has_head and (not thresholds or any(not 0 <= t <= 1 for t in thresholds)):
        raise ValueError(f"thresholds must lie in [0, 1], at least one, got {list(thresholds)}")

    def answered(threshold: float) -> list[dict[str, Any]]:
        result = evaluate(model, Subset(base, val_idx), seed=seed, batch_size=batch_size,
                          size_floor=False, progress=progress, windows=windows,
                          existence_threshold=threshold)
        return result.samples

    if not has_head:
        rows = answered(0.0)
        table = score_fractions(rows, sizes, fractions)
        return Calibration(SizeFloor(sizes, best_fraction(table)), table, percentile, rows)
    ungated = answered(0.0) if windows is None else None
    tried = []
    for threshold in sorted(thresholds):
        rows = gated_rows(ungated, threshold) if ungated is not None else answered(threshold)
        table = score_fractions(rows, sizes, fractions)
        tried.append(({"threshold": threshold, **best_row(table)}, table, rows))
    chosen, table, rows = max(tried, key=lambda t: (t[0]["score"], -t[0]["threshold"]))
    return Calibration(SizeFloor(sizes, chosen["fraction"]), table, percentile, rows,
                       existence_threshold=chosen["threshold"],
                       thresholds=[t[0] for t in tried])


def with_calibration(model: Any, floor: SizeFloor,
                     existence_threshold: float | None = None) -> None:
    """Give `model` (BoltzFormer or the U-Net expert: a dataclass `config` with the size
    floor's two fields) the floor and, when given, the existence threshold."""
    values: dict[str, Any] = {"size_floors": dict(floor.sizes),
                              "size_floor_fraction": floor.fraction}
    if existence_threshold is not None:
        values["existence_threshold"] = existence_threshold
    model.config = replace(model.config, **values)


def write_calibration(checkpoint: Path, floor: SizeFloor,
                      existence_threshold: float | None = None) -> Path:
    """Write the floor (and the existence threshold, when given) into the checkpoint folder's
    config.json (replaced atomically; every other setting and the weights as they were), and
    its model card again to match (`publish.refresh_card`) -> the config's path."""
    path = checkpoint / CONFIG_FILE
    values = json.loads(path.read_text(encoding="utf-8"))
    values.update(size_floors=dict(floor.sizes), size_floor_fraction=floor.fraction)
    if existence_threshold is not None:
        values["existence_threshold"] = existence_threshold
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    refresh_card(checkpoint)
    return path


def format_table(cal: Calibration) -> str:
    """The calibration's tables in Markdown, the choices marked: the existence thresholds
    (each with its best floor), then the floor's fractions at the chosen threshold."""
    lines: list[str] = []
    if cal.thresholds:
        lines += [f"Existence threshold on {cal.n_val} validation items ({cal.n_absent} "
                  "absent), each with its best size floor:", "",
                  "| existence threshold | floor fraction | score | absent painted | "
                  "present Dice |", "|---:|---:|---:|---:|---:|"]
        for row in cal.thresholds:
            mark = " (chosen)" if row["threshold"] == cal.existence_threshold else ""
            lines.append(f"| {row['threshold']:g}{mark} | {row['fraction']:g} | "
                         f"{100 * row['score']:.2f} | {100 * row['absent_painted']:.1f} % | "
                         f"{100 * row['present_dice']:.2f} |")
        lines.append("")
    at = ("" if cal.existence_threshold is None
          else f" (existence threshold {cal.existence_threshold:g})")
    lines += [f"Size floor on {cal.n_val} validation items ({cal.n_absent} absent){at}: a "
              f"fraction of each target's {cal.percentile:g}th-percentile training size.", "",
              "| fraction | score | absent painted | present Dice |", "|---:|---:|---:|---:|"]
    for row in cal.table:
        mark = " (chosen)" if row["fraction"] == cal.floor.fraction else ""
        lines.append(f"| {row['fraction']:g}{mark} | {100 * row['score']:.2f} | "
                     f"{100 * row['absent_painted']:.1f} % | {100 * row['present_dice']:.2f} |")
    return "\n".join(lines) + "\n"


def calibrate_run(run_dir: str | Path, *, data: str | Path | None = None,
                  fractions: Sequence[float] = FRACTIONS,
                  thresholds: Sequence[float] | None = None, percentile: float = PERCENTILE,
                  batch_size: int = 8, device: str = "auto", dry_run: bool = False,
                  progress: bool = True) -> str:
    """`boltzformer calibrate`: a training run's checkpoint (best/, else last/) calibrated on
    its validation items (`data`: its data folder, if it has moved) and, unless `dry_run`,
    its existence threshold and floor written into the checkpoint's config.json. Returns the
    tables and the choice, as the verb prints them."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"--percentile must be in [0, 100], got {percentile}")
    if thresholds is not None and (not thresholds or any(not 0 <= t <= 1 for t in thresholds)):
        raise ValueError(f"--thresholds must lie in [0, 1], got {list(thresholds)}")
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
    cal = calibrate_gates(model, cfg, fractions=fractions, thresholds=thresholds,
                          percentile=percentile, batch_size=batch_size, progress=progress)
    chosen = (f"fraction {cal.floor.fraction:g}" if cal.existence_threshold is None else
              f"existence threshold {cal.existence_threshold:g} and fraction "
              f"{cal.floor.fraction:g}")
    if dry_run:
        return format_table(cal) + f"{chosen} chosen; nothing written (--dry-run)\n"
    path = write_calibration(checkpoint, cal.floor, cal.existence_threshold)
    return format_table(cal) + f"{chosen} chosen; written into {path}\n"
