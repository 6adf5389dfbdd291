"""`boltzformer evaluate` as a function: a checkpoint or run folder scored on BiomedParse
folders (`evaluate.evaluate`), the report written, the verb's summary returned.

Apart from evaluate.py because it loads checkpoints through `train.run_dir`, and the
trainer imports evaluate.py for its validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset

from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import evaluate, write_report
from boltzformer.inference.windowed import check_window_overrides, window_settings
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.dtypes import dtype_name, resolve_dtype
from boltzformer.modeling.existence import (
    check_existence_threshold,
    check_min_score,
)
from boltzformer.train.run_dir import resolve_checkpoint


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: Sequence[str | Path],
    out_dir: str | Path,
    *,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 8,
    threshold: float = 0.5,
    existence_threshold: float | None = None,
    size_floor: bool = True,
    min_score: float = 0.0,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    workers: int = 0,
    progress: bool = True,
    window_size: int | None = None,
    window_overlap: float | None = None,
) -> str:
    """`boltzformer evaluate`: a checkpoint (or a run folder's, `resolve_checkpoint`) scored
    on the `split` of one or more BiomedParse folders together, the report written into
    `out_dir`. Returns the verb's summary: Dice overall and per size, objects, absent
    targets, and where the report is. `dtype`: the model cast to it (None: as saved).
    `window_size` (0: whole images, resized) and `window_overlap` override the checkpoint's
    sliding windows; with windows the items are read and scored at their own size."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if existence_threshold is not None:  # None: the checkpoint's
        check_existence_threshold(existence_threshold, "--existence-threshold")  # before loading
    check_min_score(min_score, "--min-score")
    check_window_overrides(window_size, window_overlap, ("--window-size", "--window-overlap"))
    cast = None if dtype is None else resolve_dtype(dtype, "--dtype")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    found = resolve_checkpoint(Path(checkpoint))
    model = BoltzFormer.from_pretrained(found, map_location=device)
    if cast is not None:
        model = model.to(cast)
    windows = window_settings(model.config, window_size, window_overlap)
    size = None if windows is not None else model.config.image_size  # windows: own size
    dataset: ConcatDataset[dict[str, Any]] = ConcatDataset([
        BiomedParseDataset(root, split, image_size=size) for root in data
    ])
    result = evaluate(model, dataset, seed=seed, batch_size=batch_size, threshold=threshold,
                      existence_threshold=existence_threshold, workers=workers,
                      size_floor=size_floor, min_score=min_score, progress=progress,
                      windows=windows)
    result.info.update(checkpoint=str(found), data=", ".join(map(str, data)), split=split,
                       dtype=dtype_name(model.dtype))
    paths = write_report(result, out_dir)
    overall = result.metrics["overall"]
    strata = result.metrics["size_strata"]["weighted"]
    objects = result.metrics["objects"]["overall"]
    lines = [f"{result.metrics['n_samples']} samples: Dice {overall['dice_mean']:.4f} "
             f"(small {strata['small']['dice_mean']:.4f}, of which tiny "
             f"{strata['tiny']['dice_mean']:.4f}; large {strata['large']['dice_mean']:.4f}), "
             f"failure rate {overall['failure_rate']:.2%}; objects: F1 {objects['f1']:.4f}, "
             f"PQ {objects['pq']:.4f}"]
    absent = result.metrics["absent"]
    if absent["n"]:
        exist = absent["existence"]
        lines.append(f"absent targets: {absent['n']}, false positives "
                     f"{absent['false_positive_rate']:.2%}"
                     + (f"; existence AUROC {exist['auroc']:.4f}, accuracy "
                        f"{exist['accuracy']:.2%}" if exist else ""))
    lines.append(f"report: {paths['report']}")
    return "\n".join(lines)
