"""Grounding metrics (prompt accuracy, confusion, hedging) on hand-made cases with known answers."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import evaluate, write_report
from boltzformer.evaluation.grounding import (
    NONE,
    GroundingCollector,
    score_image,
    summarize_grounding,
)


def _masks(size: int = 8) -> dict[str, np.ndarray]:
    top_left = np.zeros((size, size), bool)
    top_left[:3, :3] = True
    bottom_right = np.zeros((size, size), bool)
    bottom_right[5:, 5:] = True
    return {"tl": top_left, "br": bottom_right, "empty": np.zeros((size, size), bool)}


def _rows_and_masks() -> tuple[list[dict], list[np.ndarray], list[np.ndarray]]:
    """Image A: liver (top left), kidney (bottom right), nodule absent; image B: liver.

    A/liver is answered with the kidney's mask (wrong), A/kidney with its own (right), the absent
    A/nodule with the liver's mask (a false positive: not graded), B/liver with nothing."""
    m = _masks()
    items = [  # (image, target, ground truth, prediction)
        ("a.png", "liver", m["tl"], m["br"]),
        ("a.png", "kidney", m["br"], m["br"]),
        ("a.png", "nodule", m["empty"], m["tl"]),
        ("b.png", "liver", m["tl"], m["empty"]),
    ]
    rows = [{"dataset": "d", "image_file": f, "target": t,
             "size": "absent" if not g.any() else "small"} for f, t, g, _ in items]
    return rows, [g.ravel() for *_, g, _ in items], [p.ravel() for *_, p in items]


def test_score_image_by_hand() -> None:
    rows, gts, preds = _rows_and_masks()
    a_pred, a_gt = score_image(rows[:3], np.stack(preds[:3]), np.stack(gts[:3]))
    assert [r["best_match"] for r in rows[:3]] == ["kidney", "kidney", ""]
    assert rows[0]["best_match_dice"] == 1.0 and math.isnan(rows[2]["best_match_dice"])
    # pairs of different targets with a non-empty prediction: (liver, kidney) the same mask,
    # (liver, nodule) and (kidney, nodule) disjoint
    assert sorted(a_pred) == [0.0, 0.0, 1.0]
    assert sorted(a_gt) == [0.0, 0.0, 0.0]  # the nodule's empty truth still pairs with others
    b_pred, b_gt = score_image(rows[3:], np.stack(preds[3:]), np.stack(gts[3:]))
    assert rows[3]["best_match"] == NONE and (b_pred, b_gt) == ([], [])

    g = summarize_grounding(rows, a_pred + b_pred, a_gt + b_gt)
    assert g["n"] == 3 and g["prompt_accuracy"] == pytest.approx(1 / 3)
    assert g["confusion"] == {"liver": {"kidney": 1, NONE: 1}, "kidney": {"kidney": 1}}
    assert g["by_target"]["liver"]["accuracy"] == 0.0
    assert g["by_target"]["kidney"]["accuracy"] == 1.0
    assert g["hedging"] == pytest.approx(1 / 3) and g["hedging_pairs"] == 3
    assert g["hedging_gt"] == 0.0


def test_a_tie_goes_to_the_prompted_target() -> None:
    m = _masks()
    rows = [{"target": t, "size": "small"} for t in ("left", "right")]
    both = np.stack([m["tl"].ravel()] * 2)  # two targets with the same mask
    score_image(rows, both, both)
    assert [r["best_match"] for r in rows] == ["left", "right"]


@pytest.mark.parametrize("know_counts", [True, False])
def test_collector_scores_images_whose_items_arrive_in_any_order(know_counts: bool) -> None:
    rows, gts, preds = _rows_and_masks()
    order = [3, 0, 2, 1]  # image B first, image A split over two batches
    counts = {("d", "a.png"): 3, ("d", "b.png"): 1} if know_counts else None
    collector = GroundingCollector(counts)
    for batch in (order[:2], order[2:]):
        pred = torch.from_numpy(np.stack([preds[i] for i in batch]).reshape(-1, 1, 8, 8))
        gt = torch.from_numpy(np.stack([gts[i] for i in batch]).reshape(-1, 1, 8, 8))
        collector.add([rows[i] for i in batch], pred, gt)
        if know_counts and batch == order[:2]:
            assert rows[3]["best_match"] == NONE  # image B was complete: scored already
    g = collector.finish(rows)
    assert not collector.open
    assert g["prompt_accuracy"] == pytest.approx(1 / 3)
    assert g["hedging"] == pytest.approx(1 / 3)


class _Everything(nn.Module):
    """A stand-in model that predicts every pixel for every prompt: the extreme hedger."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(10.0))

    def forward(self, images, prompts, image_index=None, generator=None):  # noqa: ANN001
        return SimpleNamespace(logits=self.value.expand(len(prompts), 1, *images.shape[-2:]))


def test_evaluate_grounds_a_model_that_predicts_everything(phantoms, tmp_path) -> None:
    data = BiomedParseDataset(phantoms, "test", image_size=64)
    result = evaluate(_Everything(), data, batch_size=3, progress=False)
    g = result.metrics["grounding"]
    # Predicting the whole image, the best match is the image's largest present target
    # (Dice 2g / (HW + g) grows with g), so a prompt is "right" only for that target.
    largest: dict[str, tuple[int, str]] = defaultdict(lambda: (0, ""))
    for row in result.samples:
        if row["gt_pixels"]:
            largest[row["image_file"]] = max(largest[row["image_file"]],
                                             (row["gt_pixels"], row["target"]))
    present = [r for r in result.samples if r["gt_pixels"]]
    for row in present:
        biggest_pixels, biggest = largest[row["image_file"]]
        assert row["best_match"] == (row["target"] if row["gt_pixels"] == biggest_pixels
                                     else biggest)
    right = sum(r["best_match"] == r["target"] for r in present)
    assert g["n"] == len(present) and g["prompt_accuracy"] == pytest.approx(right / len(present))
    assert g["hedging"] == 1.0  # every pair of prompts got the same (whole-image) mask
    assert g["hedging_gt"] < 0.5

    paths = write_report(result, tmp_path / "report")
    assert paths["confusion"].stat().st_size > 1000
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["grounding"]["prompt_accuracy"] == pytest.approx(g["prompt_accuracy"])
    text = paths["report"].read_text()
    assert "prompt accuracy" in text and "confusion.png" in text
    assert "best_match" in paths["per_sample"].read_text().splitlines()[0]
