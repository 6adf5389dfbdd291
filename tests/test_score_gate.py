"""The score gate (`min_score`): an answer that paints but whose mask score is below it is an
empty mask, by hand, in `evaluate`, in the Predictor (images, volumes, the sampling trace) and
in `boltzformer predict` / `evaluate` (their --min-score)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from boltzformer import Predictor, cli
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import evaluate
from boltzformer.modeling.boltzformer import BoltzFormer, build_model
from boltzformer.modeling.existence import ABSENT_LOGIT, mask_score, score_gate

SIG = torch.sigmoid(torch.tensor(0.5)).item()  # 0.62: the weak answers' score


def test_answers_scored_below_min_score_become_empty() -> None:
    logits = torch.full((3, 1, 4, 4), -6.0)
    logits[0, 0, :2, :2] = 8.0  # painted, sure: score sigmoid(8) = 0.9997
    logits[1, 0, :2, :2] = 0.5  # painted, unsure: score 0.62
    scores = mask_score(logits)  # the third paints nothing: score 0
    gated, unsure = score_gate(logits, scores, 0.9)
    assert unsure.tolist() == [False, True, True]  # painting nothing scores 0: not found
    assert torch.equal(gated[0], logits[0]) and (gated[1:] == ABSENT_LOGIT).all()
    assert not score_gate(logits, scores, 0.0)[1].any()  # 0: off
    assert score_gate(logits, scores, SIG + 1e-3)[1].tolist() == [False, True, True]
    assert score_gate(logits, scores, SIG - 1e-3)[1].tolist() == [False, False, True]
    with pytest.raises(ValueError, match=r"min_score must be in \[0, 1\]"):
        score_gate(logits, scores, 1.5)


class _Painter(nn.Module):
    """Paints a 2 x 2 square at (8, 8): at logit 10 for "dot", at 0.5 (unsure) for "fleck"."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, images, prompts, *, image_index=None, generator=None):  # noqa: ANN001
        logits = torch.full((len(prompts), 1, *images.shape[-2:]), -10.0) + self.bias
        for i, prompt in enumerate(prompts):
            logits[i, :, 8:10, 8:10] = 10.0 if prompt == "dot" else 0.5
        return SimpleNamespace(logits=logits)


def _square(size: int, top: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, top : top + side] = True
    return mask


def test_evaluate_applies_the_gate_and_keeps_the_score_of_the_ungated_answer(
        write_dataset) -> None:
    # 6 images: "dot" there in each; "fleck" there in the even ones, absent in the odd ones
    items, sentences = {}, {}
    for i in range(6):
        fleck = _square(32, 8, 2) if i % 2 == 0 else np.zeros((32, 32), bool)
        items[f"img{i}.png"] = (np.full((32, 32), 50 + i, np.uint8),
                                {"dot": _square(32, 8, 2), "fleck": fleck})
        sentences |= {f"img{i}_dot.png": ["dot"], f"img{i}_fleck.png": ["fleck"]}
    data = BiomedParseDataset(write_dataset(items, sentences=sentences), "train", image_size=32)
    plain = evaluate(_Painter(), data, progress=False)
    gated = evaluate(_Painter(), data, progress=False, min_score=0.8)
    assert plain.info["min_score"] == 0.0 and gated.info["min_score"] == 0.8
    assert plain.metrics["absent"]["false_positive"] == 3  # the odd images' flecks
    assert gated.metrics["absent"]["false_positive"] == 0
    for before, after in zip(plain.samples, gated.samples):
        assert after["mask_score"] == pytest.approx(before["mask_score"])
        if before["target"] == "dot":
            assert before["mask_score"] > 0.99 and after["dice"] == before["dice"] == 1.0
        else:  # the fleck's answer is dropped: present ones are lost, absent ones right
            assert before["mask_score"] == pytest.approx(SIG) and after["pred_pixels"] == 0
            assert after["dice"] == (1.0 if before["gt_pixels"] == 0 else 0.0)


def _model(bias: float) -> BoltzFormer:
    torch.manual_seed(0)
    model = build_model("tiny", image_size=64, backbone="mobilenetv3_small_050", hidden_dim=32,
                        mask_dim=32, text_width=32, text_layers=1, text_vocab_size=512,
                        num_layers=3, ffn_dim=64, num_queries=4, num_heads=2)
    with torch.no_grad():  # PiGMA's correction sets every logit near bias / 2
        model.pigma.out.weight.zero_()
        model.pigma.out.bias.fill_(bias)
    return model.eval()


def test_the_predictor_answers_unsure_prompts_with_an_empty_mask() -> None:
    image = np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)
    model = _model(2.0)  # every pixel painted at a probability well inside (0.5, 1)
    plain = Predictor(model)
    plain.set_image(image)
    ungated = plain.predict(["nodule", "liver"])
    assert ungated.unsure is None and ungated.found is None  # no head, no floor, no gate
    assert ungated.prob.min() > 0.5 and ungated.prob.max() < 0.99
    sure = Predictor(model, min_score=0.01)  # every answer scores above 0.01
    sure.set_image(image)
    kept = sure.predict(["nodule", "liver"])
    assert kept.unsure is not None and not kept.unsure.any() and kept.found.all()
    assert np.array_equal(kept.prob, ungated.prob)
    strict = Predictor(model, min_score=0.99)
    strict.set_image(image)
    dropped = strict.predict(["nodule", "liver"])
    assert dropped.unsure.tolist() == [True, True] and not dropped.found.any()
    assert dropped.prob.max() == 0.0
    assert strict.sampling("nodule").prob.max() == 0.0
    assert plain.sampling("nodule").prob.min() > 0.5
    stack = np.random.default_rng(1).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    vol = strict.predict_slices(stack, ["nodule", "liver"], batch_size=2)
    assert vol.unsure is not None and vol.unsure.shape == (2, 3) and vol.unsure.all()
    assert vol.found is not None and not vol.found.any() and vol.prob.max() == 0.0
    with pytest.raises(ValueError, match=r"min_score must be in \[0, 1\]"):
        Predictor(model, min_score=-0.1)


def test_predict_says_not_found_below_min_score(tmp_path: Path, capsys) -> None:
    checkpoint = _model(2.0).save_pretrained(tmp_path / "ckpt")
    image = tmp_path / "slice.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)).save(image)
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(image),
            "--prompt", "nodule"]
    assert cli.main([*argv, "--out", str(tmp_path / "out"), "--min-score", "0.99"]) == 0
    assert "'nodule': not found (mask score below --min-score)" in capsys.readouterr().out
    assert np.asarray(Image.open(tmp_path / "out" / "nodule_mask.png")).max() == 0
    result = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert result["min_score"] == 0.99
    assert result["prompts"][0]["found"] is False
    assert result["prompts"][0]["below_min_score"] is True
    assert cli.main([*argv, "--out", str(tmp_path / "kept"), "--min-score", "0.01"]) == 0
    assert np.asarray(Image.open(tmp_path / "kept" / "nodule_mask.png")).min() == 255
    assert cli.main([*argv, "--out", str(tmp_path / "bad"), "--min-score", "2"]) == 1
    assert "--min-score must be in [0, 1], got 2.0" in capsys.readouterr().err
    assert cli.main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(tmp_path),
                     "--out", str(tmp_path / "report"), "--min-score", "-1"]) == 1
    assert "--min-score must be in [0, 1], got -1.0" in capsys.readouterr().err
