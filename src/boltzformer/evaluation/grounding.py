"""Grounding: does a prediction follow its prompt, or hedge over the image's objects?

Dice says how well a prediction covers its target; it does not say *what* the model found when
it misses. Grounding compares each prediction with every annotated target of its image:

- **best match** of an (image, prompt) whose target is present: the image's present target
  whose mask the prediction overlaps most (highest Dice; the prompted target wins a tie), or
  `"none"` when the prediction overlaps no annotated target.
- **prompt accuracy**: the share of those pairs whose best match is the prompted target.
- **confusion**: counts of prompted target × best match.
- **hedging**: the mean Dice between the predictions of one image for two different targets
  (pairs where at least one prediction is non-empty): near 0 when each prompt gets its own
  object, 1 when every prompt gets the same mask. `hedging_gt` is the same figure for the
  ground-truth masks, what a perfect model scores (above 0 only where objects overlap, e.g. a
  tumour inside its liver).

`GroundingCollector` gathers the masks of each image's items as evaluation goes (packed, one
bit per pixel) and scores an image as soon as all its items are in, so memory holds only the
images still open.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

NONE = "none"
ImageKey = tuple[str, str]  # (data set, image file)


def image_key(row: dict[str, Any]) -> ImageKey:
    return str(row["dataset"]), str(row["image_file"])


def _pair_dice(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks a (n, P), b (m, P) as float32 0/1 -> Dice (n, m) and |a_i| + |b_j| (n, m)."""
    inter = a @ b.T
    total = a.sum(1)[:, None] + b.sum(1)[None, :]
    return np.where(total > 0, 2 * inter / np.maximum(total, 1), 0.0), total


def score_image(rows: Sequence[dict[str, Any]], preds: np.ndarray, gts: np.ndarray
                ) -> tuple[list[float], list[float]]:
    """Ground one image's items: rows (n dicts with "target" and "size"), preds and gts
    (n, P) bool. Sets each row's "best_match" and "best_match_dice" (present targets; "" and
    NaN for absent ones) and returns the Dice of each hedging pair, for the predictions and
    for the ground truths."""
    p, g = preds.astype(np.float32), gts.astype(np.float32)
    present = [i for i, r in enumerate(rows) if r["size"] != "absent"]
    overlap, _ = _pair_dice(p, g[present]) if present else (np.zeros((len(rows), 0)), None)
    for i, row in enumerate(rows):
        row["best_match"], row["best_match_dice"] = "", math.nan
        if row["size"] == "absent":
            continue
        scores = overlap[i]
        best = int(scores.argmax())
        own = present.index(i)
        if scores[own] >= scores[best]:
            best = own
        row["best_match_dice"] = float(scores[best])
        row["best_match"] = rows[present[best]]["target"] if scores[best] > 0 else NONE
    hedge_pred, pred_total = _pair_dice(p, p)
    hedge_gt, gt_total = _pair_dice(g, g)
    pairs_pred, pairs_gt = [], []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if rows[i]["target"] == rows[j]["target"]:
                continue
            if pred_total[i, j] > 0:
                pairs_pred.append(float(hedge_pred[i, j]))
            if gt_total[i, j] > 0:
                pairs_gt.append(float(hedge_gt[i, j]))
    return pairs_pred, pairs_gt


class GroundingCollector:
    """Collect (row, prediction, ground truth) per image; score each image once complete.

    `items_per_image` (image key -> number of items), when known, lets an image be scored as
    soon as its last item arrives; without it every image waits for `finish`.
    """

    def __init__(self, items_per_image: dict[ImageKey, int] | None = None) -> None:
        self.expected = items_per_image or {}
        self.open: dict[ImageKey, list[tuple[dict[str, Any], np.ndarray, np.ndarray]]] = (
            defaultdict(list))
        self.pairs_pred: list[float] = []
        self.pairs_gt: list[float] = []
        self._shape: tuple[int, ...] = (0,)

    def add(self, rows: Sequence[dict[str, Any]], pred: Tensor, gt: Tensor) -> None:
        """rows of one batch and their masks pred, gt (B, 1, H, W) bool."""
        shape = self._shape = tuple(pred.shape[1:])
        for row, p, g in zip(rows, pred.flatten(1).numpy(), gt.flatten(1).numpy()):
            key = image_key(row)
            self.open[key].append((row, np.packbits(p), np.packbits(g)))
            if len(self.open[key]) == self.expected.get(key, -1):
                self._score(key, shape)

    def _score(self, key: ImageKey, shape: tuple[int, ...]) -> None:
        items = self.open.pop(key)
        size = int(np.prod(shape))
        preds = np.stack([np.unpackbits(p, count=size) for _, p, _ in items]).astype(bool)
        gts = np.stack([np.unpackbits(g, count=size) for _, _, g in items]).astype(bool)
        pred_pairs, gt_pairs = score_image([r for r, _, _ in items], preds, gts)
        self.pairs_pred += pred_pairs
        self.pairs_gt += gt_pairs

    def finish(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Score the images still open; the grounding summary of all `rows`."""
        for key in list(self.open):
            self._score(key, self._shape)
        return summarize_grounding(rows, self.pairs_pred, self.pairs_gt)


def summarize_grounding(rows: Sequence[dict[str, Any]], pairs_pred: Sequence[float] = (),
                        pairs_gt: Sequence[float] = ()) -> dict[str, Any]:
    """Prompt accuracy (all and per prompted target), confusion and hedging from rows whose
    "best_match" is set (see `score_image`)."""
    scored = [r for r in rows if r["size"] != "absent" and r.get("best_match")]
    confusion: dict[str, Counter] = defaultdict(Counter)
    for r in scored:
        confusion[r["target"]][r["best_match"]] += 1
    by_target = {
        t: {"n": sum(c.values()), "accuracy": c[t] / sum(c.values()),
            "most_common_wrong": next((m for m, _ in c.most_common() if m != t), None)}
        for t, c in sorted(confusion.items())
    }
    correct = sum(r["best_match"] == r["target"] for r in scored)
    return {
        "n": len(scored),
        "prompt_accuracy": correct / len(scored) if scored else math.nan,
        "by_target": by_target,
        "confusion": {t: dict(sorted(c.items())) for t, c in sorted(confusion.items())},
        "hedging": float(np.mean(pairs_pred)) if len(pairs_pred) else math.nan,
        "hedging_pairs": len(pairs_pred),
        "hedging_gt": float(np.mean(pairs_gt)) if len(pairs_gt) else math.nan,
    }
