"""Evaluation metrics against hand-computed values; the evaluate command end to end."""

from __future__ import annotations

import csv
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from boltzformer.cli import main
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import (
    aggregate,
    dice,
    dice_batch,
    evaluate,
    score_batch,
    size_group,
    write_report,
)
from boltzformer.evaluation.report import render_markdown
from boltzformer.modeling.boltzformer import build_model


def test_dice_by_hand() -> None:
    gt = np.zeros((4, 4), bool)
    gt[0, :3] = True  # 3 pixels
    pred = np.zeros((4, 4), bool)
    pred[0, 2:4] = True  # 2 pixels, 1 shared
    assert dice(pred, gt) == pytest.approx(2 * 1 / (2 + 3))
    assert dice(gt, gt) == 1.0
    assert dice(np.zeros((4, 4), bool), gt) == 0.0  # target missed
    assert dice(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0  # both empty
    assert dice(torch.from_numpy(pred), torch.from_numpy(gt)) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="differ"):
        dice(pred, gt[:2])
    batch = dice_batch(torch.from_numpy(np.stack([pred, gt, ~gt & False])),
                       torch.from_numpy(np.stack([gt, gt, ~gt & False])))
    assert batch.tolist() == pytest.approx([0.4, 1.0, 1.0])


def test_size_groups_follow_the_paper_threshold() -> None:
    assert size_group(0.0099, gt_pixels=5) == "small"
    assert size_group(0.01, gt_pixels=5) == "large"  # >= 1% is large
    assert size_group(0.0, gt_pixels=0) == "absent"


def _row(dataset: str, dice_value: float, area: float, *, target: str = "t",
         modality: str = "CT", fp: bool = False) -> dict:
    group = size_group(area, 0 if area == 0 else 1)
    return {"dataset": dataset, "dice": dice_value, "area": area, "size": group,
            "target": target, "modality": modality, "false_positive": fp,
            "pred_area": 0.01 if fp else 0.0}


def test_aggregation_by_hand() -> None:
    rows = [
        _row("A", 0.5, 0.005, target="nodule"),
        _row("A", 0.0, 0.002, target="nodule"),  # missed
        _row("A", 0.9, 0.05, target="liver"),
        _row("A", 1.0, 0.0, target="nodule"),  # absent, correctly empty
        _row("A", 0.0, 0.0, target="nodule", fp=True),  # absent, false positive
        _row("B", 1.0, 0.0001, target="nodule", modality="MRI"),
        _row("B", 0.6, 0.2, target="liver", modality="MRI"),
        _row("B", 0.8, 0.3, target="liver", modality="MRI"),
    ]
    m = aggregate(rows)
    assert (m["n_samples"], m["n_present"], m["n_absent"]) == (8, 6, 2)
    assert m["overall"]["dice_mean"] == pytest.approx(3.8 / 6)
    assert m["overall"]["failure_rate"] == pytest.approx(1 / 6)

    a = m["size_strata"]["per_dataset"]["A"]
    assert a["small"]["n"] == 2 and a["small"]["share"] == pytest.approx(2 / 3)
    assert a["small"]["dice_mean"] == pytest.approx(0.25)
    assert a["small"]["dice_std"] == pytest.approx(0.25)  # population std of (0.5, 0.0)
    assert a["small"]["failure_rate"] == pytest.approx(0.5)
    assert a["large"]["dice_mean"] == pytest.approx(0.9) and a["large"]["dice_std"] == 0
    assert a["all"]["dice_mean"] == pytest.approx(1.4 / 3)
    b = m["size_strata"]["per_dataset"]["B"]
    assert b["large"]["dice_mean"] == pytest.approx(0.7)
    assert b["large"]["dice_std"] == pytest.approx(0.1)
    assert b["large"]["share"] == pytest.approx(2 / 3)

    w = m["size_strata"]["weighted"]  # data sets weighted by the stratum's share
    assert w["small"]["dice_mean"] == pytest.approx((2 / 3 * 0.25 + 1 / 3 * 1.0) / 1.0)
    assert w["small"]["dice_std"] == pytest.approx(2 / 3 * 0.25 + 1 / 3 * 0.0)
    assert w["small"]["failure_rate"] == pytest.approx(2 / 3 * 0.5)
    assert w["large"]["dice_mean"] == pytest.approx(1 / 3 * 0.9 + 2 / 3 * 0.7)
    assert w["all"]["dice_mean"] == pytest.approx((1.4 / 3 + 0.8) / 2)
    assert (w["small"]["n"], w["large"]["n"], w["all"]["n"]) == (3, 3, 6)

    assert m["by_target"]["nodule"]["n"] == 3  # absent targets are not in Dice statistics
    assert m["by_target"]["nodule"]["dice_mean"] == pytest.approx(0.5)
    assert m["by_modality"]["MRI"]["dice_mean"] == pytest.approx(0.8)
    assert m["by_dataset"]["B"]["dice_std"] == pytest.approx(np.std([1.0, 0.6, 0.8]))
    absent = m["absent"]
    assert (absent["n"], absent["correct"], absent["false_positive"]) == (2, 1, 1)
    assert absent["false_positive_rate"] == 0.5
    assert absent["by_target"] == {"nodule": {"n": 2, "false_positive": 1}}
    assert absent["mean_pred_area"] == pytest.approx(0.005) and absent["existence"] is None


