"""Object-level metrics (detection, panoptic quality) and 3D Dice of slices stacked into volumes.

Conventions (documented in docs/training.md, "Objects" and "Volumes"):
- Ground-truth objects: the data set's instance map where it has one
  (`<split>_instances/<mask file>`, 16-bit, one id per object), else the connected components
  (8-connectivity) of the mask. Predicted objects: the connected components of the prediction.
- Scored at the mask's original size: the model's probabilities are resized there (bilinear,
  antialiased when shrinking, as `Predictor.predict` does) and thresholded. Items without a
  mask file (other data sets) are scored at the model's size.
- A predicted and a ground-truth object match when IoU >= 0.5, one to one. Above 0.5 a match
  is unique; at exactly 0.5 an object can tie with two halves of itself, and the pair with the
  lower ground-truth id, then the lower predicted id (raster order), wins.
- Counts are summed over all images of a group (dataset-level, not a mean of per-image
  scores): precision TP/(TP+FP), recall TP/(TP+FN), F1 = DQ = TP/(TP + FP/2 + FN/2),
  SQ = mean IoU of the matched pairs, PQ = DQ x SQ (Kirillov et al. 2019; Graham et al. 2019).
- Size bins by an object's own area as a share of the image: matched and missed ground-truth
  objects (TP, FN, their IoU) by theirs, unmatched predictions (FP) by theirs.
- 3D Dice per (data set, case, target) for slices cut from volumes: 2|P∩G| / (|P| + |G|) on
  the counts summed over the case's slices (the Dice of the stacked volumes).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch import Tensor

from boltzformer.data import DataError, read_mask

IOU_MATCH = 0.5
BIN_EDGES = (1e-4, 1e-3, 1e-2)  # an object's share of the image: 0.01 %, 0.1 %, 1 %
BIN_NAMES = ("<0.01%", "0.01-0.1%", "0.1-1%", ">=1%")
COUNTS = ("tp", "fp", "fn", "iou_sum")  # rows of a (4, len(BIN_NAMES)) counts array
_EIGHT = np.ones((3, 3), dtype=bool)
_DENSE_PAIRS = 1 << 22  # (gt, pred) id pairs up to which overlaps are counted in one array
_NO_LIMIT = 1 << 62  # masks were checked against the data set's pixel limit when it was built


# --- objects of one image ---------------------------------------------------------------------
def label_objects(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (8-connectivity) of a boolean (H, W) mask: int32 labels 1..n."""
    labels, n = ndimage.label(mask, structure=_EIGHT)
    return labels.astype(np.int32, copy=False), int(n)


def relabel(instances: np.ndarray) -> tuple[np.ndarray, int]:
    """An instance map (H, W) of any ids (0 = background) as consecutive int32 ids 1..n."""
    values, inverse = np.unique(instances, return_inverse=True)
    labels = inverse.reshape(instances.shape).astype(np.int32)
    if values[0] != 0:
        return labels + 1, len(values)
    return labels, len(values) - 1


