"""Distributed training: two CPU processes (gloo) under torchrun end with identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from safetensors.torch import load_file

SRC = Path(__file__).resolve().parents[1] / "src"

WORKER = """
import os, sys
from safetensors.torch import save_file
from boltzformer.train import TrainConfig, train

cfg = TrainConfig.from_yaml(sys.argv[1])
result = train(cfg, sys.argv[2], progress=False)
state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
save_file(state, os.path.join(sys.argv[3], f"rank{os.environ['RANK']}.safetensors"))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_hold_identical_parameters(phantoms, tmp_path, small_config) -> None:
    """On crops at native resolution (64 of the 96-pixel phantoms), so each rank cuts its own
    images' crops and validates on the fixed ones."""
    config = tmp_path / "cfg.yaml"
    settings = small_config(  # 2 prompts of each image per step
        phantoms, train={"epochs": 1, "max_steps": 4, "batch_size": 1, "prompts_per_image": 2,
                         "log_every": 2})
    settings["data"]["crop_size"] = 64
    config.write_text(yaml.safe_dump(settings))
    (tmp_path / "worker.py").write_text(WORKER)
    run, weights = tmp_path / "run", tmp_path / "weights"
    weights.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         str(tmp_path / "worker.py"), str(config), str(run), str(weights)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    rank0 = load_file(str(weights / "rank0.safetensors"))
    rank1 = load_file(str(weights / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for name, value in rank0.items():  # parameters and BatchNorm statistics alike
        assert value.equal(rank1[name]), f"{name} differs between ranks"

    # Only rank 0 wrote: one record per event, the checkpoint equals the trained weights.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["train", "train", "val", "end"]
    assert records[-1]["world_size"] == 2 and records[-1]["step"] == 4
    saved = load_file(str(run / "last" / "model.safetensors"))
    assert json.loads((run / "last" / "config.json").read_text())["window_size"] == 64
    assert all(saved[name].equal(rank0[name]) for name in saved)


FAILING_WORKER = """
import os, sys
import boltzformer.train.step as step
from boltzformer.cli import main

if os.environ["RANK"] == "1":  # rank 1 breaks on its second training step
    real, calls = step.training_loss, []
    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)
    step.training_loss = broken
sys.exit(main(sys.argv[1:]))
"""


def test_a_failing_rank_ends_the_job_with_a_clear_message(
    phantoms, tmp_path, small_config
) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(small_config(phantoms, train={"epochs": 1,
                                                                   "batch_size": 2})))
    (tmp_path / "worker.py").write_text(FAILING_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         str(tmp_path / "worker.py"), "train", "--config", str(config),
         "--out", str(tmp_path / "run"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "boltzformer train: error (rank 1 of 2): disk on fire" in proc.stderr