def test_tiny_stratum_is_a_part_of_small_by_hand() -> None:
    rows = [
        _row("A", 0.2, 0.0005),  # tiny (and small)
        _row("A", 0.6, 0.005),  # small, not tiny
        _row("A", 0.9, 0.05),  # large
        _row("A", 1.0, 0.0),  # absent: in no stratum
        _row("B", 0.4, 0.0002),  # tiny
        _row("B", 0.0, 0.0008),  # tiny, missed
        _row("B", 0.5, 0.001),  # 0.1 % exactly: small, not tiny
        _row("B", 0.8, 0.2),  # large
    ]
    m = aggregate(rows)["size_strata"]
    assert m["tiny_threshold"] == 0.001 and m["threshold"] == 0.01
    a, b = m["per_dataset"]["A"], m["per_dataset"]["B"]
    assert (a["tiny"]["n"], a["tiny"]["share"], a["tiny"]["dice_mean"]) == (1, 1 / 3, 0.2)
    assert (b["tiny"]["n"], b["tiny"]["share"]) == (2, 0.5)
    assert b["tiny"]["dice_mean"] == pytest.approx(0.2) and b["tiny"]["failure_rate"] == 0.5
    assert b["tiny"]["dice_std"] == pytest.approx(0.2)
    assert (a["small"]["n"], b["small"]["n"]) == (2, 3)  # small keeps its tiny members
    assert b["small"]["dice_mean"] == pytest.approx(0.3)
    w = m["weighted"]
    assert list(w) == ["tiny", "small", "large", "all"]
    assert w["tiny"]["n"] == 3 and w["tiny"]["datasets"] == 2
    assert w["tiny"]["dice_mean"] == pytest.approx((1 / 3 * 0.2 + 0.5 * 0.2) / (1 / 3 + 0.5))
    assert w["tiny"]["dice_std"] == pytest.approx((1 / 3 * 0 + 0.5 * 0.2) / (1 / 3 + 0.5))
    assert w["tiny"]["failure_rate"] == pytest.approx(0.5 * 0.5 / (1 / 3 + 0.5))
    assert w["small"]["dice_mean"] == pytest.approx((2 / 3 * 0.4 + 0.75 * 0.3) / (2 / 3 + 0.75))
    text = render_markdown(aggregate(rows), {"seed": 0}, scatter="s.png")
    assert "tiny: < 0.1%, a part of small" in text
    assert "| tiny | 3 | 20.0 (12.0) | 30.0% |" in text


def test_score_batch_by_hand() -> None:
    gt = torch.zeros(4, 1, 4, 4, dtype=torch.bool)
    pred = torch.zeros_like(gt)
    gt[0, 0, 0, :2] = True
    pred[0, 0, 0, 1:4] = True  # present: 1 shared of 2 + 3 -> 0.4
    gt[1, 0, 1, 1] = True  # present, missed
    pred[3, 0, 2, 2] = True  # sample 2 absent and empty (correct); sample 3 absent, FP
    meta = {k: ["x"] * 4 for k in ("dataset", "image_file", "mask_file", "target",
                                   "modality", "site", "prompt")}
    rows = score_batch(pred, gt, {**meta, "area": [0.125, 0.0625, 0.0, 0.0]}, start=10)
    assert [r["dice"] for r in rows] == pytest.approx([0.4, 0.0, 1.0, 0.0])
    assert [r["size"] for r in rows] == ["large", "large", "absent", "absent"]
    assert [r["missed"] for r in rows] == [False, True, False, False]
    assert [r["false_positive"] for r in rows] == [False, False, False, True]
    assert [r["index"] for r in rows] == [10, 11, 12, 13]
    assert (rows[0]["gt_pixels"], rows[0]["pred_pixels"], rows[0]["intersection"]) == (2, 3, 1)
    assert [r["pred_area"] for r in rows] == [3 / 16, 0.0, 0.0, 1 / 16]
    assert all(np.isnan(r["existence"]) for r in rows)  # no existence output given
    assert all(np.isnan(r["mask_score"]) for r in rows)  # no confidence given


