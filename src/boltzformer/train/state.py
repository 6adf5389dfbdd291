"""`TrainState`: a run's progress, saved in every `last` checkpoint and restored on resume."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from boltzformer.modeling.config import check_keys


@dataclass
class TrainState:
    """Where a run stands: epochs, batches and steps done, the best validation so far, the
    current epoch's running loss, and what a resume needs to continue exactly."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimiser steps
    skipped_steps: int = 0  # steps not taken for a non-finite loss (train.nan_policy=skip)
    best_val_loss: float = math.inf
    best_val_dice: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the validation loss last improved
    epoch_loss_sum: float = 0.0  # summed over this rank's batches of the current epoch
    epoch_batches: int = 0
    records: int = 0  # lines in metrics.jsonl when the checkpoint was written
    world_size: int = 1  # processes that trained
    seconds: float = 0.0  # wall-clock seconds of earlier invocations, up to their checkpoint

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as a checkpoint stores them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        """From `to_dict`'s values; unknown keys are an error naming the valid ones."""
        check_keys(values, [f.name for f in fields(cls)], what="training progress")
        return cls(**values)

    def complete_epoch(self, improved: bool) -> None:
        """Count a full epoch (`improved`: it lowered the best validation loss) and start the
        next one at batch 0 with no running loss."""
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        self.epoch += 1
        self.batch, self.epoch_loss_sum, self.epoch_batches = 0, 0.0, 0
