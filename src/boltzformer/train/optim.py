"""The optimiser and learning-rate schedule of the training recipe (appendix A.4).

AdamW without weight decay on biases and norms; a linear warm-up, then a constant rate or a
cosine decay to `min_lr_ratio` over the run's steps, or over its time budget when one is set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from boltzformer.train.config import LoopConfig, OptimConfig


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: `weight_decay` on weight matrices and kernels, none on biases
    and norm weights (1-D parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over `decay_groups(model)` with the section's rate and betas.

    PyTorch's fused kernel where the parameters live on the CPU or a CUDA device: the same
    update in one pass over each tensor (the `tiny` model's step measured 100 -> 24 ms on
    one CPU thread against the default per-tensor loop)."""
    groups = decay_groups(model, optim.weight_decay)
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2),
                             fused=fused or None)


def total_steps(loop: LoopConfig, steps_per_epoch: int) -> int:
    """The steps a run takes at most: its epochs, capped by `max_steps`."""
    total = loop.epochs * steps_per_epoch
    return total if loop.max_steps is None else min(total, loop.max_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, total: int,
                    budget_spent: Callable[[], float] | None = None) -> LambdaLR:
    """`lr_factor` per step over `total` steps; with `budget_spent` (the share of a time
    budget spent, read at every step) the decay follows the time instead of the steps."""
    factor = partial(lr_factor, warmup=optim.warmup_steps, total=total, schedule=optim.schedule,
                     min_ratio=optim.min_lr_ratio)
    if budget_spent is None:
        return LambdaLR(optimizer, factor)
    return LambdaLR(optimizer, lambda step: factor(step, progress=budget_spent()))


def lr_factor(step: int, *, warmup: int, total: int, schedule: str, min_ratio: float,
              progress: float | None = None) -> float:
    """Multiplier of the base learning rate after `step` steps: linear warm-up from
    1/(warmup+1), then constant or a cosine decay to `min_ratio` at `total` steps, or, when
    `progress` (0 to 1, e.g. the share of a time budget spent) is given, at progress 1."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    if progress is None:
        if total <= warmup:
            return 1.0
        progress = (step - warmup) / (total - warmup)
    return cosine_factor(progress, min_ratio)


def cosine_factor(progress: float, min_ratio: float) -> float:
    """A cosine from 1 at progress 0 down to `min_ratio` at progress 1 (clamped to [0, 1])."""
    progress = min(1.0, max(0.0, progress))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
