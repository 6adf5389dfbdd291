"""Shared fixtures: a small synthetic BiomedParse data set and a CPU-fast model config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from boltzformer.data.phantoms import generate_phantoms

# A model small enough for a few CPU steps per second at 64x64.
SMALL_MODEL = {
    "preset": "tiny",
    "image_size": 64,
    "backbone": "mobilenetv3_small_050",
    "hidden_dim": 32,
    "mask_dim": 32,
    "text_width": 32,
    "text_layers": 1,
    "text_vocab_size": 512,
    "num_layers": 3,
    "ffn_dim": 64,
    "num_queries": 4,
    "num_heads": 2,
}


def _small_config(data: Path, **sections: dict) -> dict:
    cfg = {
        "model": dict(SMALL_MODEL),
        "data": {"root": str(data), "workers": 0},
        "optim": {"lr": 2e-3, "warmup_steps": 2},
        "train": {"batch_size": 4, "epochs": 2, "checkpoint_every": 2, "log_every": 1},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg[name], **values}
    return cfg


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    """The test models are tiny: one intra-op thread is faster than two, and far faster when
    the cores are shared with other jobs (OpenMP threads then wait on each other)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in synthetic benchmark at 96x96 (the models see 64x64): 4 training and 2
    test images of ~12 masks each, with absent (empty-mask) targets in both splits."""
    root = tmp_path_factory.mktemp("phantoms") / "phantoms"
    generate_phantoms(root, images=6, size=96, seed=0, test_fraction=1 / 3,
                      absent_fraction=0.5, workers=1)
    return root


@pytest.fixture
def small_model() -> dict:
    """Model overrides of the `tiny` preset for a CPU-fast test model (no "preset" key)."""
    return {k: v for k, v in SMALL_MODEL.items() if k != "preset"}


@pytest.fixture
def small_config():
    """small_config(data, **sections) -> a TrainConfig dict for the small model on `data`,
    with `sections` ({"train": {...}}) updating the defaults."""
    return _small_config
