"""The size floor: which prompts meet which floor, answers under it made empty, the choice of
its fraction on hand-made rows and on a written data set, its round trip through checkpoints,
and what evaluate, Predictor, `boltzformer calibrate` and `predict` do with it."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from boltzformer import Predictor, cli
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.calibrate import (
    best_fraction,
    calibrate_gates,
    format_table,
    gated_rows,
    score_fractions,
    training_sizes,
    with_calibration,
)
from boltzformer.evaluation.evaluate import evaluate
from boltzformer.modeling.boltzformer import BoltzFormer, build_model
from boltzformer.modeling.checkpoint import CheckpointError
from boltzformer.modeling.size_floor import SizeFloor, answer_floor
from boltzformer.train.config import TrainConfig
from boltzformer.train.data import split_by_image
from boltzformer.train.run_dir import BEST

SIZES = {"left adrenal gland": 0.0004, "adrenal gland": 0.002, "liver": 0.05}


def test_a_prompt_meets_the_floor_of_the_target_it_names() -> None:
    floor = SizeFloor(SIZES, 0.5)
    assert floor.floor_of("left adrenal gland") == pytest.approx(0.0002)
    # the longest name that fits, as the "labels" text encoder reads a canonical prompt
    assert floor.floor_of("left adrenal gland in abdomen CT") == pytest.approx(0.0002)
    assert floor.floor_of("adrenal gland in abdomen MRI") == pytest.approx(0.001)
    assert floor.floor_of("a tumour of the liver") == 0.0  # free text names no target
    assert floor.floor_of("anything", target="liver") == pytest.approx(0.025)
    assert floor.floors(["liver", "kidney"]).tolist() == pytest.approx([0.025, 0.0])
    with pytest.raises(ValueError, match="size_floors"):
        SizeFloor({"liver": 1.5}, 0.5)
    with pytest.raises(ValueError, match="size_floor_fraction"):
        SizeFloor(SIZES, -0.1)


def test_answers_under_their_floor_become_empty() -> None:
    logits = torch.full((3, 1, 10, 10), -5.0)
    logits[0, 0, :1, :3] = 5.0  # 3 pixels: 3 % of the image
    logits[1, 0, :2, :5] = 5.0  # 10 pixels: 10 %
    logits[2, 0, :1, :1] = 5.0  # 1 pixel, floor 0
    sizes = {"a": 0.1, "b": 0.1}
    out, small = answer_floor(logits, SizeFloor(sizes, 0.5), ["a", "b", "c"])
    assert small is not None and small.tolist() == [True, False, False]
    assert (out[0] < 0).all() and torch.equal(out[1:], logits[1:])
    assert torch.sigmoid(out[0]).max() == 0.0  # exactly empty
    # by target name when given, whatever the prompt
    _, small = answer_floor(logits, SizeFloor(sizes, 0.5), ["x", "x", "x"], ["a", "a", "a"])
    assert small is not None and small.tolist() == [True, False, True]
    assert answer_floor(logits, None, ["a", "b", "c"]) == (logits, None)


def test_training_sizes_take_the_percentile_of_present_objects() -> None:
    samples = [SimpleNamespace(target="a", area=a, mask_path=Path("m"))
               for a in (0.001, 0.002, 0.003, 0.0)]  # the absent one does not count
    samples.append(SimpleNamespace(target="b", area=0.0, mask_path=Path("m")))  # never present
    assert training_sizes(samples, 50) == {"a": pytest.approx(0.002)}
    assert training_sizes(samples, 0) == {"a": pytest.approx(0.001)}


def test_the_fraction_with_the_best_validation_score_is_chosen() -> None:
    sizes = {"a": 0.01}
    rows = [
        {"target": "a", "size": "absent", "pred_area": 0.002, "dice": 0.0},  # a speck
        {"target": "a", "size": "small", "pred_area": 0.012, "dice": 0.8},
        {"target": "a", "size": "small", "pred_area": 0.004, "dice": 0.5},
        {"target": "z", "size": "absent", "pred_area": 0.001, "dice": 0.0},  # no floor: stays
    ]
    table = score_fractions(rows, sizes, [0.0, 0.5, 1.0])
    # 0: scores 0, 0.8, 0.5, 0; 0.5 (floor 0.005): 1, 0.8, 0, 0; 1 (0.01): the same
    assert [r["score"] for r in table] == pytest.approx([1.3 / 4, 1.8 / 4, 1.8 / 4])
    assert [r["absent_painted"] for r in table] == pytest.approx([1.0, 0.5, 0.5])
    assert [r["present_dice"] for r in table] == pytest.approx([0.65, 0.4, 0.4])
    assert best_fraction(table) == 0.5  # a tie goes to the smaller fraction


class _Speck(nn.Module):
    """A stand-in model that answers every prompt with the same 2 x 2 square at (8, 8)."""

    takes_targets = True

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, images, prompts, *, image_index=None, generator=None,  # noqa: ANN001
                targets=None):
        logits = torch.full((len(prompts), 1, *images.shape[-2:]), -10.0) + self.bias
        logits[:, :, 8:10, 8:10] = 10.0
        return SimpleNamespace(logits=logits)


def _square(size: int, top: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, top : top + side] = True
    return mask


def _dots_and_flecks(write_dataset, small_config, val_fraction: float
                     ) -> tuple[TrainConfig, BiomedParseDataset, list[int], list[bool]]:
    """10 images: "dot" (4 x 4 around the speck) in every one, "fleck" (the same) in the even
    ones and absent (an empty mask) in the odd ones -> a run config on them, the data set,
    the run's validation items and, per validation item, whether it is an absent fleck."""
    items, sentences = {}, {}
    for i in range(10):
        image = np.full((64, 64), 40 + i, np.uint8)
        fleck = _square(64, 7, 4) if i % 2 == 0 else np.zeros((64, 64), bool)
        items[f"img{i}.png"] = (image, {"dot": _square(64, 7, 4), "fleck": fleck})
        sentences |= {f"img{i}_dot.png": ["dot"], f"img{i}_fleck.png": ["fleck"]}
    root = write_dataset(items, sentences=sentences)
    values = small_config(root)
    values["data"]["val_fraction"] = val_fraction
    cfg = TrainConfig.from_dict(values)
    base = BiomedParseDataset(root, "train", image_size=64)
    _, val = split_by_image(base, val_fraction, cfg.train.seed)
    absent = [base.samples[i].target == "fleck" and int(base.samples[i].image_path.stem[3:]) % 2
              == 1 for i in val]
    return cfg, base, val, absent


