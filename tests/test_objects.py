"""Object-level metrics (matching, detection, panoptic quality, size bins) and 3D Dice, on
hand-made masks whose answers are worked out by hand in each test."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from boltzformer.data import BiomedParseDataset, DataError, list_splits
from boltzformer.evaluation import objects
from boltzformer.evaluation.evaluate import evaluate, write_report
from boltzformer.evaluation.objects import (
    label_objects,
    match_objects,
    object_stats,
    relabel,
    score_objects,
    size_bins,
    summarize_objects,
)


def _touching(left_width: int) -> np.ndarray:
    """An 8x8 instance map: object 1 of 4 x `left_width` pixels, object 2 right beside it up
    to column 8 (they touch: one connected blob)."""
    gt = np.zeros((8, 8), np.int32)
    gt[2:6, :left_width] = 1
    gt[2:6, left_width:8] = 2
    return gt


def test_two_touching_objects_and_one_merged_prediction() -> None:
    merged = _touching(4) > 0  # the prediction: both objects as one blob of 32 pixels
    pred, n_pred = label_objects(merged)
    assert n_pred == 1
    # 16 + 16 pixels: each IoU is 16 / 32 = 0.5 exactly, a tie; the lower id wins.
    g, p, iou = match_objects(_touching(4), 2, pred, 1)
    assert (g.tolist(), p.tolist(), iou.tolist()) == ([1], [1], [0.5])
    counts = score_objects(_touching(4), 2, pred, 1)
    # each object is 16 / 64 = 25 % of the image: all in the ">= 1 %" bin
    assert counts[:, 3].tolist() == [1, 0, 1, 0.5] and not counts[:, :3].any()
    s = object_stats(counts.sum(1))
    assert (s["tp"], s["fp"], s["fn"]) == (1, 0, 1)
    assert (s["precision"], s["recall"]) == (1.0, 0.5)
    assert s["f1"] == s["dq"] == pytest.approx(1 / (1 + 0 + 0.5))
    assert s["sq"] == 0.5 and s["pq"] == pytest.approx(1 / 3)

    # 12 + 20 pixels: IoU 12/32 = 0.375 and 20/32 = 0.625, so the right object matches
    g, p, iou = match_objects(_touching(3), 2, pred, 1)
    assert (g.tolist(), iou.tolist()) == ([2], [0.625])

    # one more predicted pixel, touching: the union grows to 33, IoU 16/33 < 0.5, no match
    bigger = merged.copy()
    bigger[1, 0] = True
    pred2, n2 = label_objects(bigger)
    s = object_stats(score_objects(_touching(4), 2, pred2, n2).sum(1))
    assert (s["tp"], s["fp"], s["fn"], s["pq"]) == (0, 1, 2, 0.0)

    # without the instance map the truth is its connected component: one object, IoU 1
    cc, n_cc = label_objects(_touching(4) > 0)
    s = object_stats(score_objects(cc, n_cc, pred, 1).sum(1))
    assert (s["tp"], s["fp"], s["fn"], s["sq"], s["pq"]) == (1, 0, 0, 1.0, 1.0)


def test_objects_use_eight_connectivity_and_instance_ids_are_renumbered() -> None:
    diagonal = np.zeros((4, 4), bool)
    diagonal[0, 0] = diagonal[1, 1] = True  # corners touch: one object
    diagonal[3, 3] = True  # apart
    assert label_objects(diagonal)[1] == 2
    ids = np.array([[0, 5, 5, 0], [9, 0, 0, 5]])  # id 5 in two pieces stays one object
    labels, n = relabel(ids)
    assert n == 2 and labels.tolist() == [[0, 1, 1, 0], [2, 0, 0, 1]]


def test_size_bins_edges() -> None:
    pixels = 200 * 200  # 1 px = 0.0025 %; 4 px = 0.01 %; 40 px = 0.1 %; 400 px = 1 %
    areas = np.array([1, 3, 4, 39, 40, 399, 400, 40000]) / pixels
    assert size_bins(areas).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("dense", [True, False])  # overlaps counted in one array or sorted
def test_score_objects_by_size_bin(dense: bool, monkeypatch) -> None:  # noqa: ANN001
    if not dense:
        monkeypatch.setattr(objects, "_DENSE_PAIRS", 0)
    gt = np.zeros((200, 200), np.int32)
    gt[0, 0] = 1  # 1 px (< 0.01 %), missed
    gt[10:12, 10:12] = 2  # 4 px (0.01 %), found exactly
    gt[50:70, 50:70] = 3  # 400 px (1 %), found shifted down by 2 rows
    pred = np.zeros((200, 200), bool)
    pred[10:12, 10:12] = True
    pred[52:72, 50:70] = True  # 18 x 20 = 360 shared of a 440 union
    pred[150:154, 100:110] = True  # 40 px (0.1 %): nothing there
    labels, n = label_objects(pred)
    counts = score_objects(gt, 3, labels, n)
    assert counts[0].tolist() == [0, 1, 0, 1]  # TP by the true object's size
    assert counts[1].tolist() == [0, 0, 1, 0]  # FP by the prediction's own size
    assert counts[2].tolist() == [1, 0, 0, 0]  # FN by the true object's size
    assert counts[3].tolist() == pytest.approx([0, 1.0, 0, 360 / 440])
    s = object_stats(counts.sum(1))
    assert (s["precision"], s["recall"]) == pytest.approx((2 / 3, 2 / 3))
    assert s["f1"] == pytest.approx(2 / (2 + 0.5 + 0.5))
    assert s["sq"] == pytest.approx((1 + 360 / 440) / 2)
    assert s["pq"] == pytest.approx(2 / 3 * (1 + 360 / 440) / 2)


def test_summaries_sum_counts_over_images() -> None:
    a = np.zeros((4, 4))
    a[:, 3] = [1, 0, 1, 0.5]  # one match at IoU 0.5, one miss
    b = np.zeros((4, 4))
    b[:, 2] = [1, 1, 0, 0.9]  # one match at IoU 0.9, one false positive
    absent = np.zeros((4, 4))
    absent[1, 0] = 1  # an absent target's stray prediction
    m = summarize_objects([("d", "liver", a), ("d", "nodule", b), ("e", "nodule", absent)])
    o = m["overall"]
    assert (o["tp"], o["fp"], o["fn"]) == (2, 2, 1)
    assert o["sq"] == pytest.approx(0.7)  # (0.5 + 0.9) / 2, not a mean of per-image SQ
    assert o["dq"] == pytest.approx(2 / (2 + 1 + 0.5))
    assert m["by_target"]["nodule"]["tp"] == 1 and m["by_target"]["nodule"]["fp"] == 2
    assert m["by_target"]["nodule"]["pq"] == pytest.approx(1 / (1 + 1 + 0) * 0.9)
    assert m["by_dataset"]["e"]["pq"] == 0.0 and math.isnan(m["by_dataset"]["e"]["recall"])
    assert o["by_size"]["<0.01%"]["fp"] == 1 and o["by_size"][">=1%"]["fn"] == 1
    assert o["by_size"]["0.1-1%"]["sq"] == pytest.approx(0.9)


class _Bright(nn.Module):
    """A stand-in model whose prediction is the bright pixels of each prompt's image."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, images, prompts, image_index=None, generator=None):  # noqa: ANN001
        index = torch.arange(len(prompts)) if image_index is None else image_index
        return SimpleNamespace(logits=images[index, :1] - 127.5)


