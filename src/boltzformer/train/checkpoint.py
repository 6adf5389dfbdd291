"""Checkpoints that are never half-written, in safetensors only (nothing is pickled).

A checkpoint is a folder: `config.json` + `model.safetensors` exactly as
`BoltzFormer.save_pretrained` writes them (so `BoltzFormer.from_pretrained(folder)` works),
plus, for a resumable one, `trainer_state.safetensors`: the optimiser, scheduler and RNG
state dicts flattened into tensors, with their structure and scalars as JSON metadata.

Writing is atomic: the folder is built as `<name>.tmp`, flushed to disk, then swapped in by
renames (`<name>` -> `<name>.old`, `<name>.tmp` -> `<name>`, then `<name>.old` deleted). A
crash at any point leaves either the old or the new checkpoint complete under `<name>` or,
between the two renames, under `<name>.old`; `recover` puts it back and clears leftovers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.checkpoint import WEIGHTS_FILE, CheckpointError

STATE_FILE = "trainer_state.safetensors"
_META_KEY = "boltzformer.trainer_state"


def save_checkpoint(
    directory: str | Path, model: BoltzFormer, state: dict[str, Any] | None = None
) -> Path:
    """Atomically write `model` (and, if given, the nested training `state`) to `directory`."""
    target = Path(directory)
    tmp, old = _siblings(target)
    _remove(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    if state is not None:
        tensors, meta = flatten_state(state)
        save_file(tensors, str(tmp / STATE_FILE), metadata={_META_KEY: json.dumps(meta)})
    for path in tmp.iterdir():
        _fsync(path)
    _fsync(tmp)
    if target.exists():
        _remove(old)
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync(target.parent)
    _remove(old)
    return target


def recover(directory: str | Path) -> Path | None:
    """Finish or undo an interrupted `save_checkpoint`; the complete checkpoint, or None."""
    target = Path(directory)
    tmp, old = _siblings(target)
    if not target.exists() and old.exists():
        os.replace(old, target)
    _remove(tmp)
    _remove(old)
    return target if (target / WEIGHTS_FILE).is_file() else None


def load_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state saved by `save_checkpoint(directory, model, state)`."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {directory} is not a resumable checkpoint (only the `last` "
            f"checkpoint of a run holds {STATE_FILE})"
        )
    tensors: dict[str, Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            meta = (f.metadata() or {}).get(_META_KEY)
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path}: not a readable safetensors file, corrupt or incomplete ({err}); resume "
            "from another copy of the run, or train into a new folder"
        ) from None
    if meta is None:
        raise CheckpointError(
            f"{path} has no {_META_KEY} metadata: not written by boltzformer train"
        )
    return unflatten_state(json.loads(meta), tensors)


# --- nested state <-> tensors + JSON ----------------------------------------------------------
def flatten_state(state: Any) -> tuple[dict[str, Tensor], Any]:
    """Split a nested structure of dicts, lists, tuples, tensors and JSON scalars into
    named tensors and a JSON-able skeleton that refers to them: the inverse of
    `unflatten_state`. Tuples and dicts with non-string keys (an optimiser's parameter ids)
    keep their types."""
    tensors: dict[str, Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, Tensor):
            name = f"{len(tensors)}:{path}"  # numbered, so dotted dict keys cannot collide
            tensors[name] = value.detach().contiguous().clone()
            return {"__tensor__": name}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and "__tensor__" not in value:
                return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
            return {"__items__": [[k, walk(v, f"{path}.{k}")] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at {path} in a checkpoint")

    return tensors, walk(state, "state")


def unflatten_state(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    """Rebuild the structure that `flatten_state` split."""
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__items__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__items__"]}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    return skeleton


# --- file system helpers ----------------------------------------------------------------------
def _siblings(target: Path) -> tuple[Path, Path]:
    return target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _fsync(path: Path) -> None:
    """Flush a file or a folder's entries to disk (folders: where the OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. folders on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
