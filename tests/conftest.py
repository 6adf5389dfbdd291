"""Shared test fixtures: the shared sample data folder and a writer of small data sets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`<repo>/../shared`: real sample data (BiomedParse demo, a DICOM slice) beside the repo."""
    path = Path(__file__).resolve().parents[2] / "shared"
    if not path.is_dir():  # CI clones the repo beside shared/: its absence is an error
        pytest.fail(f"shared sample data not found at {path}: clone the repo beside shared/")
    return path


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
