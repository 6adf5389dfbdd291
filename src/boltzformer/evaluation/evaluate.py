"""Evaluation: Dice per sample, aggregated like the paper's Tables 1 and 2, and a report.

Conventions (all documented in docs/training.md):
- A prediction is `sigmoid(logits) > threshold` (0.5) at the data set's image size. With
  `windows` (a model whose config has `window_size` > 0, on items at their own size,
  `BiomedParseDataset(image_size=None)`), each image's prompts are answered together by
  sliding windows (`inference/windowed.py`: existence is the max over windows, the size
  floor and the score gate judge the blend) and scored at the masks' own resolution.
- `dice(pred, gt) = 2|P∩G| / (|P| + |G|)`; when both are empty it is 1 (a correct "nothing
  here"). A target is *present* when its mask has a pixel, *absent* otherwise.
- Dice statistics cover present targets. Absent targets are counted separately: an empty
  prediction is correct, anything else a false positive; their false-positive rate and mean
  predicted area (share of the image) are reported. A model with an existence output
  (`existence_logits`, BoltzFormer's existence head) answers "absent" below 0.5 with an
  empty mask; its probability is each row's `existence`, scored over all items (present =
  positive) by AUROC (ties count half) and accuracy at 0.5. Each row's `mask_score` is the
  answer's own confidence before the head and the size floor: the mean probability over the
  pixels the model's mask paints (Mask2Former's mask score; 0 when it paints none); with
  `min_score` > 0 an answer scored below it is an empty mask (`modeling.existence.score_gate`).
- Failure: a present target that the prediction misses completely (no overlapping pixel).
- Grounding (`grounding.py`): which of the image's annotated targets each prediction overlaps
  most (prompt accuracy, confusion) and how alike an image's predictions for different
  prompts are (hedging).
- Size strata (Table 2): small if the object covers < 1% of the original image, else large;
  tiny (< 0.1%) is a part of small, reported beside it (small keeps the paper's meaning).
  Per data set, each stratum's Dice mean and std (population std, ddof=0); across data sets,
  the average of the per-data-set values weighted by the stratum's share of that data set's
  present targets ("all": every data set weighs 1). Means and stds are weighted alike.
- Objects and volumes (`objects.py`): detection precision, recall, F1 and panoptic quality
  of each target's objects at the mask's original size, and 3D Dice of the cases of data
  cut from volumes.
- The model samples its attention at random: a torch.Generator seeded with `seed` drives it,
  so a run is reproducible given the seed (and the batch size, which groups the draws).
- Models are called as `model(images, prompts, image_index=..., generator=...)`: the batch's
  distinct images once, and for each prompt the index of its image. A model that declares
  `takes_targets = True` (BoltzFormer, whose "labels" text encoder reads target names, and the
  U-Net expert, one output per target) is also given each item's target name:
  `targets=batch["target"]`.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from boltzformer.data import BiomedParseDataset, collate
from boltzformer.evaluation.grounding import GroundingCollector
from boltzformer.evaluation.objects import ObjectCollector
from boltzformer.evaluation.plots import plot_confusion, plot_dice_vs_size
from boltzformer.evaluation.report import json_safe, render_markdown
from boltzformer.inference.windowed import (
    Gates,
    WindowSettings,
    blend_answers,
    model_answer,
    window_settings,
)
from boltzformer.modeling.existence import (
    EXISTENCE_THRESHOLD,
    check_min_score,
    gate_logits,
    mask_score,
    model_existence_threshold,
    score_gate,
)
from boltzformer.modeling.size_floor import answer_floor

SMALL_AREA = 0.01  # the paper's small/large threshold: 1% of the image area
TINY_AREA = 0.001  # the tiny sub-stratum of small: 0.1% of the image area
STRATA = ("tiny", "small", "large", "all")
CSV_COLUMNS: tuple[str, ...] = (
    "index", "dataset", "image_file", "mask_file", "target", "modality", "site", "prompt",
    "area", "size", "gt_pixels", "pred_pixels", "pred_area", "intersection", "dice", "missed",
    "false_positive", "existence", "mask_score", "best_match", "best_match_dice", "gt_objects",
    "pred_objects", "matched_objects",
)


# --- per-sample metrics ------------------------------------------------------------------------
def dice(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor) -> float:
    """Dice of two boolean masks of one shape; 1.0 when both are empty (a correct rejection)."""
    p = torch.as_tensor(pred).bool()
    g = torch.as_tensor(gt).bool()
    if p.shape != g.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and ground truth {tuple(g.shape)} differ")
    total = int(p.sum()) + int(g.sum())
    return 1.0 if total == 0 else 2.0 * int((p & g).sum()) / total


def dice_batch(pred: Tensor, gt: Tensor) -> Tensor:
    """Dice per sample of boolean (B, ...) masks -> (B,) float, 1 where both are empty."""
    p, g = pred.flatten(1).float(), gt.flatten(1).float()
    inter, total = (p * g).sum(1), p.sum(1) + g.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


def size_group(area: float, gt_pixels: int, small: float = SMALL_AREA) -> str:
    """"absent" (empty mask), "small" (area fraction < `small`) or "large"."""
    if gt_pixels == 0:
        return "absent"
    return "small" if area < small else "large"


# --- aggregation -----------------------------------------------------------------------------
def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """n, mean, std (population) of Dice values; failure rate = share of exact zeros."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, "dice_mean": math.nan, "dice_std": math.nan, "failure_rate": math.nan}
    return {
        "n": int(arr.size),
        "dice_mean": float(arr.mean()),
        "dice_std": float(arr.std()),
        "failure_rate": float((arr == 0).mean()),
    }


