"""Kaggle Data Science Bowl 2018 nuclei (stage 1 train, BBBC038) -> the BiomedParse layout.

Source layout: `stage1_train/<id>/images/<id>.png` (RGBA; alpha is opaque and dropped) and
`stage1_train/<id>/masks/<k>.png` (one nucleus each). Each image gets one target, "nuclei":
the union of its mask files, with the instance map (mask file k -> one id) beside it.

The imaging type, told from the image's colours (`imaging_type`), becomes the modality:
"fluorescence microscopy", "brightfield microscopy" or "H&E microscopy" (stained tissue);
the site is "cells". DSB2018 has no labelled split: `split_by_name` draws one by image id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import DataError
from ..medio import read_image
from .dataset_writer import DatasetWriter, TargetMask, split_by_name, tile_origins

SITE = "cells"
TARGET = "nuclei"
#: Mean over pixels of (max - min) over R, G, B at or above which an image counts as colour.
COLOUR_SPREAD = 2.0
#: Median gray level (0-255) below which the background counts as dark.
DARK_MEDIAN = 100.0


def imaging_type(image: np.ndarray) -> str:
    """The imaging type of an (H, W, 3) uint8 image, by a rule on its colour statistics.

    Dark background (median gray level < 100) -> "fluorescence"; else colour (mean channel
    spread >= 2 gray levels) -> "H&E" (stained tissue); else -> "brightfield" (gray, bright).
    """
    pixels = image.astype(np.float32)
    if float(np.median(pixels.mean(axis=2))) < DARK_MEDIAN:
        return "fluorescence"
    spread = float((pixels.max(axis=2) - pixels.min(axis=2)).mean())
    return "H&E" if spread >= COLOUR_SPREAD else "brightfield"


def dsb_sentences(target: str, modality: str, site: str) -> list[str]:
    """Prompts of the nuclei of one imaging type, the plainest first."""
    return [
        f"{target} in {modality}",
        f"cell {target} in a {modality} image",
        f"all {target} in this {modality} image",
        f"{target} in {site} {modality}",
    ]


def find_ids(src: Path) -> tuple[Path, list[str]]:
    """(the stage1_train folder, its image ids sorted); a one-line error if not DSB2018."""
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    root = src / "stage1_train" if (src / "stage1_train").is_dir() else src
    ids = sorted(
        d.name
        for d in root.iterdir()
        if (d / "images" / f"{d.name}.png").is_file() and (d / "masks").is_dir()
    )
    if not ids:
        raise DataError(
            f"{src}: not a DSB2018 folder (expected stage1_train/<id>/images/<id>.png and "
            "<id>/masks/*.png)"
        )
    return root, ids


def read_instances(folder: Path, shape: tuple[int, int]) -> np.ndarray:
    """Mask files of one image (sorted by name) as one (H, W) int32 map: file k -> id k+1
    (where masks overlap, the later file wins)."""
    instances = np.zeros(shape, np.int32)
    for k, path in enumerate(sorted(folder.glob("*.png")), start=1):
        try:
            with Image.open(path) as image:
                mask = np.asarray(image.convert("L")) > 0
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{path}: not a readable mask image ({err})") from err
        if mask.shape != shape:
            raise DataError(f"{path}: mask is {mask.shape[::-1]} but its image is {shape[::-1]}")
        instances[mask] = k
    return instances


def convert_dsb2018(
    src: str | Path,
    out: str | Path,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    tile: int | None = None,
    progress: bool = False,
) -> dict:
    """Convert DSB2018 stage 1 train into `out`; returns the writer's summary with
    "imaging" (images per imaging type) added. `tile`: cut larger images into tiles
    (`tile_origins`); None keeps them whole (the data set resizes them when read)."""
    if tile is not None and tile < 32:
        raise ValueError(f"tile must be at least 32 pixels, got {tile}")
    root, ids = find_ids(Path(src))
    splits = split_by_name(ids, test_fraction, seed)
    info = {"test_fraction": test_fraction, "seed": seed, "tile": tile,
            "imaging_rule": "median gray < 100: fluorescence; else mean RGB spread >= 2: H&E; "
                            "else brightfield"}  # fmt: skip
    writer = DatasetWriter(Path(out), dsb_sentences, "DSB2018 nuclei (converted)", "empty", info)
    kinds: dict[str, int] = {}
    for image_id in tqdm(ids, disable=not progress, desc="dsb2018", unit="img"):
        image = read_image(root / image_id / "images" / f"{image_id}.png")
        kind = imaging_type(image)
        kinds[kind] = kinds.get(kind, 0) + 1
        instances = read_instances(root / image_id / "masks", image.shape[:2])
        height, width = image.shape[:2]
        for y in tile_origins(height, tile):
            for x in tile_origins(width, tile):
                window = np.s_[y : y + (tile or height), x : x + (tile or width)]
                tiled = tile is not None and (height > tile or width > tile)
                part = instances[window]
                writer.add(
                    splits[image_id],
                    f"{image_id}-y{y}x{x}" if tiled else image_id,
                    np.ascontiguousarray(image[window]),
                    f"{kind} microscopy",
                    SITE,
                    [TargetMask(TARGET, part > 0, part)],
                    {"source": image_id, "origin": [y, x], "imaging": kind},
                )
    return writer.finish() | {"imaging": dict(sorted(kinds.items()))}
