"""Writing a phantom data set in the BiomedParse format (`boltzformer synth`'s engine)."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import DataError
from ..size_stats import size_statistics, write_size_stats
from .phantom import make_phantom
from .prompts import SENTENCES, sentences_for


def _write_one(task: tuple[int, str, int, int, float, float, str]) -> dict[str, Any]:
    """Draw phantom `index` and write its image and masks; returns what the JSON needs."""
    index, split, size, seed, absent_fraction, foreign_fraction, out_dir = task
    phantom = make_phantom(index, size=size, seed=seed, absent_fraction=absent_fraction,
                           foreign_fraction=foreign_fraction)
    empty = (phantom.absent, phantom.foreign)
    out = Path(out_dir)
    stem = f"{index:05d}_{phantom.modality}_{phantom.site}"
    Image.fromarray(phantom.image).save(out / split / f"{stem}.png", compress_level=3)
    masks = []
    for target in sorted(phantom.masks):
        mask = phantom.masks[target]
        mask_file = f"{stem}_{target.replace(' ', '+')}.png"
        Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(
            out / f"{split}_mask" / mask_file, compress_level=1
        )
        masks.append((mask_file, target, float(mask.mean()), target in empty))
    return {
        "index": index,
        "split": split,
        "file_name": f"{stem}.png",
        "modality": phantom.modality,
        "site": phantom.site,
        "contrast": phantom.contrast,
        "masks": masks,
    }


def _coco(records: list[dict[str, Any]], split: str, size: int, seed: int) -> dict[str, Any]:
    """BiomedParse/COCO-like JSON of one split, with `area_fraction` and `absent` added."""
    categories = {name: i + 1 for i, name in enumerate(SENTENCES)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for rec in records:
        images.append(
            {
                "id": rec["index"],
                "file_name": rec["file_name"],
                "height": size,
                "width": size,
                "modality": rec["modality"],
                "site": rec["site"],
                "contrast": rec["contrast"],
            }
        )
        for mask_file, target, area, absent in rec["masks"]:
            sentences = sentences_for(target, rec["site"], rec["modality"])
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": rec["index"],
                    "category_id": categories[target],
                    "file_name": rec["file_name"],
                    "mask_file": mask_file,
                    "split": split,
                    "target": target,
                    "area_fraction": area,
                    "absent": absent,
                    "sentences": [
                        {"raw": s, "sent": s, "sent_id": j} for j, s in enumerate(sentences)
                    ],
                }
            )
    return {
        "info": {"description": "boltzformer synthetic phantoms", "seed": seed, "size": size},
        "categories": [{"id": i, "name": name} for name, i in categories.items()],
        "images": images,
        "annotations": annotations,
    }


def generate_phantoms(
    out_dir: str | Path,
    *,
    images: int = 2000,
    size: int = 256,
    seed: int = 0,
    test_fraction: float = 0.2,
    absent_fraction: float = 0.0,
    foreign_fraction: float = 0.0,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write a phantom data set in the BiomedParse format and return a summary.

    Writes `train/`, `train_mask/`, `train.json` (and the same for `test`: the last
    round(images x test_fraction) images), `size_stats.md` and `size_stats.csv`. Each image
    has one mask per target drawn in it; with probability `absent_fraction` one target is
    left out and written with an empty mask; with probability `foreign_fraction` a target of
    the other site (chest on abdomen, abdomen on chest) is added with an empty mask. Both
    are flagged `"absent": true` in the JSON, as `boltzformer convert` writes them.
    `workers`: processes (default: all CPUs for 64+ images). The summary holds the counts,
    the per-target size rows ("stats") and "seconds".
    """
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    if size < 96:
        raise ValueError(f"size must be at least 96 pixels (small targets need room), got {size}")
    if not 0.0 <= test_fraction < 1.0 or not (0.0 <= absent_fraction <= 1.0
                                              and 0.0 <= foreign_fraction <= 1.0):
        raise ValueError("test_fraction must be in [0, 1), absent_fraction and "
                         "foreign_fraction in [0, 1]")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder; choose a new output folder")
    start = time.perf_counter()
    n_test = round(images * test_fraction)
    splits = ["train"] * (images - n_test) + ["test"] * n_test
    for split in sorted(set(splits)):
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / f"{split}_mask").mkdir(exist_ok=True)
    tasks = [(i, splits[i], size, seed, absent_fraction, foreign_fraction, str(out))
             for i in range(images)]
    if workers is None:
        workers = (os.cpu_count() or 1) if images >= 64 else 1
    with tqdm(total=images, disable=not progress, desc="phantoms", unit="img") as bar:
        if workers <= 1:
            records = []
            for task in tasks:
                records.append(_write_one(task))
                bar.update()
        else:
            # fork where there is one (as torch's DataLoader does): spawn would re-import the
            # caller's __main__, which breaks scripts and `python -m` without a main guard.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with context.Pool(workers) as pool:
                records = []
                chunk = max(1, min(32, images // (8 * workers)))
                for rec in pool.imap(_write_one, tasks, chunksize=chunk):
                    records.append(rec)
                    bar.update()

    for split in sorted(set(splits)):
        chosen = [r for r in records if r["split"] == split]
        text = json.dumps(_coco(chosen, split, size, seed), indent=1)
        (out / f"{split}.json").write_text(text, encoding="utf-8")
    stats = size_statistics(records)
    write_size_stats(out, stats)
    names = sorted(set(splits))
    return {
        "out_dir": str(out),
        "images": {s: splits.count(s) for s in names},
        "masks": {s: sum(len(r["masks"]) for r in records if r["split"] == s) for s in names},
        "size": size,
        "seed": seed,
        "stats": stats,
        "seconds": time.perf_counter() - start,
    }
