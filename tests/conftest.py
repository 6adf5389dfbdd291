"""Shared test fixtures: sample data, writers of small data sets, the synthetic phantoms and a
CPU-fast model configuration."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from boltzformer.apps.web_load import spawn, wait_until_up
from boltzformer.data import generate_phantoms
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.train import TrainConfig, train

#: This checkout's sources, for the commands tests start in their own processes.
SRC = Path(__file__).resolve().parents[1] / "src"


#: The real sample scans the tests read, kept in the repository (tests/samples/, 3.7 MB; see
#: its README for sources and licences): five images of the BiomedParse demo set with their 25
#: masks, and one CT DICOM slice.
SAMPLE_DIR = Path(__file__).resolve().parent / "samples"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """`tests/samples/`: `biomedparse-demo/` (a BiomedParse-format split named `demo`) and
    `dicom/CT_lung_nodule.dcm`."""
    return SAMPLE_DIR


WriteDataset = Callable[..., Path]


@pytest.fixture
def write_dataset(tmp_path: Path) -> WriteDataset:
    """Write a small BiomedParse-format split and return its root folder.

    Call as `write_dataset({image_name: (image array or PIL image, {target: mask})}, split=...,
    sentences={mask_file: [...]})`; masks are bool arrays (saved 0/255) or PIL images.
    With `sentences`, a `<split>.json` is written listing every mask.
    """

    def write(
        items: dict[str, tuple[np.ndarray | Image.Image, dict[str, np.ndarray | Image.Image]]],
        *,
        split: str = "train",
        sentences: dict[str, list[str]] | None = None,
        root: Path | None = None,
    ) -> Path:
        root = root or tmp_path / "dataset"
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}_mask").mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id, (name, (image, masks)) in enumerate(items.items()):
            picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
            picture.save(root / split / name)
            images.append({"id": image_id, "file_name": name})
            stem = Path(name).stem
            for target, mask in masks.items():
                mask_file = f"{stem}_{target.replace(' ', '+')}.png"
                if not isinstance(mask, Image.Image):
                    mask = Image.fromarray(np.asarray(mask, dtype=np.uint8) * np.uint8(255))
                mask.save(root / f"{split}_mask" / mask_file)
                prompts = (sentences or {}).get(mask_file, [])
                annotations.append(
                    {
                        "id": len(annotations),
                        "image_id": image_id,
                        "file_name": name,
                        "mask_file": mask_file,
                        "sentences": [
                            {"raw": s, "sent": s, "sent_id": i} for i, s in enumerate(prompts)
                        ],
                    }
                )
        if sentences is not None:
            data = {"images": images, "annotations": annotations}
            (root / f"{split}.json").write_text(json.dumps(data))
        return root

    return write


def disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """(size, size) bool disc centred at pixel (cx, cy) with radius r."""
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@pytest.fixture
def make_disc() -> Callable[[int, float, float, float], np.ndarray]:
    return disc


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
        # whole images, as the tests were written: the 96-pixel phantoms at image_size 64
        # would otherwise be planned as crops (train/plan.py)
        "data": {"root": str(data), "workers": 0, "crop_size": 0},
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


@pytest.fixture(scope="session")
def tiny_run(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real training run folder of the small model (read only: copy it to change it): one
    step on the phantoms under a time budget, validated, so it holds best/, last/ and a
    snapshot."""
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    cfg = TrainConfig.from_dict(_small_config(
        phantoms, train={"max_minutes": 1e-4, "snapshot_minutes": 1e-6}))
    train(cfg, run, progress=False)
    return run


def answering_existence(model: BoltzFormer, bias: float) -> BoltzFormer:
    """`model` with its existence head's last layer answering sigmoid(`bias`) for every
    prompt (in place; returned in eval mode)."""
    assert model.existence is not None, "the model has no existence head"
    last = model.existence.mlp.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(bias)
    return model.eval()


@pytest.fixture
def small_model() -> dict:
    """Model overrides of the `tiny` preset for a CPU-fast test model (no "preset" key)."""
    return {k: v for k, v in SMALL_MODEL.items() if k != "preset"}


@pytest.fixture
def small_config():
    """small_config(data, **sections) -> a TrainConfig dict for the small model on `data`,
    with `sections` ({"train": {...}}) updating the defaults."""
    return _small_config


def start_serve(checkpoint: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`boltzformer serve --checkpoint CHECKPOINT ARGS` on a free port in its own process
    (output piped, text); returns it and the page's URL. Ctrl-C (SIGINT) stops it."""
    return spawn(checkpoint, *args)


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> str:
    """The page at `url` once the server `proc` answers; fails if it exits or times out."""
    try:
        return wait_until_up(url, proc, timeout)
    except RuntimeError as err:
        output = proc.stdout.read() if proc.poll() is not None else ""
        pytest.fail(f"{err}: {output}")