def group_summary(rows: Iterable[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """`summarize` the Dice of present targets per value of `rows[i][key]` (sorted)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row["size"] != "absent":
            groups[str(row[key])].append(row["dice"])
    return {name: summarize(groups[name]) for name in sorted(groups)}


def in_stratum(row: dict[str, Any], stratum: str) -> bool:
    """Whether a present target's row belongs to a stratum: tiny (area < TINY_AREA, a part of
    small), small, large or all."""
    if stratum == "tiny":
        return row["area"] < TINY_AREA
    return stratum in ("all", row["size"])


def size_strata(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Table 2: per data set and stratum (tiny, small, large, all) the Dice summary and the
    stratum's share; `weighted` averages data sets weighted by that share."""
    per_dataset: dict[str, dict[str, Any]] = {}
    for name in sorted({r["dataset"] for r in rows if r["size"] != "absent"}):
        present = [r for r in rows if r["dataset"] == name and r["size"] != "absent"]
        strata = {}
        for stratum in STRATA:
            members = [r["dice"] for r in present if in_stratum(r, stratum)]
            strata[stratum] = {**summarize(members), "share": len(members) / len(present)}
        per_dataset[name] = strata
    weighted = {}
    for stratum in STRATA:
        parts = [d[stratum] for d in per_dataset.values() if d[stratum]["n"]]
        weights = np.array([p["share"] for p in parts])
        entry: dict[str, Any] = {"n": int(sum(p["n"] for p in parts)), "datasets": len(parts)}
        for stat in ("dice_mean", "dice_std", "failure_rate"):
            values = np.array([p[stat] for p in parts])
            entry[stat] = float(weights @ values / weights.sum()) if parts else math.nan
        weighted[stratum] = entry
    return {"threshold": SMALL_AREA, "tiny_threshold": TINY_AREA, "per_dataset": per_dataset,
            "weighted": weighted}


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random
    negative, ties counted half (Mann-Whitney); NaN without both classes."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)  # ties share their mean rank
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def existence_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The existence output over every item with one (present = positive): n, AUROC and
    accuracy at 0.5; None when the model gives no existence probability."""
    scored = [r for r in rows if math.isfinite(r.get("existence", math.nan))]
    if not scored:
        return None
    present = [r["size"] != "absent" for r in scored]
    said = [r["existence"] >= EXISTENCE_THRESHOLD for r in scored]
    return {
        "n": len(scored),
        "n_absent": present.count(False),
        "auroc": auroc([r["existence"] for r in scored], present),
        "accuracy": float(np.mean([p == s for p, s in zip(present, said)])),
    }


def absent_summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Absent targets: how many were correctly left empty, how many got a false positive
    (any predicted pixel), the mean predicted area (share of the image) and, when the model
    has an existence output, its AUROC and accuracy over all items (`existence`)."""
    rows = list(rows)
    absent = [r for r in rows if r["size"] == "absent"]
    n, fp = len(absent), sum(bool(r["false_positive"]) for r in absent)
    by_target: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "false_positive": 0})
    for r in absent:
        by_target[r["target"]]["n"] += 1
        by_target[r["target"]]["false_positive"] += int(bool(r["false_positive"]))
    return {
        "n": n,
        "correct": n - fp,
        "false_positive": fp,
        "correct_rate": (n - fp) / n if n else math.nan,
        "false_positive_rate": fp / n if n else math.nan,
        "mean_pred_area": float(np.mean([r["pred_area"] for r in absent])) if n else math.nan,
        "existence": existence_summary(rows),
        "by_target": {k: by_target[k] for k in sorted(by_target)},
    }


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every aggregate of the report from per-sample rows (see the module docstring)."""
    present = [r["dice"] for r in rows if r["size"] != "absent"]
    return {
        "n_samples": len(rows),
        "n_present": len(present),
        "n_absent": len(rows) - len(present),
        "overall": summarize(present),
        "size_strata": size_strata(rows),
        "by_dataset": group_summary(rows, "dataset"),
        "by_modality": group_summary(rows, "modality"),
        "by_target": group_summary(rows, "target"),
        "absent": absent_summary(rows),
    }


# --- running a model --------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Per-sample rows (keys: CSV_COLUMNS), the aggregates, and what produced them."""

    samples: list[dict[str, Any]]
    metrics: dict[str, Any]
    seed: int
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)


