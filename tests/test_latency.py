"""`boltzformer latency`: what it measures and writes (no timing is asserted)."""

from __future__ import annotations

import json
import math

import pytest

from boltzformer import Predictor, cli
from boltzformer.apps.latency import LatencySettings, slope


def test_slope_by_hand() -> None:
    per_prompt, fixed = slope([1, 2, 4, 8], [0.3 + 0.05 * p for p in (1, 2, 4, 8)])
    assert per_prompt == pytest.approx(0.05) and fixed == pytest.approx(0.3)
    assert slope([4], [2.0, 4.0]) == (0.0, 3.0)


def test_latency_command_times_each_prompt_count(tmp_path, capsys, monkeypatch):
    calls: list[int] = []
    predict = Predictor.predict

    def counting(self, prompts, **kwargs):
        calls.append(len(prompts))
        return predict(self, prompts, **kwargs)

    monkeypatch.setattr(Predictor, "predict", counting)
    out = tmp_path / "latency.json"
    argv = ["latency", "--sizes", "64,96", "--prompts", "1,3", "--repeats", "2", "--warmup",
            "1", "--batch-sizes", "1,2", "--threads", "1", "--json", str(out), "--quiet"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| 64² |" in printed and "| 96² |" in printed and "per extra prompt" in printed
    assert calls == [1, 3] * 3 * 2  # each count, every round (1 warm-up + 2), each size
    result = json.loads(out.read_text())
    assert result["settings"]["preset"] == "tiny" and result["settings"]["repeats"] == 2
    assert result["machine"]["torch_threads"] == 1 and "load_average_before" in result["machine"]
    assert result["command"].startswith("boltzformer latency --preset tiny --sizes 64,96")
    assert [r["size"] for r in result["rows"]] == [64, 96]
    for row in result["rows"]:
        assert len(row["encode_all_s"]) == 2 and row["encode_s"] > 0
        assert set(row["predict_s"]) == {"1", "3"}
        assert all(len(t) == 2 for t in row["predict_all_s"].values())
        assert math.isfinite(row["per_extra_prompt_s"]) and math.isfinite(row["decoder_fixed_s"])
        assert row["image_one_prompt_s"] == pytest.approx(row["encode_s"] + row["predict_s"]["1"])
    assert [(b["size"], b["batch_size"]) for b in result["batches"]] == [
        (64, 1), (64, 2), (96, 1), (96, 2)]
    for b in result["batches"]:
        assert b["images_per_s"] == pytest.approx(b["batch_size"] / b["batch_s"])


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--sizes", "100", "multiples of 32"),
    ("--prompts", "0,9", "prompt counts must be within 1-8"),
    ("--preset", "nope", None),  # argparse's choices: exit code 2
])
def test_latency_bad_input(capsys, flag, value, message):
    argv = ["latency", flag, value, "--quiet"]
    if message is None:
        with pytest.raises(SystemExit):
            cli.main(argv)
        return
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("boltzformer latency: error:") and message in err


def test_settings_count_rounds() -> None:
    assert LatencySettings(sizes=(256, 512), repeats=3, warmup=1).rounds() == 8
