"""`boltzformer train` as a function: the run's config assembled (a YAML file or, resuming
without one, the run's own config.yaml; the data folder; KEY=VALUE overrides), the run
trained, and the lines the verb prints of it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from boltzformer.train.config import TrainConfig, parse_overrides
from boltzformer.train.run_dir import CONFIG_NAME
from boltzformer.train.trainer import TrainResult, train


def train_run(config: Path | None, out: Path, *, data: str | None = None,
              overrides: Sequence[str] = (), resume: bool = False,
              progress: bool = True) -> TrainResult:
    """Train into the run folder `out` with `config` (None: the built-in defaults, or with
    `resume` the run's saved config.yaml), `data` as data.root and `overrides`
    ("section.key=value", YAML values) on top."""
    if config is None and resume and (out / CONFIG_NAME).is_file():
        config = out / CONFIG_NAME
    values = parse_overrides(list(overrides))
    if data is not None:
        values["data.root"] = str(data)
    return train(TrainConfig.load(config, values), out, resume=resume, progress=progress)


def summary(result: TrainResult) -> str:
    """What `boltzformer train` prints when a run ends: why, how far, its best checkpoint."""
    m = result.metrics
    best = "none" if m["best_val_loss"] is None else (
        f"val loss {m['best_val_loss']:.4f}, val Dice {m['best_val_dice']:.4f} "
        f"(epoch {m['best_epoch']})")
    return (f"finished ({m['stop_reason']}) after {m['epochs']} epochs, {m['step']} steps, "
            f"{m['pairs_per_s']:.1f} image-prompt pairs/s; best: {best}\n"
            f"checkpoints: {result.best_checkpoint} (best), {result.last_checkpoint} (last)")
