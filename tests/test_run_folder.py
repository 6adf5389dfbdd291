"""Which checkpoint a verb loads: a checkpoint folder, a training run folder (best/, else
last/, else the newest snapshot) or, for `serve`, the demo's run; each verb on a real run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from boltzformer import cli
from boltzformer.modeling.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from boltzformer.train.run_dir import (
    BEST,
    DEMO_RUN,
    LAST,
    SNAPSHOTS,
    resolve_checkpoint,
    snapshot_dir,
)


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    """A copy of the tiny training run, free to change."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_the_training_run_holds_what_the_resolver_looks_for(tiny_run):
    snapshots = list((tiny_run / SNAPSHOTS).iterdir())
    assert len(snapshots) == 1
    # the trainer names them as the resolver reads them: snapshots/<minutes, 07.2f>min (the
    # minutes are whatever the one step took, 0.00 on a quiet machine)
    minutes = float(snapshots[0].name.removesuffix("min"))
    assert snapshots == [snapshot_dir(tiny_run, minutes)] and minutes < 1
    for folder in (tiny_run / BEST, tiny_run / LAST, snapshots[0]):
        assert (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def test_a_run_folder_gives_best_then_last_then_the_newest_snapshot(run):
    assert resolve_checkpoint(run) == run / BEST
    assert resolve_checkpoint(run / LAST) == run / LAST  # a checkpoint folder: itself
    [written] = (run / SNAPSHOTS).iterdir()
    for minutes in (2.5, 10.0, 9999.99):
        shutil.copytree(written, snapshot_dir(run, minutes))
    incomplete = snapshot_dir(run, 20000.0)  # newer, but no weights
    incomplete.mkdir()
    shutil.copy(written / CONFIG_FILE, incomplete)

    shutil.rmtree(run / BEST)
    assert resolve_checkpoint(run) == run / LAST
    shutil.rmtree(run / LAST)
    assert resolve_checkpoint(run) == snapshot_dir(run, 9999.99)
    shutil.copytree(written, snapshot_dir(run, 10000.0))  # numbers, not names, are compared
    assert resolve_checkpoint(run) == snapshot_dir(run, 10000.0)
    shutil.rmtree(run / SNAPSHOTS)
    with pytest.raises(FileNotFoundError) as err:
        resolve_checkpoint(run)
    assert f"{run}: no checkpoint in this folder" in _one_line(err)


def test_nothing_loadable_is_one_line(run, tmp_path, capsys):
    with pytest.raises(FileNotFoundError) as err:
        resolve_checkpoint(tmp_path / "missing")
    assert "missing: no such folder; give a checkpoint folder" in _one_line(err)
    with pytest.raises(FileNotFoundError) as err:
        resolve_checkpoint(run / "config.yaml")
    assert "config.yaml is a file" in _one_line(err)
    # A checkpoint folder missing a file is itself: loading it names the missing file.
    (run / BEST / WEIGHTS_FILE).unlink()
    assert resolve_checkpoint(run / BEST) == run / BEST
    code = cli.main(["evaluate", "--checkpoint", str(run / BEST), "--data", str(run),
                     "--out", str(tmp_path / "r")])
    assert code == 1
    assert f"{run / BEST / WEIGHTS_FILE} not found" in capsys.readouterr().err


def test_no_path_means_the_demo_run(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        resolve_checkpoint(None)
    assert "make demo" in _one_line(err)
    shutil.copytree(tiny_run, DEMO_RUN)
    assert resolve_checkpoint(None) == DEMO_RUN / BEST


def test_predict_and_visualize_take_a_run_folder(tiny_run, sample_dir, tmp_path, capsys):
    image = sample_dir / "biomedparse-demo" / "demo" / "01_CT_lung.png"
    out = tmp_path / "preds"
    assert cli.main(["predict", "--checkpoint", str(tiny_run), "--input", str(image),
                     "--prompt", "nodule in lung CT", "--out", str(out)]) == 0
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["checkpoint"] == str(tiny_run / BEST)
    assert (out / summary["prompts"][0]["files"]["mask"]).is_file()

    figure = tmp_path / "sampling.png"
    assert cli.main(["visualize", "--checkpoint", str(tiny_run), "--input", str(image),
                     "--prompt", "nodule in lung CT", "--out", str(figure)]) == 0
    assert figure.is_file()
    assert cli.main(["visualize", "--checkpoint", str(tmp_path), "--input", str(image),
                     "--prompt", "nodule in lung CT", "--out", str(figure)]) == 1
    err = capsys.readouterr().err
    assert err == (f"boltzformer visualize: error: {tmp_path}: no checkpoint in this folder; "
                   "give a checkpoint folder (config.json + model.safetensors), a training "
                   "run folder (with best/, last/ or snapshots/) or a Hub id (org/name)\n")


def test_evaluate_takes_a_run_folder(tiny_run, phantoms, tmp_path):
    out = tmp_path / "report"
    assert cli.main(["evaluate", "--checkpoint", str(tiny_run), "--data", str(phantoms),
                     "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(tiny_run / BEST)
