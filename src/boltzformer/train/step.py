"""`TrainStep`: one optimiser step of the training recipe.

Forward (each image encoded once, its features decoded for each of its prompts), the loss
(Dice + BCE on the final mask, plus deep supervision of every decoder layer, plus the
existence head's BCE when the model has one; `loss` section),
backward (scaled under fp16), gradient clipping, the AdamW update and the schedule's step.
A NaN or infinite loss or gradient norm leaves the model untouched and is reported, not
raised: the caller's `nan_policy` decides.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler
from torch.profiler import record_function

from boltzformer.modeling.attention import PART
from boltzformer.modeling.loss import existence_loss, has_target, training_loss
from boltzformer.train.config import TrainConfig

AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU with bf16 (Ampere and later),
    or a CPU with AVX-512 BF16 or AMX tiles (torch has no public test for the CPU; where its
    private ones are missing this says no)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    cpu = torch.cpu
    return any(bool(getattr(cpu, name, lambda: False)())
               for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_amp(amp: str, device: torch.device) -> str:
    """`train.amp` as run on `device`: "auto" becomes "bf16" where it is native, else "none"."""
    if amp == "auto":
        return "bf16" if native_bf16(device) else "none"
    return amp


@dataclass(frozen=True)
class StepResult:
    """What a step did: its loss, or (`loss` None) what was not finite and its value."""

    loss: float | None
    non_finite: str | None = None  # "loss" or "gradient norm": the step was not taken
    value: float | None = None  # the non-finite value
    # the final output's Dice + BCE alone (the loss without deep supervision and existence)
    final_loss: float | None = None


class TrainStep:
    """Call it with a `collate_groups` batch to train on it once.

    `model` is the BoltzFormer whose gradients are clipped; `net` what runs the forward pass
    (the model itself, or it wrapped by DistributedDataParallel or torch.compile). `any_rank`
    turns a local flag into the job's (any process's): a non-finite loss skips the step on
    every rank alike. `generator` draws the Boltzmann samples.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: LRScheduler, cfg: TrainConfig, device: torch.device,
                 generator: torch.Generator, *, net: Callable[..., Any] | None = None,
                 any_rank: Callable[[bool], bool] = bool) -> None:
        amp = resolve_amp(cfg.train.amp, device)
        if amp == "fp16" and device.type != "cuda":
            raise ValueError(f"train.amp=fp16 needs a CUDA device (this run uses {device}); "
                             "set train.amp=bf16 or none")
        if not cfg.loss.absent_masks and getattr(model, "existence", None) is None:
            raise ValueError("loss.absent_masks=false leaves absent targets to the existence "
                             "head: set model.existence_head=true too")
        self.model = model
        self.net: Callable[..., Any] = net if net is not None else model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.loss, self.grad_clip = cfg.loss, cfg.optim.grad_clip
        self.device, self.generator, self.any_rank = device, generator, any_rank
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        self.autocast_dtype = AUTOCAST_DTYPES.get(amp)
        self.amp = amp
        self.memory_format = (torch.channels_last if cfg.train.channels_last
                              else torch.contiguous_format)
        if cfg.train.channels_last:  # the 4-D (convolution) weights, in place; images per step
            model.to(memory_format=torch.channels_last)

    def __call__(self, batch: dict[str, Any]) -> StepResult:
        images = batch["image"].to(self.device, non_blocking=True).contiguous(
            memory_format=self.memory_format)
        masks = batch["mask"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None else contextlib.nullcontext()
        )
        deep = self.loss.deep_supervision
        with autocast:
            out = self.net(images, batch["prompt"], image_index=batch["image_index"],
                           targets=batch["target"], generator=self.generator,
                           return_layers=deep, layer_pool=self.loss.layer_pool)
        with record_function(PART + "loss"):
            logits, layers, targets = out.logits, out.layer_logits if deep else None, masks
            if not self.loss.absent_masks:  # only pairs whose target is present train masks
                keep = has_target(masks)
                logits, targets = logits[keep], masks[keep]
                layers = [t[keep] for t in layers] if layers else None
            if targets.shape[0]:
                loss, aux = training_loss(logits.float(), targets,
                                          [t.float() for t in layers] if layers else None,
                                          weight=self.loss.weight, target=self.loss.target,
                                          dice=self.loss.dice,
                                          absent_dice=self.loss.absent_dice)
            else:  # no present target in the batch: no mask loss
                loss, aux = out.logits.sum() * 0.0, None
            final = (loss if aux is None else loss - self.loss.weight * aux).detach()
            if out.existence_logits is not None:  # the existence head (not the paper's)
                loss = loss + self.loss.existence_weight * existence_loss(
                    out.existence_logits.float(), masks)
        if self.any_rank(not bool(torch.isfinite(loss.detach()))):
            return self._not_taken("loss", loss.detach())
        self.scaler.scale(loss).backward()
        with record_function(PART + "optimizer"):
            return self._update(loss, final)

    def _update(self, loss: Tensor, final: Tensor) -> StepResult:
        """Clip, step the optimiser and the schedule (after backward)."""
        self.scaler.unscale_(self.optimizer)
        clip = self.grad_clip if self.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if not self.scaler.is_enabled() and not bool(torch.isfinite(norm)):
            # Under DDP the gradients are already averaged over ranks: every rank is here.
            return self._not_taken("gradient norm", norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return StepResult(float(loss.detach()), final_loss=float(final))

    def _not_taken(self, what: str, value: Tensor) -> StepResult:
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(None, what, float(value))
