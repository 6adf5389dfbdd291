"""Absent targets: the metrics on hand-made cases, the existence head (a toy that learns to say
absent), its checkpoints, and what Predictor and `boltzformer predict` answer for an absent
target."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import answering_existence
from PIL import Image
from torch import nn

from boltzformer import Predictor, cli
from boltzformer.apps.web_sessions import existence_note
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import absent_summary, auroc, evaluate
from boltzformer.evaluation.report import render_markdown
from boltzformer.modeling.boltzformer import BoltzFormer, build_model
from boltzformer.modeling.checkpoint import CheckpointError
from boltzformer.modeling.existence import mask_evidence, mask_score
from boltzformer.modeling.loss import existence_loss
from boltzformer.train.config import LoopConfig, LossConfig, OptimConfig, TrainConfig
from boltzformer.train.optim import build_optimizer, build_scheduler
from boltzformer.train.step import TrainStep


# --- metrics by hand ---------------------------------------------------------------------------
def _row(size: str, existence: float, *, pred_area: float = 0.0, target: str = "t") -> dict:
    return {"size": size, "existence": existence, "pred_area": pred_area, "target": target,
            "false_positive": size == "absent" and pred_area > 0}


def test_auroc_by_hand() -> None:
    # 3 positives x 4 negatives = 12 pairs; 0.9 beats 4, 0.8 beats 3 (not 0.85), 0.4 beats 2
    scores = [0.9, 0.8, 0.4, 0.1, 0.85, 0.2, 0.6]
    positive = [True, True, True, False, False, False, False]
    assert auroc(scores, positive) == pytest.approx(9 / 12)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # a tie counts half
    assert auroc([0.2, 0.7], [False, True]) == 1.0
    assert math.isnan(auroc([0.3, 0.4], [True, True]))  # one class only


def test_absent_summary_by_hand() -> None:
    rows = [
        _row("small", 0.9), _row("large", 0.8), _row("small", 0.4),
        _row("absent", 0.1, target="nodule"), _row("absent", 0.85, pred_area=0.1, target="liver"),
        _row("absent", 0.2, target="nodule"), _row("absent", 0.6, pred_area=0.3, target="liver"),
    ]
    s = absent_summary(rows)
    assert (s["n"], s["false_positive"], s["correct"]) == (4, 2, 2)
    assert s["false_positive_rate"] == pytest.approx(0.5)
    assert s["mean_pred_area"] == pytest.approx((0.1 + 0.3) / 4)
    assert s["by_target"] == {"liver": {"n": 2, "false_positive": 2},
                              "nodule": {"n": 2, "false_positive": 0}}
    e = s["existence"]
    assert (e["n"], e["n_absent"]) == (7, 4)
    assert e["auroc"] == pytest.approx(9 / 12)
    # said present (>= 0.5): 0.9, 0.8 right; 0.4 wrong; absent 0.1, 0.2 right, 0.85, 0.6 wrong
    assert e["accuracy"] == pytest.approx(4 / 7)
    without = absent_summary([{**r, "existence": math.nan} for r in rows])
    assert without["existence"] is None and without["false_positive"] == 2


def test_report_shows_the_absent_figures() -> None:
    rows = [_row("small", 0.9), _row("absent", 0.2, pred_area=0.04)]
    metrics = {"absent": absent_summary(rows)}
    text = _absent_section(metrics)
    assert "1 false positives (100.0%)" in text and "mean predicted area 4.0 %" in text
    assert "AUROC 1.000" in text and "accuracy at 0.5 100.0 %" in text


def _absent_section(metrics: dict) -> str:
    """render_markdown's absent-target section for `metrics["absent"]` alone."""
    empty = {"n": 0, "dice_mean": math.nan, "dice_std": math.nan, "failure_rate": math.nan}
    full = {"n_samples": 2, "n_present": 1, "n_absent": 1, "overall": empty,
            "size_strata": {"threshold": 0.01, "tiny_threshold": 0.001, "weighted": {},
                            "per_dataset": {}},
            "by_dataset": {}, "by_modality": {}, "by_target": {}, **metrics}
    return render_markdown(full, {}, scatter="x.png").split("## Absent targets")[1]


