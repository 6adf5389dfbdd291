"""Broken checkpoints end in one line naming the file and what to do, from Python, the command
line and training's resume; never in a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import SRC

import boltzformer
from boltzformer import BoltzFormer, CheckpointError, Predictor, cli
from boltzformer.train import TrainConfig, train


def _corrupt_weights(ckpt: Path) -> str:
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file" * 4)
    return "model.safetensors: not a readable safetensors file"


def _truncate_weights(ckpt: Path) -> str:
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    return "model.safetensors: not a readable safetensors file"


def _edit_config(**changes) -> Callable[[Path], str]:
    def edit(ckpt: Path) -> str:
        values = json.loads((ckpt / "config.json").read_text()) | changes
        (ckpt / "config.json").write_text(json.dumps(values))
        return "unused"

    return edit


def _mismatched_config(ckpt: Path) -> str:
    _edit_config(hidden_dim=64)(ckpt)
    return "model.safetensors does not match the model of"


def _invalid_json(ckpt: Path) -> str:
    (ckpt / "config.json").write_text('{"image_size": 64,')
    return "config.json: not valid JSON"


def _unknown_key(ckpt: Path) -> str:
    _edit_config(hiden_dim=32)(ckpt)
    return "config.json: unknown model config key(s) hiden_dim"


def _wrong_type(ckpt: Path) -> str:
    _edit_config(num_queries="four")(ckpt)
    return "config.json: model config key num_queries must be of type int"


BREAKAGES = {
    "corrupt-weights": _corrupt_weights,
    "truncated-weights": _truncate_weights,
    "mismatched-config": _mismatched_config,
    "invalid-json": _invalid_json,
    "unknown-key": _unknown_key,
    "wrong-type": _wrong_type,
}


@pytest.fixture
def broken(request, tmp_path, small_model) -> tuple[Path, str]:
    """A checkpoint folder broken in one way, and the start of the message it must give."""
    torch.manual_seed(0)
    ckpt = boltzformer.build_model("tiny", **small_model).save_pretrained(tmp_path / "ckpt")
    return ckpt, BREAKAGES[request.param](ckpt)


def _one_line(text: str) -> str:
    assert "Traceback" not in text
    assert text.count("\n") <= 1 and text.strip(), f"not one line: {text!r}"
    return text


@pytest.mark.parametrize("broken", list(BREAKAGES), indirect=True)
def test_python_api_raises_one_line(broken):
    ckpt, message = broken
    for load in (BoltzFormer.from_pretrained, Predictor.from_pretrained):
        with pytest.raises(CheckpointError) as err:
            load(ckpt)
        assert isinstance(err.value, ValueError)
        assert message in _one_line(str(err.value))
        assert str(ckpt) in str(err.value)


@pytest.mark.parametrize("broken", list(BREAKAGES), indirect=True)
def test_predict_and_evaluate_exit_1_with_one_line(broken, sample_dir, phantoms, tmp_path, capsys):
    ckpt, message = broken
    image = sample_dir / "biomedparse-demo" / "demo" / "01_CT_lung.png"
    runs = {
        "predict": ["predict", "--checkpoint", str(ckpt), "--input", str(image),
                    "--prompt", "nodule in lung CT", "--out", str(tmp_path / "out")],
        "evaluate": ["evaluate", "--checkpoint", str(ckpt), "--data", str(phantoms),
                     "--split", "test", "--out", str(tmp_path / "report")],
    }
    for verb, argv in runs.items():
        assert cli.main(argv) == 1
        captured = capsys.readouterr()
        err = _one_line(captured.err)
        assert err.startswith(f"boltzformer {verb}: error: ") and message in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize("broken", ["mismatched-config"], indirect=True)
def test_the_command_prints_no_traceback(broken, sample_dir, tmp_path):
    """The real process: stderr holds the one line and nothing else (no warning, no trace)."""
    ckpt, message = broken
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "boltzformer.cli", "predict", "--checkpoint", str(ckpt),
         "--input", str(sample_dir / "dicom" / "CT_lung_nodule.dcm"),
         "--prompt", "nodule in lung CT", "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1 and message in _one_line(done.stderr)


def test_resume_from_broken_checkpoints(phantoms, tmp_path, small_config):
    cfg = TrainConfig.from_dict(small_config(phantoms, train={"max_steps": 1, "epochs": 1}))
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    last = run / "last"
    weights = (last / "model.safetensors").read_bytes()

    (last / "model.safetensors").write_bytes(weights[:100])
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors"):
        train(cfg, run, resume=True, progress=False)
    (last / "model.safetensors").write_bytes(weights)

    state = last / "trainer_state.safetensors"
    saved_state = state.read_bytes()
    state.write_bytes(saved_state[:50])
    with pytest.raises(CheckpointError, match="trainer_state.safetensors: not a readable"):
        train(cfg, run, resume=True, progress=False)
    state.write_bytes(saved_state)

    # weights of another model (config.yaml gone, so the changed settings are not refused)
    (run / "config.yaml").unlink()
    wider = cfg.with_overrides({"model.hidden_dim": 48, "model.mask_dim": 48})
    with pytest.raises(CheckpointError, match="does not match the model of this run's") as err:
        train(wider, run, resume=True, progress=False)
    _one_line(str(err.value))