def test_calibration_floors_the_specks_of_absent_targets(write_dataset, small_config) -> None:
    # the model paints a 2 x 2 speck where the dot and the fleck are (or would be)
    cfg, base, val, absent_items = _dots_and_flecks(write_dataset, small_config, 0.3)
    cal = calibrate_gates(_Speck(), cfg, fractions=[0.0, 0.5, 1.0], progress=False)
    # every object is 16 pixels of 4096: the floors are fractions of that
    assert cal.floor.sizes == pytest.approx({"dot": 16 / 4096, "fleck": 16 / 4096})
    absent = sum(absent_items)
    present = len(val) - absent
    # Dice of the 4-pixel speck on a 16-pixel object: 2 * 4 / 20 = 0.4; under a floor of
    # 0.5 * 16 = 8 pixels every speck goes: absent ones score 1, present ones 0
    assert (cal.n_val, cal.n_absent) == (len(val), absent)
    assert [r["score"] for r in cal.table] == pytest.approx(
        [0.4 * present / len(val), absent / len(val), absent / len(val)])
    assert cal.floor.fraction == (0.5 if absent > 0.4 * present else 0.0)

    # evaluate applies the floor it is given, and scores without it when asked
    model = _Speck()
    model.size_floor = SizeFloor(cal.floor.sizes, 0.5)  # type: ignore[assignment]
    floored = evaluate(model, base, progress=False)
    assert all(r["pred_pixels"] == 0 for r in floored.samples)
    assert floored.metrics["absent"]["false_positive"] == 0
    assert floored.info["size_floor_fraction"] == 0.5
    plain = evaluate(model, base, progress=False, size_floor=False)
    assert all(r["pred_pixels"] == 4 for r in plain.samples)
    assert plain.info["size_floor_fraction"] == 0.0


class _JudgedSpeck(_Speck):
    """The speck, with an existence head that is sure of "dot" (0.9) and not of "fleck"
    (0.3): a model with the head, answering whole images."""

    config = SimpleNamespace(existence_head=True, window_size=0, window_overlap=0.5,
                             window_scale=1.0)

    def forward(self, images, prompts, *, image_index=None, generator=None,  # noqa: ANN001
                targets=None):
        out = super().forward(images, prompts, targets=targets)
        prob = torch.tensor([0.9 if t == "dot" else 0.3 for t in targets])
        out.existence_logits = torch.logit(prob)
        return out