class _SaysAbsent(nn.Module):
    """A stand-in model that paints every pixel but says every target is absent."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, images, prompts, image_index=None, generator=None):  # noqa: ANN001
        _, _, h, w = images.shape
        p = len(prompts)
        return SimpleNamespace(logits=self.w * 10 * torch.ones(p, 1, h, w),
                               existence_logits=torch.full((p,), -10.0))


def test_evaluate_answers_absent_with_an_empty_mask(phantoms) -> None:
    data = BiomedParseDataset(phantoms, "test", image_size=64)
    result = evaluate(_SaysAbsent(), data, batch_size=3, progress=False)
    assert all(r["pred_pixels"] == 0 for r in result.samples)  # gated: every mask empty
    # the answers' own confidence is read before the gate: every pixel painted at sigmoid(10)
    assert all(r["mask_score"] == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())
               for r in result.samples)
    absent = result.metrics["absent"]
    assert absent["n"] > 0 and absent["false_positive"] == 0 and absent["mean_pred_area"] == 0
    assert absent["existence"]["accuracy"] == pytest.approx(absent["n"] / len(data))
    assert absent["existence"]["auroc"] == pytest.approx(0.5)  # one score for all: all ties


def test_evaluate_without_gating_answers_every_prompt_with_its_mask(phantoms) -> None:
    data = BiomedParseDataset(phantoms, "test", image_size=64)
    result = evaluate(_SaysAbsent(), data, batch_size=3, progress=False, existence_threshold=0)
    assert all(r["pred_pixels"] == 64 * 64 for r in result.samples)  # the head is not asked
    absent = result.metrics["absent"]
    assert absent["n"] > 0 and absent["false_positive"] == absent["n"]
    assert absent["existence"]["accuracy"] == pytest.approx(absent["n"] / len(data))  # at 0.5
    assert result.info["existence_threshold"] == 0
    with pytest.raises(ValueError, match="existence_threshold"):
        evaluate(_SaysAbsent(), data, progress=False, existence_threshold=1.5)


# --- a toy that learns to say absent -----------------------------------------------------------
TOY_MODEL = {"image_size": 64, "backbone": "mobilenetv3_small_050", "hidden_dim": 32,
             "mask_dim": 32, "text_width": 32, "text_layers": 1, "text_vocab_size": 512,
             "num_layers": 3, "ffn_dim": 64, "existence_head": True}


def _toy(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n 64x64 noise images, a bright 16x16 square in every other one: images (n, 3, 64, 64)
    in 0-255 and masks (n, 1, 64, 64)."""
    images = rng.uniform(0, 80, (n, 1, 64, 64)).astype(np.float32)
    masks = np.zeros((n, 1, 64, 64), np.float32)
    for i in range(0, n, 2):
        y, x = rng.integers(0, 48, 2)
        images[i, 0, y : y + 16, x : x + 16] = 230
        masks[i, 0, y : y + 16, x : x + 16] = 1
    return torch.from_numpy(images).expand(n, 3, 64, 64).contiguous(), torch.from_numpy(masks)