def scoring_split(config: Any, root: str | Path, split: str = "test"
                  ) -> tuple[BiomedParseDataset, WindowSettings | None]:
    """A data split read as a model with `config` is scored on it, and the model's windows:
    at the images' own size with its sliding windows (a model trained on crops), else
    resized to its `image_size` and no windows."""
    windows = window_settings(config)
    size = None if windows is not None else config.image_size
    return BiomedParseDataset(root, split, image_size=size, train=False), windows


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    seed: int = 0,
    batch_size: int = 8,
    threshold: float = 0.5,
    existence_threshold: float | None = None,
    workers: int = 0,
    progress: bool = True,
    size_floor: bool = True,
    min_score: float = 0.0,
    windows: WindowSettings | None = None,
) -> EvalResult:
    """Predict every item of `dataset` (BiomedParseDataset items) and score it: Dice at the
    model's size, objects and volumes at the masks' original size (see `objects.py`).

    With the existence head, an answer whose existence probability is below
    `existence_threshold` (None: the model's config's, `model_existence_threshold`) is an
    empty mask (0: never, every prompt answered with its mask as
    by the paper's model); the existence figures are scored at EXISTENCE_THRESHOLD (0.5)
    whatever it is. With a size floor (BoltzFormer's `size_floor`, set by `boltzformer
    calibrate`), an answer smaller than its target's floor is an empty mask; `size_floor`
    False scores the answers without it. An answer whose `mask_score` is below `min_score`
    is an empty mask (0: never; the gate is off). With `windows` (`windowed.window_settings`
    of the model's config) each image is answered by sliding windows, its items together
    (`batch_size` is then unused; the windows go `windows.batch` at a time).

    The model runs in eval mode on its own device; its attention sampling draws from a
    generator seeded with `seed`, so the result is deterministic for a seed and batch size.
    A model that declares `takes_targets = True` gets the items' target names too.
    """
    existence_threshold = model_existence_threshold(model, existence_threshold)
    check_min_score(min_score)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    takes_targets = getattr(model, "takes_targets", False)
    floor = getattr(model, "size_floor", None) if size_floor else None
    loader = DataLoader(dataset, batch_size=batch_size if windows is None else 1,
                        shuffle=False, num_workers=workers, collate_fn=collate)
    gates = Gates(existence_threshold, min_score, floor, threshold)
    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    grounding = GroundingCollector(_items_per_image(dataset))
    objects = ObjectCollector(threshold)
    try:
        bar = tqdm(loader, desc="evaluate", unit="batch" if windows is None else "item",
                   disable=not progress)
        answers = (_answers(model, bar, gates, generator, takes_targets) if windows is None
                   else _window_answers(model, bar, gates, generator, takes_targets, windows))
        for batch, logits, exist, score in answers:
            prob = logits.sigmoid()
            pred = (prob > threshold).cpu()
            gt = batch["mask"] > 0.5
            batch_rows = score_batch(pred, gt, batch, start=len(rows), existence=exist,
                                     confidence=score)
            grounding.add(batch_rows, pred, gt)
            objects.add(batch_rows, prob, batch)
            rows.extend(batch_rows)
    finally:
        model.train(was_training)
    metrics = {**aggregate(rows), "grounding": grounding.finish(rows), **objects.finish()}
    return EvalResult(rows, metrics, seed=seed, threshold=threshold,
                      info={"existence_threshold": existence_threshold,
                            "size_floor_fraction": floor.fraction if floor else 0.0,
                            "min_score": min_score,
                            "window_size": windows.size if windows is not None else 0})