def test_calibration_chooses_the_existence_threshold(write_dataset, small_config) -> None:
    # the dots and flecks; the head answers 0.3 for a fleck, so a threshold above 0.3 empties
    # every fleck answer (absent ones score 1, present ones 0) and one at or below it keeps
    # the speck (present 0.4, absent 0)
    cfg, base, val, absent_items = _dots_and_flecks(write_dataset, small_config, 0.5)
    cal = calibrate_gates(_JudgedSpeck(), cfg, fractions=[0.0], thresholds=[0.5, 0.0, 0.2],
                          progress=False)
    flecks = sum(base.samples[i].target == "fleck" for i in val)
    absent = sum(absent_items)
    present, dots = flecks - absent, len(val) - flecks
    assert [r["threshold"] for r in cal.thresholds] == [0.0, 0.2, 0.5]  # tried in order
    kept = (0.4 * dots + 0.4 * present) / len(val)
    gated = (0.4 * dots + absent) / len(val)
    assert [r["score"] for r in cal.thresholds] == pytest.approx([kept, kept, gated])
    assert cal.existence_threshold == (0.5 if gated > kept else 0.0)  # a tie: the lower
    assert "| existence threshold |" in format_table(cal)
    # the rows kept are those of the chosen threshold: gated answers empty
    chosen_fleck = [r for r in cal.rows if r["target"] == "fleck"]
    assert all((r["pred_pixels"] == 0) == (cal.existence_threshold == 0.5)
               for r in chosen_fleck)
    # a model without the head: no threshold, the floor alone
    assert calibrate_gates(_Speck(), cfg, fractions=[0.0], progress=False
                           ).existence_threshold is None


def test_gated_rows_empty_the_answers_under_the_threshold() -> None:
    rows = [{"size": "absent", "existence": 0.2, "pred_area": 0.01, "pred_pixels": 3,
             "intersection": 0, "dice": 0.0},
            {"size": "small", "existence": 0.2, "pred_area": 0.01, "pred_pixels": 3,
             "intersection": 2, "dice": 0.5},
            {"size": "small", "existence": 0.8, "pred_area": 0.01, "pred_pixels": 3,
             "intersection": 2, "dice": 0.5},
            {"size": "small", "existence": float("nan"), "pred_area": 0.01, "pred_pixels": 3,
             "intersection": 2, "dice": 0.5}]
    out = gated_rows(rows, 0.5)
    assert [r["dice"] for r in out] == [1.0, 0.0, 0.5, 0.5]
    assert [r["pred_area"] for r in out] == [0.0, 0.0, 0.01, 0.01]
    assert rows[0]["dice"] == 0.0  # the input rows are not changed
    assert gated_rows(rows, 0.0) == rows


def _floored_model(fraction: float) -> BoltzFormer:
    torch.manual_seed(0)
    model = build_model("tiny", image_size=64, backbone="mobilenetv3_small_050", hidden_dim=32,
                        mask_dim=32, text_width=32, text_layers=1, text_vocab_size=512,
                        num_layers=3, ffn_dim=64, num_queries=4, num_heads=2)
    with torch.no_grad():  # PiGMA's correction far above 0: every answer is the whole image
        model.pigma.out.weight.zero_()
        model.pigma.out.bias.fill_(1000.0)
    with_calibration(model, SizeFloor({"nodule": 0.6}, fraction))
    return model.eval()


def test_the_floor_travels_with_the_checkpoint(tmp_path: Path) -> None:
    model = _floored_model(1.0)
    assert model.size_floor == SizeFloor({"nodule": 0.6}, 1.0)
    saved = model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((saved / "config.json").read_text())
    assert config["size_floors"] == {"nodule": 0.6} and config["size_floor_fraction"] == 1.0
    assert BoltzFormer.from_pretrained(saved).size_floor == model.size_floor
    # checkpoints written before the floor existed load without one
    del config["size_floors"], config["size_floor_fraction"]
    (saved / "config.json").write_text(json.dumps(config))
    assert BoltzFormer.from_pretrained(saved).size_floor is None
    config["size_floors"] = {"nodule": 2.0}
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="size_floors"):
        BoltzFormer.from_pretrained(saved)