def _existence_accuracy(existence_weight: float, steps: int = 40) -> float:
    """Train the toy for `steps` steps of 8 images with the existence BCE weighted by
    `existence_weight`; its existence accuracy at 0.5 on 32 new images."""
    torch.manual_seed(0)
    model = build_model("tiny", **TOY_MODEL)
    cfg = TrainConfig(optim=OptimConfig(lr=2e-3, warmup_steps=0),
                      loss=LossConfig(existence_weight=existence_weight),
                      train=LoopConfig(batch_size=8))
    optimizer = build_optimizer(model, cfg.optim)
    step = TrainStep(model, optimizer, build_scheduler(optimizer, cfg.optim, steps), cfg,
                     torch.device("cpu"), torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    for _ in range(steps):
        images, masks = _toy(8, rng)
        assert step({"image": images, "mask": masks, "prompt": ["square"] * 8,
                     "target": ["square"] * 8, "image_index": torch.arange(8)}).loss is not None
    images, masks = _toy(32, np.random.default_rng(1))
    model.eval()
    with torch.no_grad():
        out = model(images, ["square"] * 32, generator=torch.Generator().manual_seed(0))
    said = out.existence_logits.sigmoid() >= 0.5
    return float((said == (masks.flatten(1).amax(1) > 0)).float().mean())


def test_a_toy_learns_to_say_absent() -> None:
    # half the images hold the square: chance is 0.5 (with loss.existence_weight 0 it stays
    # there: the head is never trained)
    assert _existence_accuracy(1.0) >= 0.85


@pytest.mark.parametrize("detach", [True, False])
def test_a_detached_head_leaves_the_mask_path_alone(detach: bool) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", **{**TOY_MODEL, "existence_detach": detach})
    images, masks = _toy(2, np.random.default_rng(0))
    out = model(images, ["square", "square"])
    existence_loss(out.existence_logits, masks).backward()
    assert model.existence is not None
    assert all(p.grad is not None for p in model.existence.parameters())
    reached = [p.grad is not None and bool(p.grad.abs().sum() > 0)
               for p in [*model.decoder.parameters(), *model.text_encoder.parameters()]]
    assert not any(reached) if detach else any(reached)


def test_mask_score_by_hand() -> None:
    """The mean probability over the pixels a mask paints (above 0.5); 0 for none."""
    logits = torch.full((3, 1, 2, 2), -5.0)
    logits[0, 0, 0, :] = torch.tensor([0.0, 2.0])  # 0.5 is not painted; sigmoid(2) is
    logits[1, 0] = torch.tensor([[1.0, 3.0], [-1.0, -3.0]])
    expected = [torch.sigmoid(torch.tensor(2.0)).item(),
                (torch.sigmoid(torch.tensor(1.0)) + torch.sigmoid(torch.tensor(3.0))).item() / 2,
                0.0]
    assert mask_score(logits).tolist() == pytest.approx(expected)
    assert mask_score(logits, threshold=0.9).tolist() == pytest.approx(
        [0.0, torch.sigmoid(torch.tensor(3.0)).item(), 0.0])


def test_mask_evidence_pools_s_under_the_predicted_mask() -> None:
    """existence_evidence: S averaged under the queries' mean probability (resized to S's
    grid) and that probability's peak, by hand; the head then reads it and trains it."""
    semantic = torch.zeros(1, 2, 4, 4)
    semantic[0, 0, :2, :2] = 3.0  # channel 0 is 3 where the mask lies, 0 elsewhere
    semantic[0, 1] = 1.0
    logits = torch.full((1, 2, 8, 8), -1e4)
    logits[0, :, :4, :4] = 1e4  # both queries: the top-left quarter, at twice S's resolution
    evidence = mask_evidence(logits, semantic)
    torch.testing.assert_close(evidence, torch.tensor([[3.0, 1.0, 1.0]]))
    model = build_model("tiny", **{**TOY_MODEL, "existence_detach": False,
                                   "existence_evidence": True})
    images, masks = _toy(2, np.random.default_rng(0))
    out = model(images, ["square", "square"])
    existence_loss(out.existence_logits, masks).backward()
    assert model.existence is not None and model.existence.norm_e is not None
    assert bool(model.existence.norm_e.weight.grad.abs().sum() > 0)


# --- checkpoints, Predictor, predict -------------------------------------------------------------
def _model(existence_bias: float | None) -> BoltzFormer:
    """A small model; with a bias, an existence head whose last layer answers sigmoid(bias)
    for every prompt."""
    torch.manual_seed(0)
    model = build_model("tiny", **{**TOY_MODEL, "existence_head": existence_bias is not None})
    return model.eval() if existence_bias is None else answering_existence(model, existence_bias)


def test_checkpoints_without_the_head_still_load(tmp_path: Path) -> None:
    old = _model(None).save_pretrained(tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    del config["existence_head"]  # as written before the head existed
    (old / "config.json").write_text(json.dumps(config))
    model = BoltzFormer.from_pretrained(old)
    assert model.existence is None
    assert model(torch.zeros(1, 3, 64, 64), ["x"]).existence_logits is None
    with pytest.raises(CheckpointError, match="existence"):  # no weights for a head
        BoltzFormer.from_pretrained(old, existence_head=True)
    with_head = BoltzFormer.from_pretrained(_model(3.0).save_pretrained(tmp_path / "new"))
    assert with_head.existence is not None


def test_predictor_answers_absent_with_an_empty_mask() -> None:
    image = np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)
    absent, present, plain = (Predictor(_model(b)) for b in (-5.0, 5.0, None))
    for p in (absent, present, plain):
        p.set_image(image)
    no = absent.predict(["nodule", "liver"])
    assert no.exists is not None and no.exists.shape == (2,)
    assert no.exists == pytest.approx(1 / (1 + math.exp(5)), rel=1e-4)
    assert not no.found.any() and no.prob.shape == (2, 50, 70) and no.prob.max() == 0
    yes = present.predict(["nodule", "liver"], samples=2)
    assert yes.found.all() and yes.prob.max() > 0.01
    assert plain.predict(["nodule"]).exists is None and plain.predict(["nodule"]).found is None
    # volumes decide per slice: (P, N)
    stack = np.random.default_rng(1).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    vol = absent.predict_slices(stack, ["nodule"], batch_size=2)
    assert vol.exists.shape == (1, 3) and not vol.found.any() and vol.prob.max() == 0


def test_the_existence_threshold_is_the_predictors_operating_point() -> None:
    """Below the Predictor's existence_threshold an answer is empty; at or above it the mask
    decides: the head that answers sigmoid(-5) = 0.0067 hides the mask at 0.5 (the default),
    not at 0.005 or 0 (never), and `found` follows the same threshold."""
    image = np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)
    model = _model(-5.0)
    default, low, never = (Predictor(model, existence_threshold=t) for t in (0.5, 0.005, 0.0))
    hidden = Predictor(model)
    for p in (default, low, never, hidden):
        p.set_image(image)
    assert hidden.predict(["nodule"]).prob.max() == 0  # 0.5 is the default
    assert not default.predict(["nodule"]).found.any()
    for p in (low, never):
        shown = p.predict(["nodule", "liver"])
        assert shown.exists == pytest.approx(1 / (1 + math.exp(5)), rel=1e-4)
        assert shown.found.all() and shown.prob.max() > 0.01
        assert shown.existence_threshold == p.existence_threshold
    strict = Predictor(_model(5.0), existence_threshold=0.999)  # sigmoid(5) = 0.9933
    strict.set_image(image)
    assert not strict.predict(["liver"]).found.any() and strict.predict(["liver"]).prob.max() == 0
    stack = np.random.default_rng(1).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    vol = low.predict_slices(stack, ["nodule"], batch_size=2)
    assert vol.found.shape == (1, 3) and vol.found.all() and vol.prob.max() > 0.01
    with pytest.raises(ValueError, match=r"existence_threshold must be in \[0, 1\]"):
        Predictor(model, existence_threshold=1.5)


