"""The main job end to end (`boltzformer demo`) and the paper-comparison study, in small."""

import json

import pytest

from boltzformer.apps.demo import DemoSettings, run_demo
from boltzformer.apps.study import TABLES, StudySettings, plan
from boltzformer.cli import main


def test_demo_writes_report_and_figures_beside_the_experts(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(DemoSettings(out_dir=out, minutes=0.05, images=12, image_size=96,
                                   batch_size=4, workers=0, progress=False, expert=True))
    for name in ("report.md", "predictions.png", "sampling.png", "loss_curve.png",
                 "dice_vs_size.png", "metrics.json", "per_sample.csv"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "# BoltzFormer demo" in report and "small" in report
    assert "![Boltzmann sampling across layers](sampling.png)" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == result["metrics"]["n_samples"] > 0
    assert (out / "run" / "last" / "model.safetensors").is_file()
    # --expert: the U-Net trained for the same minutes, scored alike, side by side
    assert "Against the U-Net expert" in report and "| U-Net expert |" in report
    expert = json.loads((out / "expert" / "metrics.json").read_text())
    assert expert["n_present"] == result["metrics"]["n_present"] and "grounding" in expert
    assert result["expert"]["n_samples"] == result["metrics"]["n_samples"]


def test_study_plan_shares_the_default_run_across_tables():
    cells = plan(StudySettings(out_dir=None))
    keys = {(v.key, seed) for _, v, seed in cells}
    # every table is there, with 3 seeds for the main ones and 1 for the ablations
    assert {t.name for t, _, _ in cells} == {t.name for t in TABLES}
    assert sum(1 for t, v, _ in cells if t.name == "table3_attention") == 9
    assert sum(1 for t, v, _ in cells if t.name == "table4_tau0") == 4
    assert sum(1 for t, v, _ in cells if t.name == "deep_supervision") == 9
    # the default Boltzmann model appears in every table but is one run per seed
    assert ("boltzmann", 0) in keys and len(keys) < len(cells)
    assert len(keys) == 34  # the full study's runs
    # the recipe's switches are training overrides; the expert is its own run
    assert ("loss.deep_supervision=False", 2) in keys and ("unet-expert", 2) in keys
    assert ("train.prompts_per_image=1", 0) in keys


def test_quick_study_writes_every_table_and_resumes(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", str(out), "--quick"]) == 0
    for table in TABLES:
        md = (out / f"{table.name}.md").read_text()
        assert all(v.label in md for v in table.variants), table.name
        assert (out / f"{table.name}.csv").is_file()
    assert (out / "study.png").is_file() and "date:" in (out / "summary.md").read_text()
    results = sorted((out / "runs").glob("*/result.json"))
    assert any("constant-prompt" in p.parent.name for p in results)
    stamps = {p: p.stat().st_mtime_ns for p in results}
    assert main(["study", str(out), "--quick"]) == 0  # finished runs are not redone
    assert {p: p.stat().st_mtime_ns for p in results} == stamps


def test_parallel_jobs_give_the_same_runs_as_one_at_a_time(tmp_path):
    """--jobs trains cells in separate processes; each run is still its own seeded run."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--quick", "--tables", "table3_attention"]
    assert main(["study", str(one), *args]) == 0
    assert main(["study", str(two), *args, "--jobs", "2"]) == 0

    def read(out):
        return {p.parent.name: json.loads(p.read_text())
                for p in (out / "runs").glob("*/result.json")}

    serial, parallel = read(one), read(two)
    assert set(serial) == set(parallel) == {"attention=full-s0", "attention=masked-s0",
                                            "boltzmann-s0"}
    for key in serial:
        for metric in ("small", "large", "all"):
            assert parallel[key][metric] == pytest.approx(serial[key][metric], abs=0.01), key


def test_demo_rejects_a_bad_image_size_before_doing_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--image-size", "100"]) == 1
    assert "--image-size must be a multiple of 32" in capsys.readouterr().err
    assert not out.exists()