def match_objects(gt: np.ndarray, n_gt: int, pred: np.ndarray, n_pred: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matches at IoU >= 0.5 of label maps gt, pred (H, W) (ids 1..n, 0 = none):
    matched ground-truth ids (k,), predicted ids (k,) and their IoU (k,)."""
    gt_area = np.bincount(gt.ravel(), minlength=n_gt + 1)
    pred_area = np.bincount(pred.ravel(), minlength=n_pred + 1)
    return _match(gt, gt_area, pred, pred_area)


def _match(gt: np.ndarray, gt_area: np.ndarray, pred: np.ndarray, pred_area: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`match_objects` given each label's pixel count (n + 1,), background first."""
    n_gt, n_pred = len(gt_area) - 1, len(pred_area) - 1
    overlap = (gt > 0) & (pred > 0)
    codes = gt[overlap].astype(np.int64) * (n_pred + 1) + pred[overlap]
    if (n_gt + 1) * (n_pred + 1) <= _DENSE_PAIRS:  # counting beats sorting the pixels
        counts = np.bincount(codes, minlength=(n_gt + 1) * (n_pred + 1))
        pairs = np.flatnonzero(counts)
        inter = counts[pairs]
    else:
        pairs, inter = np.unique(codes, return_counts=True)
    g, p = np.divmod(pairs, n_pred + 1)
    union = gt_area[g] + pred_area[p] - inter
    keep = 2 * inter >= union  # IoU >= 0.5, exactly (integers)
    g, p, iou = g[keep], p[keep], inter[keep] / union[keep]
    chosen: list[int] = []
    used_g: set[int] = set()
    used_p: set[int] = set()
    for k in np.lexsort((p, g, -iou)):  # best IoU first; ties (only at 0.5) by ids
        if g[k] not in used_g and p[k] not in used_p:
            chosen.append(int(k))
            used_g.add(int(g[k]))
            used_p.add(int(p[k]))
    pick = np.array(chosen, dtype=np.int64)
    return g[pick], p[pick], iou[pick]


def size_bins(area: np.ndarray) -> np.ndarray:
    """The size bin (0..3, see BIN_NAMES) of area fractions (n,)."""
    return np.digitize(area, BIN_EDGES)


def score_objects(gt: np.ndarray, n_gt: int, pred: np.ndarray, n_pred: int) -> np.ndarray:
    """Counts (4, 4) of one image: rows COUNTS (tp, fp, fn, iou_sum), columns BIN_NAMES."""
    gt_area = np.bincount(gt.ravel(), minlength=n_gt + 1)
    pred_area = np.bincount(pred.ravel(), minlength=n_pred + 1)
    g, p, iou = _match(gt, gt_area, pred, pred_area)
    gt_bin = size_bins(gt_area[1:] / gt.size)
    pred_bin = size_bins(pred_area[1:] / gt.size)
    nb = len(BIN_NAMES)
    missed = np.ones(n_gt, dtype=bool)
    missed[g - 1] = False
    spurious = np.ones(n_pred, dtype=bool)
    spurious[p - 1] = False
    return np.stack([
        np.bincount(gt_bin[g - 1], minlength=nb),
        np.bincount(pred_bin[spurious], minlength=nb),
        np.bincount(gt_bin[missed], minlength=nb),
        np.bincount(gt_bin[g - 1], weights=iou, minlength=nb),
    ]).astype(np.float64)


def object_stats(counts: np.ndarray) -> dict[str, float | int]:
    """Detection and panoptic quality of summed counts (4,) in COUNTS order."""
    tp, fp, fn, iou_sum = (float(c) for c in counts)

    def ratio(a: float, b: float) -> float:
        return a / b if b else math.nan

    dq = ratio(tp, tp + fp / 2 + fn / 2)
    sq = ratio(iou_sum, tp)
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn), "f1": dq, "dq": dq, "sq": sq,
            "pq": dq * sq if tp else (0.0 if fp + fn else math.nan)}


def summarize_objects(records: Sequence[tuple[str, str, np.ndarray]]) -> dict[str, Any]:
    """Aggregate (dataset, target, counts (4, 4)) records: overall, per data set and target,
    each with its stats and `by_size` (stats per bin)."""

    def entry(counts: np.ndarray) -> dict[str, Any]:
        return {**object_stats(counts.sum(1)),
                "by_size": {name: object_stats(counts[:, b]) for b, name in enumerate(BIN_NAMES)}}

    groups: dict[str, dict[str, np.ndarray]] = {"by_dataset": {}, "by_target": {}}
    total = np.zeros((len(COUNTS), len(BIN_NAMES)))
    for dataset, target, counts in records:
        total += counts
        for key, name in (("by_dataset", dataset), ("by_target", target)):
            groups[key][name] = groups[key].get(name, 0) + counts
    return {
        "iou_threshold": IOU_MATCH,
        "aggregation": "dataset-level: TP, FP, FN and IoUs summed over the images of a group",
        "size_bins": {name: [lo, hi] for name, lo, hi in
                      zip(BIN_NAMES, (0.0, *BIN_EDGES), (*BIN_EDGES, 1.0), strict=True)},
        "n_images": len(records),
        "overall": entry(total),
        **{key: {name: entry(groups[key][name]) for name in sorted(groups[key])}
           for key in groups},
    }