def test_predict_takes_the_existence_threshold(tmp_path: Path, capsys) -> None:
    checkpoint = _model(-5.0).save_pretrained(tmp_path / "ckpt")
    image = tmp_path / "slice.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)).save(image)
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(image),
            "--prompt", "nodule"]
    assert cli.main([*argv, "--out", str(tmp_path / "low"), "--existence-threshold", "0.001"]) == 0
    assert "not found" not in capsys.readouterr().out
    result = json.loads((tmp_path / "low" / "predictions.json").read_text())
    assert result["existence_threshold"] == 0.001 and result["prompts"][0]["found"] is True
    assert np.asarray(Image.open(tmp_path / "low" / "nodule_mask.png")).max() == 255
    assert cli.main([*argv, "--out", str(tmp_path / "high"), "--existence-threshold", "0.2"]) == 0
    assert "'nodule': not found (existence 0.01 < 0.2)" in capsys.readouterr().out
    assert cli.main([*argv, "--out", str(tmp_path / "bad"), "--existence-threshold", "2"]) == 1
    assert "--existence-threshold must be in [0, 1], got 2.0" in capsys.readouterr().err


def test_the_checkpoints_existence_threshold_is_the_default(tmp_path: Path, capsys,
                                                          phantoms) -> None:
    """A threshold written into the checkpoint (`boltzformer calibrate` writes one) is what
    Predictor, evaluate and predict gate at unless told otherwise; an old config without one
    reads 0.5, and one out of [0, 1] is refused on loading."""
    model = _model(-5.0)  # existence sigmoid(-5) = 0.0067
    model.config = replace(model.config, existence_threshold=0.001)
    checkpoint = model.save_pretrained(tmp_path / "ckpt")
    loaded = BoltzFormer.from_pretrained(checkpoint)
    assert loaded.config.existence_threshold == 0.001
    image = np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)
    shown, told = Predictor(loaded), Predictor(loaded, existence_threshold=0.5)
    for p in (shown, told):
        p.set_image(image)
    assert shown.existence_threshold == 0.001 and shown.predict(["nodule"]).found.all()
    assert told.predict(["nodule"]).prob.max() == 0
    png = tmp_path / "slice.png"
    Image.fromarray(image).save(png)
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(png), "--prompt", "nodule"]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 0
    assert "not found" not in capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert result["existence_threshold"] == 0.001
    data = BiomedParseDataset(phantoms, "test", image_size=64)
    scored = evaluate(loaded, data, progress=False)
    assert scored.info["existence_threshold"] == 0.001
    assert all(r["pred_pixels"] > 0 for r in scored.samples)  # none gated at 0.0067 >= 0.001
    config = json.loads((checkpoint / "config.json").read_text())
    del config["existence_threshold"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    assert BoltzFormer.from_pretrained(checkpoint).config.existence_threshold == 0.5
    config["existence_threshold"] = 1.5
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="existence_threshold"):
        BoltzFormer.from_pretrained(checkpoint)


def test_predict_says_not_found_and_writes_an_empty_mask(tmp_path: Path, capsys) -> None:
    checkpoint = _model(-5.0).save_pretrained(tmp_path / "ckpt")
    image = tmp_path / "slice.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(image),
            "--prompt", "nodule", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "'nodule': not found" in capsys.readouterr().out
    assert np.asarray(Image.open(out / "nodule_mask.png")).max() == 0
    record = json.loads((out / "predictions.json").read_text())["prompts"][0]
    assert record["found"] is False and record["existence"] < 0.5


def test_web_status_names_the_targets_not_found() -> None:
    assert existence_note(["a"], None) == ""  # no head: nothing to say
    assert existence_note(["a", "b"], np.array([True, True])) == ""
    assert existence_note(["a", "b"], np.array([True, False])) == ' "b": not found (empty mask).'
    note = existence_note(["a", "b"], np.array([[True, False, True], [False, False, False]]))
    assert note == ' "a" found on 2 of 3 slices; "b": not found (empty mask).'
