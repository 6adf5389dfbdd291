"""Training: config parsing, checkpoints that survive crashes, exact resumption, the loop."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from boltzformer.cli import main
from boltzformer.data import BiomedParseDataset
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.train import NonFiniteLossError, TrainConfig, train
from boltzformer.train import checkpoint as ckpt
from boltzformer.train import step as step_module
from boltzformer.train.config import parse_overrides
from boltzformer.train.optim import lr_factor

SRC = Path(__file__).resolve().parents[1] / "src"


# --- configuration ----------------------------------------------------------------------------
def test_config_sections_overrides_and_errors(tmp_path) -> None:
    cfg = TrainConfig.load(None, ["optim.lr=1e-3", "model.attention=full", "train.max_steps=5",
                                  "model.image_size=128", "train.patience=null"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # YAML "1e-3" is a str
    assert cfg.model.resolve().attention == "full"
    assert cfg.model.resolve().image_size == 128
    assert cfg.train.max_steps == 5 and cfg.train.patience is None
    assert cfg.train.amp == "none"

    path = tmp_path / "run.yaml"
    cfg.to_yaml(path)
    assert TrainConfig.from_yaml(path) == cfg

    with pytest.raises(ValueError, match="valid keys are: .*lr"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1e-3}})
    with pytest.raises(ValueError, match="valid keys are: .*attention"):
        TrainConfig.load(None, ["model.atention=full"])
    with pytest.raises(ValueError, match="choose one of tiny"):
        TrainConfig.from_dict({"model": {"preset": "huge"}})
    with pytest.raises(ValueError, match="config section key.*valid keys are: model, data"):
        TrainConfig.from_dict({"optimizer": {}})
    with pytest.raises(ValueError, match="train.batch_size must be int"):
        TrainConfig.load(None, ["train.batch_size=big"])
    with pytest.raises(ValueError, match="attention='sparse' is not valid"):
        TrainConfig.load(None, ["model.attention=sparse"])
    with pytest.raises(ValueError, match="nan_policy"):
        TrainConfig.load(None, ["train.nan_policy=ignore"])
    with pytest.raises(ValueError, match="not key=value"):
        parse_overrides(["optim.lr"])


def test_shipped_example_config_loads() -> None:
    cfg = TrainConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    assert cfg.model.preset == "tiny"


def test_learning_rate_schedule() -> None:
    f = dict(warmup=4, total=14, schedule="cosine", min_ratio=0.1)
    assert [lr_factor(s, **f) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lr_factor(4, **f) == pytest.approx(1.0)
    assert lr_factor(9, **f) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down the cosine
    assert lr_factor(14, **f) == pytest.approx(0.1)
    assert lr_factor(100, **f) == pytest.approx(0.1)
    assert lr_factor(9, **{**f, "schedule": "constant"}) == 1.0
    # Under a time budget the cosine follows the share of the minutes spent, not the steps.
    assert lr_factor(5, **f, progress=0.5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(5, **f, progress=1.0) == pytest.approx(0.1)
    assert lr_factor(2, **f, progress=0.9) == pytest.approx(0.6)  # warm-up still by steps


# --- checkpoints --------------------------------------------------------------------------------
def test_state_round_trips_through_safetensors(tmp_path, small_model) -> None:
    from boltzformer.modeling.boltzformer import build_model

    model = build_model("tiny", **small_model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    model(torch.rand(2, 3, 64, 64) * 255, ["a", "b"]).logits.mean().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "progress": {"step": 3, "best": math.inf},
             "rng": [{"torch": torch.get_rng_state()}]}
    ckpt.save_checkpoint(tmp_path / "last", model, state)
    back = ckpt.load_state(tmp_path / "last")
    assert back["progress"] == state["progress"]
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]  # tuples kept
    for key, value in state["optimizer"]["state"].items():  # int keys kept
        for name, tensor in value.items():
            assert torch.equal(back["optimizer"]["state"][key][name], tensor)
    assert torch.equal(back["rng"][0]["torch"], state["rng"][0]["torch"])
    restored = BoltzFormer.from_pretrained(tmp_path / "last")
    assert all(torch.equal(a, b) for a, b in
               zip(model.state_dict().values(), restored.state_dict().values(), strict=True))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last"]  # no temporary folder left


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_crash_while_saving_never_leaves_a_half_written_checkpoint(
    tmp_path, small_model, monkeypatch, crash_at
) -> None:
    """Die at the first rename (new folder complete, old untouched) or the second (old moved
    aside): the old checkpoint stays loadable, or `recover` brings it back."""
    from boltzformer.modeling.boltzformer import build_model

    torch.manual_seed(0)
    first = build_model("tiny", **small_model)
    ckpt.save_checkpoint(tmp_path / "last", first, {"step": 1})
    second = build_model("tiny", **small_model)
    calls = []
    real_replace = os.replace

    def dying_replace(src, dst):
        calls.append(src)
        if len(calls) == crash_at:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path / "last", second, {"step": 2})
    monkeypatch.undo()
    assert (tmp_path / "last.tmp").is_dir()  # the new one, never under the real name
    if crash_at == 1:
        assert ckpt.load_state(tmp_path / "last") == {"step": 1}
    assert ckpt.recover(tmp_path / "last") == tmp_path / "last"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert ckpt.load_state(tmp_path / "last") == {"step": 1}
    restored = BoltzFormer.from_pretrained(tmp_path / "last")
    assert torch.equal(next(iter(restored.state_dict().values())),
                       next(iter(first.state_dict().values())))


# --- the loop ----------------------------------------------------------------------------------
def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_short_run_lowers_validation_loss(phantoms, tmp_path, small_config) -> None:
    cfg = TrainConfig.from_dict(small_config(phantoms, train={"epochs": 4, "patience": 10,
                                                             "checkpoint_every": 100}))
    result = train(cfg, tmp_path / "run", progress=False)
    vals = [r for r in _records(tmp_path / "run") if r["kind"] == "val"]
    assert len(vals) == 4 and result.stop_reason == "epochs"
    assert min(r["val_loss"] for r in vals[1:]) < vals[0]["val_loss"]
    assert result.metrics["best_val_loss"] == min(r["val_loss"] for r in vals)
    assert result.metrics["pairs_per_s"] > 0
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "loss_curve.png"):
        assert (run / name).is_file()
    # the data plan's open fields are stored as resolved: whole images (crop_size 0)
    planned = cfg.replace(data=replace(cfg.data, scale=1.0, object_crops=1 / 3))
    assert TrainConfig.from_yaml(run / "config.yaml") == planned
    model = BoltzFormer.from_pretrained(result.best_checkpoint)
    assert model.config == cfg.model.resolve()
    assert _records(run)[-1]["kind"] == "end"
    assert not list(run.rglob("*.tmp"))

    with pytest.raises(ValueError, match="already holds a training run"):
        train(cfg, run, progress=False)
    changed = TrainConfig.from_dict(small_config(phantoms, optim={"lr": 1e-2}))
    with pytest.raises(ValueError, match=r"optim.lr: 0.002 \(run\) vs 0.01"):
        train(changed, run, resume=True, progress=False)
    # Spelling out a preset default is no change; a finished run resumes to its end at once.
    same = cfg.with_overrides({"model.attention": "boltzmann"})
    again = train(same, run, resume=True, progress=False)
    assert again.metrics["step"] == result.metrics["step"] and again.stop_reason == "epochs"


def test_resume_after_a_crash_matches_an_uninterrupted_run(
    phantoms, tmp_path, small_config, monkeypatch
) -> None:
    cfg = TrainConfig.from_dict(small_config(phantoms, train={
        "epochs": 2, "checkpoint_every": 3, "batch_size": 2, "prompts_per_image": 3}))
    full = train(cfg, tmp_path / "full", progress=False)
    per_epoch = full.metrics["step"] // 2
    assert per_epoch >= 4  # the crash below falls in epoch 2, after its first checkpoint

    real_loss, calls = step_module.training_loss, []

    def crash_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == per_epoch + 4:  # a training step in the middle of epoch 2
            raise KeyboardInterrupt("simulated crash")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(step_module, "training_loss", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "crashed", progress=False)
    monkeypatch.undo()
    resumed = train(cfg, tmp_path / "crashed", resume=True, progress=False)

    assert resumed.metrics["step"] == full.metrics["step"]
    for (name, a), b in zip(full.model.state_dict().items(),
                            resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resuming"
    kinds = [r["kind"] for r in _records(tmp_path / "crashed")]
    assert kinds.count("resume") == 1 and kinds.count("end") == 1
    steps = [r["step"] for r in _records(tmp_path / "crashed") if r["kind"] == "train"]
    assert steps == sorted(set(steps))  # records after the checkpoint were dropped, then redone


def test_sigkill_mid_epoch_then_resume(phantoms, tmp_path, small_config) -> None:
    """Kill the training process mid-epoch; every checkpoint file on disk still loads, and
    `--resume` finishes the run."""
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(small_config(phantoms, train={"epochs": 2})))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "boltzformer", "train", "--config", str(config),
           "--out", str(run), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Wait for a record at an odd step past the first checkpoint of epoch 1 or 2: the
        # checkpoint of the step before is complete and the run is inside an epoch.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "metrics.jsonl").exists():
                steps = [r["step"] for r in _records_safe(run) if r["kind"] == "train"]
                if any(s >= 3 and s % 2 == 1 for s in steps) and (run / "last").is_dir():
                    break
            time.sleep(0.01)
        assert proc.poll() is None, "training ended before it could be killed: " + str(
            proc.stdout.read() if proc.stdout else "")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not any(r["kind"] == "end" for r in _records_safe(run))

    # Everything under a checkpoint's real name is complete (a kill during a save can only
    # leave the new folder as last.tmp, or the old one as last.old, which `recover` restores).
    for folder in (run / "last", run / "best"):
        if folder.exists():
            BoltzFormer.from_pretrained(folder)
            if folder.name == "last":  # resumable: its trainer state is complete too
                ckpt.load_state(folder)
    assert ckpt.recover(run / "last") == run / "last"
    assert ckpt.load_state(run / "last")["progress"]["step"] >= 2
    assert _records_safe(run)[-1]["kind"] in ("train", "val")  # killed inside the run

    code = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert code.returncode == 0, code.stderr
    records = _records(run)
    assert records[-1]["kind"] == "end" and records[-1]["epochs"] == 2
    assert [r["kind"] for r in records].count("resume") == 1
    assert not list(run.rglob("*.tmp")) and not list(run.rglob("*.old"))
    for folder in (run / "last", run / "best"):
        BoltzFormer.from_pretrained(folder)
    assert ckpt.load_state(run / "last")["progress"]["epoch"] == 2


def _records_safe(run: Path) -> list[dict]:
    """Records of a file that may be being appended to (a partial last line is skipped)."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_non_finite_loss(phantoms, tmp_path, small_config, monkeypatch, policy) -> None:
    cfg = TrainConfig.from_dict(small_config(
        phantoms, train={"epochs": 1, "nan_policy": policy, "max_steps": 4, "batch_size": 2,
                         "prompts_per_image": 1}))
    real_loss, calls = step_module.training_loss, []

    def nan_on_call_3(*args, **kwargs):
        calls.append(1)
        loss, aux = real_loss(*args, **kwargs)
        return (loss * math.nan if len(calls) == 3 else loss), aux

    monkeypatch.setattr(step_module, "training_loss", nan_on_call_3)
    run = tmp_path / "run"
    if policy == "stop":
        with pytest.raises(NonFiniteLossError, match="non-finite loss .* at step 3 "):
            train(cfg, run, progress=False)
        state = ckpt.load_state(run / "last")  # the step-2 checkpoint, untouched
        assert state["progress"]["step"] == 2
        params = BoltzFormer.from_pretrained(run / "last").state_dict()
        assert all(torch.isfinite(p).all() for p in params.values())
    else:
        result = train(cfg, run, progress=False)
        assert result.metrics["skipped_steps"] == 1 and result.metrics["step"] == 4
        assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_train_command_errors_are_one_line(tmp_path, capsys, phantoms) -> None:
    code = main(["train", "--data", str(phantoms), "--out", str(tmp_path / "r"),
                 "optim.learning_rate=1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "unknown 'optim' config key(s) learning_rate; valid keys are: lr" in err
    code = main(["train", "--out", str(tmp_path / "r"), "model.preset=huge"])
    assert code == 1 and "choose one of tiny" in capsys.readouterr().err
    code = main(["train", "--out", str(tmp_path / "r")])
    assert code == 1 and "set data.root" in capsys.readouterr().err


def test_time_budget_stops_mid_epoch_with_a_validated_checkpoint(
    phantoms, tmp_path, small_config
) -> None:
    cfg = TrainConfig.from_dict(small_config(phantoms, train={"max_minutes": 1e-4}))
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.stop_reason == "max_minutes" and result.metrics["step"] == 1
    assert result.best_checkpoint is not None  # validated before stopping
    state = ckpt.load_state(result.last_checkpoint)["progress"]
    assert (state["epoch"], state["batch"]) == (0, 1)  # a later --resume continues mid-epoch
    val = [r for r in _records(tmp_path / "run") if r["kind"] == "val"]
    assert len(val) == 1 and val[0]["complete"] is False


def test_a_label_model_learns_its_vocabulary_from_the_data(phantoms, tmp_path,
                                                           small_config) -> None:
    cfg = TrainConfig.from_dict(small_config(phantoms, model={"text_encoder": "labels"},
                                             train={"epochs": 1, "max_steps": 2}))
    result = train(cfg, tmp_path / "run", progress=False)
    model = BoltzFormer.from_pretrained(result.last_checkpoint)
    data = BiomedParseDataset(phantoms, "train", image_size=64)
    assert model.config.text_labels == tuple(data.target_names)  # samples' and categories
    assert {s.target for s in data.samples} <= set(model.config.text_labels)
    assert model.text_encoder.labels == model.config.text_labels


def test_a_bf16_channels_last_run_saves_a_loadable_float32_checkpoint(phantoms, tmp_path,
                                                                      small_config) -> None:
    """train.amp=bf16 with train.channels_last: the model trains in that layout, says which
    precision it ran in, and its checkpoint loads as any other (float32 weights)."""
    cfg = TrainConfig.from_dict(small_config(phantoms, train={
        "epochs": 1, "max_steps": 2, "amp": "bf16", "channels_last": True}))
    run_dir = tmp_path / "run"
    result = train(cfg, run_dir, progress=False)
    assert result.metrics["amp"] == "bf16"
    convs = [m.weight for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    model = BoltzFormer.from_pretrained(result.last_checkpoint)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 result.model.state_dict().values()))