def _save_instances(root, split: str, mask_file: str, ids: np.ndarray) -> None:  # noqa: ANN001
    folder = root / f"{split}_instances"
    folder.mkdir(exist_ok=True)
    Image.fromarray(ids.astype(np.uint16)).save(folder / mask_file)


def test_evaluate_scores_objects_at_the_original_size_with_instance_maps(
    write_dataset, tmp_path
) -> None:
    halves = np.zeros((32, 32), bool)
    halves[8:24, :] = True  # two touching objects of 16 x 16 by the instance map
    dots = np.zeros((32, 32), bool)
    dots[0, 0] = dots[0, 2] = True  # two 1-pixel objects; at 16x16 one pixel is left
    white = np.full((32, 32, 3), 255, np.uint8)  # _Bright predicts every pixel
    black = np.zeros((32, 32, 3), np.uint8)  # _Bright predicts nothing
    root = write_dataset({"a_CT_x.png": (white, {"organ": halves}),
                          "b_CT_x.png": (black, {"spot": dots})}, split="test")
    ids = np.zeros((32, 32), np.uint16)
    ids[8:24, :16], ids[8:24, 16:] = 7, 3
    _save_instances(root, "test", "a_CT_x_organ.png", ids)
    assert list_splits(root) == ["test"]  # test_instances/ is not a split

    data = BiomedParseDataset(root, "test", image_size=16)
    result = evaluate(_Bright(), data, progress=False)
    by_target = {r["target"]: r for r in result.samples}
    # organ: one 1024-px prediction against two 256-px halves: IoU 0.25 each, no match
    assert (by_target["organ"]["gt_objects"], by_target["organ"]["matched_objects"]) == (2, 0)
    assert by_target["spot"]["gt_objects"] == 2  # the original size, not the model's 16x16
    o = result.metrics["objects"]
    assert o["scored_at"] == "original" and o["n_images"] == 2
    assert o["by_target"]["organ"]["fn"] == 2 and o["by_target"]["organ"]["fp"] == 1
    assert o["by_target"]["spot"]["fn"] == 2 and o["by_target"]["spot"]["fp"] == 0
    # each dot is 1 / 1024 = 0.098 % of the image; each half 25 %; the full prediction 100 %
    assert o["overall"]["by_size"]["0.01-0.1%"]["fn"] == 2
    assert o["overall"]["by_size"][">=1%"]["fn"] == 2
    assert o["overall"]["by_size"][">=1%"]["fp"] == 1
    assert result.metrics["volumes"] is None

    ids[8:24, 16:] = 7  # one object: the prediction matches it at IoU 512 / 1024 = 0.5
    _save_instances(root, "test", "a_CT_x_organ.png", ids)
    organ = evaluate(_Bright(), data, progress=False).metrics["objects"]["by_target"]["organ"]
    assert (organ["tp"], organ["fp"], organ["fn"], organ["sq"]) == (1, 0, 0, 0.5)

    _save_instances(root, "test", "a_CT_x_organ.png", ids[:16])
    with pytest.raises(DataError, match="instance map is 32x16 but its mask is 32x32"):
        evaluate(_Bright(), data, progress=False)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(
        root / "test_instances" / "a_CT_x_organ.png")
    with pytest.raises(DataError, match="must be a grayscale image .* not mode RGB"):
        evaluate(_Bright(), data, progress=False)

    paths = write_report(result, tmp_path / "report")
    report = paths["report"].read_text()
    assert "## Objects" in report and "| organ | 0 | 1 | 2 |" in report
    assert json.loads(paths["metrics"].read_text())["objects"]["overall"]["fn"] == 4
    with paths["per_sample"].open() as f:
        assert sorted(int(r["gt_objects"]) for r in csv.DictReader(f)) == [2, 2]


