"""A training run folder's layout, and the one answer to "which checkpoint does the user mean".

`boltzformer train` (and `boltzformer demo`, which trains into OUT/run) writes into RUN_DIR:
`best/` (the lowest validation loss), `last/` (resumable), and, every `snapshot_minutes`,
`snapshots/<minutes>min/`, each a checkpoint folder (`modeling/checkpoint.py`).
`resolve_checkpoint` turns what a user points a verb at (`predict`, `visualize`, `evaluate`,
`serve`) into the checkpoint folder to load.
"""

from __future__ import annotations

import math
from pathlib import Path

from boltzformer.modeling.checkpoint import CONFIG_FILE, WEIGHTS_FILE, is_checkpoint

BEST, LAST, SNAPSHOTS = "best", "last", "snapshots"
#: The run folder `make demo` (`boltzformer demo`, default --out demo_output) trains into.
DEMO_RUN = Path("demo_output/run")


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
    what = (f"give a checkpoint folder ({CONFIG_FILE} + {WEIGHTS_FILE}) or a training run "
            f"folder (with {BEST}/, {LAST}/ or {SNAPSHOTS}/)")
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