Answers = Iterator[tuple[dict[str, Any], Tensor, Tensor | None, Tensor]]


def _answers(model: torch.nn.Module, batches: Iterable[dict[str, Any]], gates: Gates,
             generator: torch.Generator, takes_targets: bool) -> Answers:
    """Per batch of items: (the batch, gated logits (B, 1, S, S), existence probability (B,)
    or None, mask score (B,) before any gate)."""
    device = next(model.parameters()).device
    for batch in batches:
        images, index = unique_images(batch)  # each image encoded once
        extra = {"targets": batch["target"]} if takes_targets else {}
        out = model(images.to(device), batch["prompt"], image_index=index.to(device),
                    generator=generator, **extra)
        exist = getattr(out, "existence_logits", None)  # absent: an empty mask
        score = mask_score(out.logits, gates.score_threshold)  # before any gate
        logits = gate_logits(out.logits.float(), exist, gates.existence_threshold)
        logits = answer_floor(logits, gates.floor, batch["prompt"], batch["target"])[0]
        if gates.min_score > 0:
            logits = score_gate(logits, score, gates.min_score)[0]
        yield batch, logits, None if exist is None else exist.sigmoid(), score


def _window_answers(model: torch.nn.Module, items: Iterable[dict[str, Any]], gates: Gates,
                    generator: torch.Generator, takes_targets: bool,
                    windows: WindowSettings) -> Answers:
    """As `_answers`, one image's consecutive items at a time (batches of 1 regrouped),
    answered by sliding windows at the image's own size (H, W)."""
    device = next(model.parameters()).device
    size = getattr(getattr(model, "config", None), "image_size", None)
    for group in _same_image(items):
        batch = collate([{k: v[0] for k, v in item.items()} for item in group])
        image = batch["image"][0].to(device)
        grid = windows.grid(image.shape[1], image.shape[2], size or windows.size)
        answer = model_answer(model, grid, grid.pixels(image), batch["prompt"],
                              targets=batch["target"] if takes_targets else None,
                              generator=generator)
        out = blend_answers(grid, answer, batch["prompt"], windows, gates,
                            targets=batch["target"])
        yield batch, out.logits[:, None], out.exists, out.score


