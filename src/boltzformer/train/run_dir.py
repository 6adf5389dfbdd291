"""A training run folder (RUN_DIR): its layout, the rule for resuming it, and the one answer
to "which checkpoint does the user mean".

`boltzformer train` (and `boltzformer demo`, which trains into OUT/run) writes `best/` (the
lowest validation loss), `last/` (resumable), `snapshots/<minutes>min` (the weights every
`train.snapshot_minutes`), each a checkpoint folder (`modeling/checkpoint.py`); `config.yaml`
(the resolved TrainConfig; a resume may change only `RESUMABLE_CHANGES`), `metrics.jsonl`
(one JSON record per line, appended by rank 0, cut back to the checkpoint's count on resume)
and `loss_curve.png`. `resolve_checkpoint` turns what a user points a verb at (`predict`,
`visualize`, `evaluate`, `serve`) into the checkpoint folder to load.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.checkpoint import CONFIG_FILE, WEIGHTS_FILE, is_checkpoint
from boltzformer.modeling.hub import model_folder, parse_hub_id
from boltzformer.train.config import TrainConfig

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
CURVE_NAME = "loss_curve.png"
BEST, LAST, SNAPSHOTS = "best", "last", "snapshots"
#: The run folder `make demo` (`boltzformer demo`, default --out demo_output) trains into.
DEMO_RUN = Path("demo_output/run")
# Settings that may change when a run is resumed; anything else must match the run's config.
RESUMABLE_CHANGES: tuple[str, ...] = (
    "data.root", "data.workers", "train.epochs", "train.patience", "train.max_steps",
    "train.max_minutes", "train.checkpoint_every", "train.snapshot_minutes", "train.log_every",
    "train.nan_policy", "train.device",
)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append `record`, stamped with the time, as one line of `path`."""
    record = {**record, "time": round(time.time(), 3)}
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_records(path: Path, keep: int) -> int:
    """Keep the first `keep` lines of `path` (records written after a checkpoint, to be
    redone); the number of lines left."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) > keep:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(lines[:keep]))
        os.replace(tmp, path)
    return min(keep, len(lines))


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a metrics file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def save_snapshot(model: BoltzFormer, run_dir: Path, minutes: float, every: float) -> None:
    """Keep the weights in snapshots/<mark>min, `mark` the last multiple of `every` minutes
    reached, unless that snapshot exists (curves of a metric against training time)."""
    mark = math.floor(minutes / every) * every
    path = snapshot_dir(run_dir, mark)
    if mark > 0 and not path.exists():
        model.save_pretrained(path)


def check_resumable(saved: TrainConfig, new: TrainConfig, where: Path) -> None:
    """Raise if `new` changes settings of the run in `where` other than RESUMABLE_CHANGES."""
    old_flat, new_flat = _flatten(_resolved(saved)), _flatten(_resolved(new))
    diffs = [
        f"{k}: {old_flat.get(k)!r} (run) vs {new_flat.get(k)!r} (now)"
        for k in sorted(set(old_flat) | set(new_flat))
        if old_flat.get(k) != new_flat.get(k) and k not in RESUMABLE_CHANGES
    ]
    if diffs:
        raise ValueError(
            f"cannot resume {where.parent} with a different config ({'; '.join(diffs)}). "
            f"Only {', '.join(RESUMABLE_CHANGES)} may change on resume; start a new run "
            "folder for other changes"
        )


def _resolved(cfg: TrainConfig) -> dict[str, Any]:
    """The config as nested values, with the model section as the full model config."""
    return {**cfg.to_dict(), "model": cfg.model.resolve().to_dict()}


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def snapshot_dir(run_dir: Path, minutes: float) -> Path:
    """Where the snapshot after `minutes` of training goes: snapshots/0012.50min."""
    return run_dir / SNAPSHOTS / f"{minutes:07.2f}min"


def _minutes(snapshot: Path) -> float:
    """The training minutes of a snapshot folder's name (-inf for a name not written so)."""
    try:
        return float(snapshot.name.removesuffix("min"))
    except ValueError:
        return -math.inf


def run_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint to load from a run folder: `best/`, else `last/`, else the newest
    snapshot; None when it holds no complete checkpoint."""
    for candidate in (run_dir / BEST, run_dir / LAST):
        if is_checkpoint(candidate):
            return candidate
    snapshots = [p for p in (run_dir / SNAPSHOTS).glob("*") if is_checkpoint(p)]
    return max(snapshots, key=lambda p: (_minutes(p), p.name)) if snapshots else None


def resolve_checkpoint(path: Path | None) -> Path:
    """The checkpoint folder to load for `path`:

    - a checkpoint folder (it holds config.json or model.safetensors): `path` itself, so that
      loading it names a missing or broken file;
    - a training run folder: `run_checkpoint(path)` (best/, else last/, else the newest
      snapshot);
    - a Hugging Face Hub id (`org/name` or `org/name@revision`) that is not a local path:
      the repository's snapshot in the Hub cache, downloaded unless HF_HUB_OFFLINE is set
      (`modeling.hub.model_folder`; CheckpointError, one line, when it cannot be had);
    - None: the run folder `make demo` trains into, `DEMO_RUN`, the same way.

    FileNotFoundError with a one-line message when nothing there can be loaded.
    """
    if path is None:
        found = run_checkpoint(DEMO_RUN)
        if found is None:
            raise FileNotFoundError(
                f"no checkpoint given and no model from `make demo` in {DEMO_RUN}/: run `make "
                "demo` (or `boltzformer train`) first, or give a checkpoint or run folder"
            )
        return found
    what = (f"give a checkpoint folder ({CONFIG_FILE} + {WEIGHTS_FILE}), a training run "
            f"folder (with {BEST}/, {LAST}/ or {SNAPSHOTS}/) or a Hub id (org/name)")
    if not path.exists() and parse_hub_id(str(path)) is not None:
        return model_folder(str(path))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder; {what}")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is a file; {what}")
    if (path / CONFIG_FILE).exists() or (path / WEIGHTS_FILE).exists():
        return path
    found = run_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path}: no checkpoint in this folder; {what}")
    return found
