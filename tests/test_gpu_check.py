"""`make gpu-check` on a CPU: the same code as on a GPU at `tiny` sizes, one JSON report."""

from __future__ import annotations

import json
import math

import pytest

from boltzformer.apps import gpu_check


def test_the_cpu_run_writes_every_check(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out), "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert report["ok"] and report["device"] == "cpu" and report["torch"]
    assert report["settings"]["preset"] == "tiny" and report["settings"]["size"] == 128
    checks = report["checks"]
    assert list(checks) == ["train", "torchrun", "predictor", "bench"]
    train = checks["train"]
    assert train["status"] == "ok" and train["amp"] == "bf16" and train["steps"] == 2
    assert len(train["losses"]) == 2 and all(math.isfinite(v) for v in train["losses"])
    assert checks["torchrun"]["status"] == "skipped"
    assert "tests/test_ddp.py" in checks["torchrun"]["reason"]
    dtypes = checks["predictor"]["dtypes"]
    assert set(dtypes) == {"float32", "bfloat16", "float16"}
    assert all(d["output_dtype"] == "float32" for d in dtypes.values())
    assert 0 < dtypes["bfloat16"]["max_abs_diff"] < 0.05
    assert dtypes["bfloat16"]["mean_abs_diff"] <= gpu_check.MEAN_DIFF_LIMIT
    bench = checks["bench"]
    assert bench["status"] == "ok" and len(bench["modes"]) == 4
    assert all(m["forward_seconds"] > 0 for m in bench["modes"].values())
    for check in checks.values():
        assert check["seconds"] >= 0 and check["peak_memory_mb"] is None  # no GPU
    assert "all checks passed" in capsys.readouterr().out


def test_a_failing_check_is_recorded_in_one_line_and_exits_1(tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("CUDA error: an illegal memory access\nmore lines of trace")

    monkeypatch.setitem(gpu_check.CHECKS, "bench", broken)
    out = tmp_path / "report.json"
    assert gpu_check.main(["--out", str(out), "--device", "cpu", "--checks",
                           "torchrun,bench"]) == 1
    report = json.loads(out.read_text())
    assert not report["ok"] and list(report["checks"]) == ["torchrun", "bench"]
    assert report["checks"]["bench"]["status"] == "failed"
    assert report["checks"]["bench"]["error"] == ("RuntimeError: CUDA error: an illegal memory "
                                                  "access")


def test_unknown_checks_are_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--checks", "train,warp"])
    assert "--checks: choose from train, torchrun, predictor, bench" in capsys.readouterr().err
