"""Model checkpoints: a folder of `config.json` (the model's settings) and `model.safetensors`.

Every model of the package (BoltzFormer, the U-Net baseline) saves and loads through these
functions; training's resumable checkpoints (`train/checkpoint.py`) add their state beside
them. Nothing is unpickled. Anything that cannot be loaded is a `CheckpointError` whose one-line
message names the file, what is wrong and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_SAVE_AGAIN = "save the model again, or copy the checkpoint folder again"

Config = TypeVar("Config")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the one-line message names the file and the fix."""


def write_checkpoint(model: nn.Module, config_json: str, directory: str | Path) -> Path:
    """A checkpoint folder: `config.json` (the model's settings) and `model.safetensors`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(config_json)
    save_model(model, str(directory / WEIGHTS_FILE))
    return directory


def is_checkpoint(directory: Path) -> bool:
    """Whether `directory` holds both files of a checkpoint."""
    return (directory / CONFIG_FILE).is_file() and (directory / WEIGHTS_FILE).is_file()


def checkpoint_paths(directory: str | Path, *, written_by: str) -> tuple[Path, Path]:
    """(config.json, model.safetensors) of a checkpoint folder; FileNotFoundError naming the
    missing one and what writes it (`written_by`)."""
    directory = Path(directory)
    paths = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a checkpoint folder holds {CONFIG_FILE} and "
                f"{WEIGHTS_FILE} (written by {written_by})"
            )
    return paths


def read_config(path: Path, parse: Callable[[dict[str, Any]], Config]) -> Config:
    """A checkpoint's config.json -> `parse(values)` (a config class's `from_dict`);
    CheckpointError naming the file if it is not JSON, not an object, or `parse` refuses it
    (TypeError or ValueError: unknown keys, bad values)."""
    fix = f"restore the {CONFIG_FILE} saved with the weights"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); {fix}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: cannot be read ({err}); {fix}") from None
    if not isinstance(values, dict):
        raise CheckpointError(
            f"{path}: expected a JSON object of model settings, got a {type(values).__name__}; "
            f"{fix}"
        )
    try:
        return parse(values)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}; {fix}") from None


def load_weights(
    model: nn.Module, weights: Path, *, model_from: str, fix: str,
    device: str | torch.device = "cpu",
) -> None:
    """Load a safetensors file into `model` (built from `model_from`, e.g. a config file).

    Raises CheckpointError (one line: the file, what is wrong, `fix`) when the file is not a
    readable safetensors file, or when its tensors' names or shapes differ from the model's.
    """
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{weights}: not a readable safetensors file, corrupt or incomplete ({err}); "
            f"{_SAVE_AGAIN}"
        ) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    differences = describe_differences(shapes, expected)
    if differences:
        raise CheckpointError(
            f"{weights} does not match the model of {model_from}: {differences}; {fix}"
        )
    try:
        load_model(model, str(weights), device=str(device))
    except (SafetensorError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"{weights}: cannot load the weights ({first}); {_SAVE_AGAIN}"
        ) from None


def describe_differences(found: dict[str, tuple], expected: dict[str, tuple]) -> str:
    """What differs between a file's tensor shapes and a model's, in one short phrase."""
    shape = [k for k in expected if k in found and found[k] != expected[k]]
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    parts = []
    if shape:
        k = shape[0]
        parts.append(
            f"{len(shape)} tensor(s) differ in shape (first {k}: {list(found[k])} in the file, "
            f"{list(expected[k])} in the model)"
        )
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing from the file (first {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} tensor(s) the model does not have (first {extra[0]})")
    return ", ".join(parts)