def test_predictor_answers_under_the_floor_with_an_empty_mask() -> None:
    image = np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)
    # a floor of 2 x 0.6 of the image: no answer can reach it
    high = Predictor(_floored_model(2.0))
    high.set_image(image)
    pred = high.predict(["nodule", "nodule in chest CT", "liver"])
    assert pred.exists is None and pred.floored is not None
    assert pred.floored.tolist() == [True, True, False]  # "liver" has no floor
    assert pred.found is not None and pred.found.tolist() == [False, False, True]
    assert pred.prob[:2].max() == 0.0
    low = Predictor(_floored_model(0.0))  # fraction 0: no floor at all
    low.set_image(image)
    assert low.predict(["nodule"]).floored is None and low.predict(["nodule"]).found is None
    assert np.array_equal(low.predict(["liver"]).prob, pred.prob[2:])
    stack = np.random.default_rng(1).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    vol = high.predict_slices(stack, ["nodule", "liver"], batch_size=2)
    assert vol.floored is not None and vol.floored.shape == (2, 3)
    assert vol.floored[0].all() and not vol.floored[1].any() and vol.prob[0].max() == 0


def test_predict_says_not_found_under_the_floor(tmp_path: Path, capsys) -> None:
    checkpoint = _floored_model(2.0).save_pretrained(tmp_path / "ckpt")
    image = tmp_path / "slice.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(image),
            "--prompt", "nodule", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "'nodule': not found (smaller than the target's size floor)" in capsys.readouterr().out
    assert np.asarray(Image.open(out / "nodule_mask.png")).max() == 0
    record = json.loads((out / "predictions.json").read_text())["prompts"][0]
    assert record["found"] is False and record["under_size_floor"] is True
    assert "existence" not in record  # no existence head


def test_calibrate_command_writes_the_floor_into_the_run(tiny_run: Path, tmp_path: Path,
                                                         capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / BEST / "config.json").read_text()
    assert cli.main(["calibrate", str(run), "--fractions", "0,1", "--dry-run",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| 0 " in out and "| 1 " in out and "nothing written" in out
    assert (run / BEST / "config.json").read_text() == before
    assert cli.main(["calibrate", str(run), "--fractions", "0,1", "--no-progress"]) == 0
    config = json.loads((run / BEST / "config.json").read_text())
    chosen = config["size_floor_fraction"]
    assert chosen in (0.0, 1.0) and f"fraction {chosen:g} chosen" in capsys.readouterr().out
    data = BiomedParseDataset(TrainConfig.from_yaml(run / "config.yaml").data.root, "train",
                              image_size=64)
    names = {s.target for s in data.samples if s.area}
    assert config["size_floors"] and set(config["size_floors"]) <= names
    assert all(0 < v <= 1 for v in config["size_floors"].values())
    # bad input: one line, before any model is loaded
    assert cli.main(["calibrate", str(run), "--fractions", "half"]) == 1
    assert "--fractions must be numbers" in capsys.readouterr().err
    assert cli.main(["calibrate", str(run), "--thresholds", "0,2"]) == 1
    assert "--thresholds must be numbers in [0, 1]" in capsys.readouterr().err
    assert cli.main(["calibrate", str(tmp_path / "nowhere")]) == 1
    assert "not found" in capsys.readouterr().err


def test_a_windowed_models_floor_sizes_are_shares_of_one_window(tmp_path):
    """A model answering 64-px windows judges an answer's area against one window, so its
    calibrated sizes are the objects' pixels over 64², not over the whole image."""
    from boltzformer.data.biomedparse import Sample
    from boltzformer.evaluation.calibrate import window_share
    from boltzformer.inference.windowed import WindowSettings

    image = tmp_path / "a_CT_chest.png"
    Image.fromarray(np.zeros((128, 256, 3), np.uint8)).save(image)
    sample = Sample(image, tmp_path / "m.png", "nodule", "CT", "chest", ("nodule",), area=0.01)
    assert window_share(sample, WindowSettings(64)) == pytest.approx(0.01 * 128 * 256 / 64**2)
    assert window_share(sample, WindowSettings(64, scale=0.5)) == pytest.approx(
        0.01 * 128 * 256 / 4 / 64**2)
    assert window_share(replace(sample, area=0.9), WindowSettings(64)) == 1.0