def _same_image(items: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Batches of one item grouped while they share their image (data set, file, size)."""
    group: list[dict[str, Any]] = []
    for item in items:
        if group and not _same(group[0], item):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["dataset"], a["image_file"]) == (b["dataset"], b["image_file"]) and \
        a["image"].shape == b["image"].shape and torch.equal(a["image"], b["image"])


def _items_per_image(dataset: Dataset) -> dict[tuple[str, str], int] | None:
    """How many items each image has, when the data set lists its samples (so grounding can
    score an image as soon as its last item is predicted)."""
    samples, name = getattr(dataset, "samples", None), getattr(dataset, "name", None)
    if samples is None or name is None:
        return None
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for sample in samples:
        counts[(str(name), sample.image_file)] += 1
    return dict(counts)


def unique_images(batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """A batch's distinct images (N, 3, S, S) and the image of each item (B,) long, so each
    image is encoded once for all its prompts. Items are the same image when their data set,
    file name and pixels agree."""
    images = batch["image"]
    first: dict[tuple[str, str], list[int]] = {}
    keep: list[int] = []
    index: list[int] = []
    for i, key in enumerate(zip(batch["dataset"], batch["image_file"])):
        match = next((j for j in first.get(key, []) if torch.equal(images[keep[j]], images[i])),
                     None)
        if match is None:
            match = len(keep)
            keep.append(i)
            first.setdefault(key, []).append(match)
        index.append(match)
    return images[keep], torch.tensor(index, dtype=torch.long)


def score_batch(
    pred: Tensor, gt: Tensor, batch: dict[str, Any], *, start: int = 0,
    existence: Tensor | None = None, confidence: Tensor | None = None,
) -> list[dict[str, Any]]:
    """Rows for one batch: pred, gt boolean (B, 1, S, S); batch as `collate` returns it;
    existence (B,) the model's probability that each target is there, if it gives one;
    confidence (B,) each answer's `mask_score` before gating (NaN when not given)."""
    exist = [math.nan] * pred.shape[0] if existence is None else existence.float().tolist()
    score = [math.nan] * pred.shape[0] if confidence is None else confidence.float().tolist()
    pixels = pred[0].numel() if pred.shape[0] else 1
    inter = (pred & gt).flatten(1).sum(1).tolist()
    p_pix = pred.flatten(1).sum(1).tolist()
    g_pix = gt.flatten(1).sum(1).tolist()
    rows = []
    for i in range(pred.shape[0]):
        total = p_pix[i] + g_pix[i]
        group = size_group(float(batch["area"][i]), g_pix[i])
        rows.append(
            {
                "index": start + i,
                **{k: batch[k][i] for k in ("dataset", "image_file", "mask_file", "target",
                                            "modality", "site", "prompt")},
                "area": float(batch["area"][i]),
                "size": group,
                "gt_pixels": g_pix[i],
                "pred_pixels": p_pix[i],
                "pred_area": p_pix[i] / pixels,
                "intersection": inter[i],
                "dice": 1.0 if total == 0 else 2.0 * inter[i] / total,
                "missed": group != "absent" and inter[i] == 0,
                "false_positive": group == "absent" and p_pix[i] > 0,
                "existence": exist[i],
                "mask_score": score[i],
                "best_match": "",  # set by grounding
                "best_match_dice": math.nan,
                "gt_objects": "",  # set by ObjectCollector
                "pred_objects": "",
                "matched_objects": "",
            }
        )
    return rows


# --- the report ----------------------------------------------------------------------------------
def write_report(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write metrics.json, per_sample.csv, dice_vs_size.png, confusion.png (when grounding
    was measured) and report.md into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "per_sample": out / "per_sample.csv",
        "scatter": out / "dice_vs_size.png",
        "report": out / "report.md",
    }
    payload = {"seed": result.seed, "threshold": result.threshold, **result.info,
               **result.metrics}
    paths["metrics"].write_text(json.dumps(json_safe(payload), indent=2) + "\n")
    with paths["per_sample"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in CSV_COLUMNS} for row in result.samples)
    plot_dice_vs_size(result.samples, paths["scatter"], small=SMALL_AREA)
    if result.metrics.get("grounding", {}).get("n"):
        paths["confusion"] = plot_confusion(result.metrics["grounding"]["confusion"],
                                            out / "confusion.png")
    settings = {**result.info, "seed": result.seed, "threshold": result.threshold}
    report = render_markdown(result.metrics, settings, scatter=paths["scatter"].name)
    paths["report"].write_text(report)
    return paths