class _Constant(nn.Module):
    """A stand-in model that predicts every pixel (value > 0) or none (value < 0)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, images, prompts, image_index=None, generator=None):  # noqa: ANN001
        _, _, h, w = images.shape
        return SimpleNamespace(logits=self.value.expand(len(prompts), 1, h, w))


class _GradRecorder(_Constant):
    """_Constant that records whether autograd was on in each forward."""

    def __init__(self) -> None:
        super().__init__(10.0)
        self.grad_enabled: list[bool] = []

    def forward(self, images, prompts, image_index=None, generator=None):  # noqa: ANN001
        self.grad_enabled.append(torch.is_grad_enabled())
        return super().forward(images, prompts, image_index, generator)


def test_evaluate_answers_without_autograd(phantoms) -> None:
    """Every forward, whole images or windows, runs with autograd off (with it on, a 1024²
    image's windows held 7.4 GB instead of 2.1)."""
    from boltzformer.inference.windowed import WindowSettings

    for windows, size in ((None, 64), (WindowSettings(64), None)):
        model = _GradRecorder()
        evaluate(model, BiomedParseDataset(phantoms, "test", image_size=size), progress=False,
                 windows=windows)
        assert model.grad_enabled and not any(model.grad_enabled)


def test_evaluate_matches_masks_by_hand(phantoms) -> None:
    data = BiomedParseDataset(phantoms, "test", image_size=64)
    gt_pixels = [int(data[i]["mask"].sum()) for i in range(len(data))]
    assert 0 in gt_pixels and any(gt_pixels), "fixture should hold absent and present targets"

    nothing = evaluate(_Constant(-10.0), data, batch_size=3, progress=False)
    for row, g in zip(nothing.samples, gt_pixels, strict=True):
        assert row["dice"] == (1.0 if g == 0 else 0.0)
        assert row["missed"] == (g > 0) and not row["false_positive"]
    assert nothing.metrics["overall"]["failure_rate"] == 1.0
    assert nothing.metrics["absent"]["false_positive"] == 0

    everything = evaluate(_Constant(10.0), data, batch_size=3, progress=False)
    for row, g in zip(everything.samples, gt_pixels, strict=True):
        assert row["dice"] == pytest.approx(0.0 if g == 0 else 2 * g / (64 * 64 + g))
        assert row["false_positive"] == (g == 0)
    assert everything.metrics["absent"]["false_positive_rate"] == 1.0


class _TargetRecorder(_Constant):
    """A stand-in expert that takes the `targets` keyword and records what it was given."""

    takes_targets = True

    def __init__(self) -> None:
        super().__init__(-10.0)
        self.seen: list[tuple[list[str], list[str]]] = []

    def forward(self, images, prompts, *, image_index=None, generator=None,  # noqa: ANN001
                targets=None):
        self.seen.append((list(prompts), list(targets)))
        return super().forward(images, prompts, image_index, generator)


def test_evaluate_gives_target_names_to_models_that_take_them(phantoms) -> None:
    data = BiomedParseDataset(phantoms, "test", image_size=64)
    model = _TargetRecorder()
    result = evaluate(model, data, batch_size=5, progress=False)
    prompts = [p for batch_prompts, _ in model.seen for p in batch_prompts]
    targets = [t for _, batch_targets in model.seen for t in batch_targets]
    assert targets == [s.target for s in data.samples] == [r["target"] for r in result.samples]
    assert prompts == [s.sentences[0] for s in data.samples]
    # A model that does not declare `takes_targets` is not given them (_Constant would refuse).
    assert len(evaluate(_Constant(-10.0), data, progress=False).samples) == len(data)


def test_evaluate_is_deterministic_given_seed_and_writes_report(
    phantoms, tmp_path, small_model
) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", **small_model)
    data = BiomedParseDataset(phantoms, "test", image_size=64)
    first = evaluate(model, data, seed=3, batch_size=4, threshold=0.3, progress=False)
    again = evaluate(model, data, seed=3, batch_size=4, threshold=0.3, progress=False)
    assert [r["pred_pixels"] for r in first.samples] == [r["pred_pixels"] for r in again.samples]
    assert json.dumps(first.metrics) == json.dumps(again.metrics)

    paths = write_report(first, tmp_path / "report")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["seed"] == 3 and metrics["n_samples"] == len(data)
    with paths["per_sample"].open() as f:
        assert len(list(csv.DictReader(f))) == len(data)
    text = paths["report"].read_text()
    assert "By object size" in text and "dice_vs_size.png" in text
    assert paths["scatter"].stat().st_size > 1000


def test_evaluate_command(phantoms, tmp_path, capsys, small_model) -> None:
    torch.manual_seed(0)
    build_model("tiny", **small_model).save_pretrained(tmp_path / "run" / "best")
    second = shutil.copytree(phantoms, tmp_path / "second")  # a second data set
    outs = []
    for name in ("a", "b"):
        code = main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(phantoms),
                     str(second), "--split", "test", "--out", str(tmp_path / name),
                     "--seed", "1", "--no-progress"])
        assert code == 0
        outs.append((tmp_path / name / "per_sample.csv").read_text())
    assert outs[0] == outs[1]  # deterministic given --seed
    for name in ("metrics.json", "report.md", "dice_vs_size.png"):
        assert (tmp_path / "a" / name).is_file()
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert sorted(metrics["by_dataset"]) == ["phantoms", "second"]
    assert metrics["size_strata"]["weighted"]["all"]["datasets"] == 2
    printed = capsys.readouterr().out
    assert "report:" in printed
    absent = metrics["absent"]
    assert absent["n"] > 0 and absent["existence"] is None  # the paper's model: no head
    assert f"absent targets: {absent['n']}, false positives" in printed

    code = main(["evaluate", "--checkpoint", str(tmp_path / "nowhere"), "--data",
                 str(phantoms), "--out", str(tmp_path / "c")])
    assert code == 1
    assert "nowhere: no such folder" in capsys.readouterr().err