def _slice(bright: list[tuple[int, int]], size: int = 8) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    for y, x in bright:
        image[y, x] = 255
    return image


def _mask(pixels: list[tuple[int, int]], size: int = 8) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    for y, x in pixels:
        mask[y, x] = True
    return mask


def test_volumes_3d_dice_per_case_on_a_two_case_split(write_dataset, tmp_path) -> None:
    square = [(0, 0), (0, 1), (1, 0), (1, 1)]
    far = [(5, 5), (5, 6), (6, 5), (6, 6)]
    six = [(3, x) for x in range(6)]
    items = {  # image: (bright pixels = prediction, ground truth)
        "c1s0_CT_abdomen.png": (square + far, square),  # 4 shared, 8 predicted, 4 true
        "c1s1_CT_abdomen.png": ([], far),  # 4 true, missed
        "c2s0_CT_abdomen.png": ([], []),  # nothing either way
        "c2s1_CT_abdomen.png": (six, six),  # 6 found exactly
    }
    root = write_dataset({name: (_slice(p), {"liver": _mask(g)}) for name, (p, g) in
                          items.items()}, split="test", sentences={})
    index = json.loads((root / "test.json").read_text())
    index["volumes"] = {c: {"source": f"{c}.nii.gz", "shape": [8, 8, 2],
                            "affine": np.eye(4).tolist(), "axis": 2} for c in ("c1", "c2")}
    for image in index["images"]:
        image["volume"], image["slice"] = image["file_name"][:2], int(image["file_name"][3])
    (root / "test.json").write_text(json.dumps(index))

    data = BiomedParseDataset(root, "test", image_size=8)
    assert [(s.volume, s.slice) for s in data.samples] == [("c1", 0), ("c1", 1), ("c2", 0),
                                                           ("c2", 1)]
    result = evaluate(_Bright(), data, progress=False)
    v = result.metrics["volumes"]
    assert v["n_cases"] == 2
    cases = {c["case"]: c for c in v["cases"]}
    # c1: 2 * 4 / (8 + 8) = 0.5 (the mean of its slices' Dice would be (2/3 + 0) / 2)
    assert cases["c1"]["dice"] == pytest.approx(0.5)
    assert (cases["c1"]["slices"], cases["c1"]["gt_voxels"], cases["c1"]["pred_voxels"]) == (
        2, 8, 8)
    assert cases["c2"]["dice"] == 1.0
    assert v["by_target"]["liver"] == pytest.approx({"n": 2, "dice_mean": 0.75,
                                                     "dice_std": 0.25})
    report = write_report(result, tmp_path / "report")["report"].read_text()
    assert "## Volumes (3D Dice)" in report and "| 2 | 75.0 (25.0) |" in report

    index["images"][0]["slice"] = "first"
    (root / "test.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="needs a 'volume' name and an integer 'slice'"):
        BiomedParseDataset(root, "test", image_size=8)


def test_items_without_files_are_scored_at_the_model_size() -> None:
    image = torch.zeros(3, 8, 8)
    image[:, 0, :4] = 255  # predicted: one 4-pixel object
    mask = torch.zeros(1, 8, 8)
    mask[0, 0, :4] = 1  # truth: the same object
    mask[0, 5, 5] = 1  # and a missed one
    item = {"image": image, "mask": mask, "prompt": "p", "target": "t", "modality": "CT",
            "site": "s", "image_file": "i.png", "mask_file": "m.png", "dataset": "d",
            "area": 5 / 64}
    o = evaluate(_Bright(), [item], progress=False).metrics["objects"]
    assert o["scored_at"] == "model"
    assert (o["overall"]["tp"], o["overall"]["fp"], o["overall"]["fn"]) == (1, 0, 1)
    assert o["overall"]["by_size"][">=1%"]["fn"] == 1  # 1 / 64 of the image