# --- volumes ----------------------------------------------------------------------------------
def summarize_volumes(counts: dict[tuple[str, str, str], np.ndarray]) -> dict[str, Any]:
    """3D Dice from {(dataset, case, target): [intersection, pred, gt, slices]}: per case and
    target, and per target the mean and population std over the cases where it is present."""
    cases = []
    per_target: dict[str, list[float]] = defaultdict(list)
    for (dataset, case, target), (inter, pred, gt, slices) in sorted(counts.items()):
        total = pred + gt
        value = 1.0 if total == 0 else 2.0 * inter / total
        cases.append({"dataset": dataset, "case": case, "target": target, "slices": int(slices),
                      "gt_voxels": int(gt), "pred_voxels": int(pred), "dice": value})
        if gt > 0:
            per_target[target].append(value)
    return {
        "n_cases": len({(c["dataset"], c["case"]) for c in cases}),
        "cases": cases,
        "by_target": {t: {"n": len(v), "dice_mean": float(np.mean(v)),
                          "dice_std": float(np.std(v))} for t, v in sorted(per_target.items())},
    }


# --- collecting over an evaluation --------------------------------------------------------------
def read_instances(path: str | Path) -> np.ndarray:
    """An instance map (H, W) int32 from a 16-bit (or 8-bit) grayscale PNG; `DataError` if not."""
    try:
        with Image.open(path) as image:
            mode, ids = image.mode, np.asarray(image).astype(np.int32)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable instance map ({err})") from err
    if mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
        raise DataError(f"{path}: an instance map must be a grayscale image (16-bit, one id "
                        f"per object), not mode {mode}")
    return ids


def _resized(prob: Tensor, size: tuple[int, int]) -> Tensor:
    """Probabilities (1, h, w) resized to `size` like `Predictor.predict` does."""
    if tuple(prob.shape[-2:]) == size:
        return prob[0]
    shrink = size[0] < prob.shape[-2] or size[1] < prob.shape[-1]
    return F.interpolate(prob[None], size=size, mode="bilinear", align_corners=False,
                         antialias=shrink)[0, 0]


class ObjectCollector:
    """Scores evaluation batches object by object and sums 3D Dice counts; `finish` returns
    {"objects": ..., "volumes": ...} (volumes None when no item names its volume)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.records: list[tuple[str, str, np.ndarray]] = []
        self.volumes: dict[tuple[str, str, str], np.ndarray] = {}
        self.original_size = 0  # items scored at their mask's original size

    def add(self, rows: list[dict[str, Any]], prob: Tensor, batch: dict[str, Any]) -> None:
        """Score a batch: rows as `score_batch` made them (each gets gt_objects, pred_objects
        and matched_objects), prob (B, 1, S, S) the model's probabilities, batch from
        `collate` (items with "mask_path" are scored at their original size)."""
        for i, row in enumerate(rows):
            mask_path = batch.get("mask_path", [""] * len(rows))[i]
            if mask_path:
                gt_mask = read_mask(mask_path, max_pixels=_NO_LIMIT)
                pred = (_resized(prob[i].float(), gt_mask.shape) > self.threshold).cpu().numpy()
                self.original_size += 1
            else:
                gt_mask = batch["mask"][i, 0].numpy() > 0.5
                pred = (prob[i, 0].float() > self.threshold).cpu().numpy()
            instances_path = batch.get("instances_path", [""] * len(rows))[i]
            if instances_path:
                instances = read_instances(instances_path)
                if instances.shape != gt_mask.shape:
                    raise DataError(f"{instances_path}: instance map is {instances.shape[1]}x"
                                    f"{instances.shape[0]} but its mask is {gt_mask.shape[1]}x"
                                    f"{gt_mask.shape[0]}")
                gt, n_gt = relabel(instances)
            else:
                gt, n_gt = label_objects(gt_mask)
            labels, n_pred = label_objects(pred)
            counts = score_objects(gt, n_gt, labels, n_pred)
            self.records.append((row["dataset"], row["target"], counts))
            row.update(gt_objects=n_gt, pred_objects=n_pred, matched_objects=int(counts[0].sum()))
            volume = batch.get("volume", [""] * len(rows))[i]
            if volume:
                key = (row["dataset"], volume, row["target"])
                voxels = np.array([(pred & gt_mask).sum(), pred.sum(), gt_mask.sum(), 1],
                                  dtype=np.int64)
                self.volumes[key] = self.volumes.get(key, 0) + voxels

    def finish(self) -> dict[str, Any]:
        scored_at = ("original" if self.original_size == len(self.records) else
                     "model" if self.original_size == 0 else "mixed")
        return {"objects": {**summarize_objects(self.records), "scored_at": scored_at},
                "volumes": summarize_volumes(self.volumes) if self.volumes else None}