def test_a_windowed_model_is_scored_at_the_masks_own_size(phantoms, small_model) -> None:
    """Items at their own size (96 x 96, the model sees 64): every row is scored on the
    native masks, and its prediction is the windowed Predictor's."""
    from boltzformer import Predictor
    from boltzformer.inference.windowed import window_settings

    torch.manual_seed(0)
    model = build_model("tiny", **small_model, attention="full", window_size=64).eval()
    data = BiomedParseDataset(phantoms, "test", image_size=None)
    windows = window_settings(model.config)
    everything = evaluate(_Constant(10.0), data, progress=False, windows=windows)
    assert [r["pred_pixels"] for r in everything.samples] == [96 * 96] * len(data)
    assert [r["gt_pixels"] for r in everything.samples] == \
        [int(data[i]["mask"].sum()) for i in range(len(data))]

    result = evaluate(model, data, progress=False, windows=windows)
    predictor = Predictor(model, progress=False)
    first = data.samples[0].image_file
    items = [i for i in range(len(data)) if data.samples[i].image_file == first]
    predictor.set_image(data[items[0]]["image"])
    prob = predictor.predict([data[i]["prompt"] for i in items]).prob
    assert prob.shape[1:] == (96, 96)
    assert [result.samples[i]["pred_pixels"] for i in items] == \
        [int((p > 0.5).sum()) for p in prob]
    assert result.metrics["objects"]["scored_at"] == "original"


def test_evaluate_command_with_windows(phantoms, tmp_path, capsys, small_model) -> None:
    torch.manual_seed(0)
    build_model("tiny", **small_model).save_pretrained(tmp_path / "ckpt")
    argv = ["evaluate", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(phantoms),
            "--out", str(tmp_path / "report"), "--no-progress", "--window-size", "64"]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["window_size"] == 64
    with (tmp_path / "report" / "per_sample.csv").open() as f:
        rows = list(csv.DictReader(f))
    # scored on the 96 x 96 masks, not the model's 64 x 64
    assert all(float(r["pred_area"]) * 96 * 96 == pytest.approx(int(r["pred_pixels"]))
               for r in rows)
    native = BiomedParseDataset(phantoms, "test", image_size=None)
    assert [int(r["gt_pixels"]) for r in rows] == \
        [int(native[i]["mask"].sum()) for i in range(len(native))]
    assert main([*argv[:-1], "20"]) == 1
    assert "--window-size must be 0" in capsys.readouterr().err
