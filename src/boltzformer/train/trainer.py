"""`train(cfg, out_dir)`: the paper's recipe (appendix A.4), resumable and distributed.

AdamW on Dice + BCE (plus deep supervision of every decoder layer, `loss` section), linear
warm-up then cosine decay (over the steps, or over `max_minutes` when a time budget is set),
gradient clipping; each step encodes `batch_size` images once and decodes up to
`prompts_per_image` of each image's targets. A seeded 20% of the training split (by image)
for validation, validation loss (the final Dice + BCE) and Dice after every epoch, early
stopping on validation loss, `best` and `last` checkpoints in RUN_DIR. Under `torchrun` it
trains with DistributedDataParallel (NCCL on CUDA, gloo on CPU); only rank 0 writes files.

RUN_DIR holds `config.yaml` (the resolved TrainConfig), `metrics.jsonl` (one JSON record per
line: "train" every `log_every` steps, "val" per epoch, "resume", "end"), `best/` and `last/`
(checkpoint folders, see `checkpoint.py`) and `loss_curve.png`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from boltzformer.data import BiomedParseDataset, collate
from boltzformer.evaluate import dice_batch, unique_images
from boltzformer.loss import dice_bce_loss, training_loss
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.checkpoint import WEIGHTS_FILE, load_weights
from boltzformer.plots import plot_loss_curve
from boltzformer.train import checkpoint as ckpt
from boltzformer.train.config import TrainConfig
from boltzformer.train.data import (
    EpochView,
    ResumableSampler,
    collate_groups,
    mix_seed,
    split_by_image,
)
from boltzformer.train.run_folder import BEST, LAST, snapshot_dir

log = logging.getLogger("boltzformer.train")

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
CURVE_NAME = "loss_curve.png"
# Settings that may change when a run is resumed; anything else must match the run's config.
RESUMABLE_CHANGES: tuple[str, ...] = (
    "data.root", "data.workers", "train.epochs", "train.patience", "train.max_steps",
    "train.max_minutes", "train.checkpoint_every", "train.snapshot_minutes", "train.log_every",
    "train.nan_policy", "train.device",
)


@dataclass
class TrainResult:
    """What a run produced: checkpoint folders, final metrics, the model as it ended."""

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path
    metrics: dict[str, Any]
    model: BoltzFormer = field(repr=False)

    @property
    def stop_reason(self) -> str:
        return self.metrics["stop_reason"]


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm was NaN or infinite (train.nan_policy=stop)."""


def train(
    cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train per `cfg` into `out_dir` (RUN_DIR); `resume=True` continues a run from its
    `last` checkpoint (a run without one starts from the beginning). Under torchrun every
    process calls this; each returns its own result (rank 0 wrote the files)."""
    cluster = _Cluster.start(cfg.train.device)
    try:
        return _Trainer(cfg, Path(out_dir), cluster, progress=progress).run(resume)
    finally:
        cluster.stop()  # a failing rank leaves the group; the others' collectives then fail


# --- processes ----------------------------------------------------------------
@dataclass
class _Cluster:
    """This process's place in a (possibly single-process) job."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @classmethod
    def start(cls, device_pref: str) -> _Cluster:
        use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
        if device_pref == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is available; use cpu")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        owns = False
        if world > 1 and not dist.is_initialized():
            if use_cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
            owns = True
        if dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = 0, 1
        if use_cuda:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        else:
            device = torch.device("cpu")
        return cls(rank, world, device, owns)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def stop(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum each value over ranks (float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is True on any."""
        return self.all_sum([float(flag)])[0] > 0

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    @property
    def _comm_device(self) -> torch.device:
        # NCCL reduces CUDA tensors; gloo CPU ones.
        return self.device if self.world > 1 and self.device.type == "cuda" else torch.device("cpu")


# --- the run ----------------------------------------------------------------
class _Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path, cluster: _Cluster, *, progress: bool):
        self.cfg, self.run_dir, self.cluster = cfg, run_dir, cluster
        self.progress = progress and cluster.main
        self.device = cluster.device
        loop = cfg.train
        if loop.amp != "none" and self.device.type != "cuda":
            raise ValueError(
                f"train.amp={loop.amp} needs a CUDA device (this run uses {self.device}); "
                "set train.amp=none"
            )
        if cfg.data.root is None:
            raise ValueError("no training data: set data.root in the config or pass --data DIR")
        self.model_config = cfg.model.resolve()

        # Data: one un-augmented reader, split by image into training and validation views.
        base = BiomedParseDataset(
            cfg.data.root, cfg.data.split, image_size=self.model_config.image_size,
            train=False, augment=False, seed=loop.seed, skip_bad=cfg.data.skip_bad,
            prompt=cfg.data.prompt,
        )
        train_idx, val_idx = split_by_image(base, cfg.data.val_fraction, loop.seed)
        if self.model_config.text_encoder == "labels" and not self.model_config.text_labels:
            # a closed vocabulary: the data's target names, saved with the checkpoint
            self.model_config = self.model_config.override(
                text_labels=tuple(sorted({sample.target for sample in base.samples})))
        self.train_set = EpochView(base, train_idx, seed=loop.seed, augment=cfg.data.augment,
                                   prompts_per_image=loop.prompts_per_image)
        self.val_set = Subset(base, val_idx[cluster.rank :: cluster.world])
        self.n_train, self.n_val = len(train_idx), len(val_idx)
        self.sampler = ResumableSampler(
            self.train_set, num_replicas=cluster.world, rank=cluster.rank, seed=loop.seed
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch(loop.batch_size)

        # Progress through the run; saved in every checkpoint.
        self.state: dict[str, Any] = {
            "epoch": 0,  # completed epochs
            "batch": 0,  # batches done in the current epoch
            "step": 0,  # optimiser steps
            "skipped_steps": 0,
            "best_val_loss": math.inf,
            "best_val_dice": None,
            "best_epoch": None,
            "bad_epochs": 0,  # epochs since the validation loss last improved
            "epoch_loss_sum": 0.0,  # summed over ranks' batches of the current epoch
            "epoch_batches": 0,
            "records": 0,  # lines in metrics.jsonl when the checkpoint was written
            "world_size": cluster.world,
            "seconds": 0.0,  # wall-clock seconds of earlier invocations, up to their checkpoint
        }
        self.last_val: dict[str, float] | None = None
        self.started = time.monotonic()  # this invocation's start (reset when `run` starts)

        # Model, optimiser (no weight decay on biases and norms), schedule, loss scaler.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(loop.seed)
            self.model = BoltzFormer.from_config(self.model_config).to(self.device)
        torch.manual_seed(mix_seed(loop.seed, cluster.rank))
        self.sampling_rng = torch.Generator(device=self.device)
        self.sampling_rng.manual_seed(mix_seed(loop.seed, cluster.rank, 1))
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(decay_groups(self.model, o.weight_decay), lr=o.lr,
                                           betas=(o.beta1, o.beta2))
        total = loop.epochs * self.steps_per_epoch
        if loop.max_steps is not None:
            total = min(total, loop.max_steps)
        factor = partial(lr_factor, warmup=o.warmup_steps, total=total, schedule=o.schedule,
                         min_ratio=o.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            # under a time budget the decay follows the share of the minutes spent
            factor if loop.max_minutes is None
            else lambda step: factor(step, progress=self._budget_spent()),
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=loop.amp == "fp16")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(loop.amp)
        net: torch.nn.Module = self.model
        if cluster.world > 1:
            net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.net = torch.compile(net) if loop.compile else net


    def _elapsed(self) -> float:
        """Seconds the run has trained, all invocations together."""
        return self.state["seconds"] + time.monotonic() - self.started

    def _budget_spent(self) -> float:
        """Share of the `max_minutes` budget spent, the time schedule's progress."""
        return self._elapsed() / (60 * self.cfg.train.max_minutes)  # lr_factor clamps it

    # -- paths ----------------------------------------------------------------
    @property
    def last_dir(self) -> Path:
        return self.run_dir / LAST

    @property
    def best_dir(self) -> Path:
        return self.run_dir / BEST

    # -- setup ----------------------------------------------------------------
    def _prepare_run_dir(self, resume: bool) -> None:
        """Check or write config.yaml; with `resume`, restore the last checkpoint."""
        config_path = self.run_dir / CONFIG_NAME
        if resume and config_path.is_file():
            check_resumable(TrainConfig.from_yaml(config_path), self.cfg, config_path)
        elif not resume and (config_path.exists() or self.last_dir.exists()):
            raise ValueError(
                f"{self.run_dir} already holds a training run; pass --resume (resume=True) to "
                "continue it, or choose a new output folder"
            )
        self.cluster.barrier()  # every rank has checked before rank 0 writes
        last = None
        if self.cluster.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.cfg.to_yaml(config_path)
            if resume:
                last = ckpt.recover(self.last_dir)
                ckpt.recover(self.best_dir)
        self.cluster.barrier()
        last = self.cluster.gather(last)[0]
        if last is not None:
            self._restore(Path(last))
        elif resume and self.cluster.main:
            log.info("no checkpoint in %s yet: starting from the beginning", self.run_dir)
        if self.cluster.main:
            self._truncate_metrics(self.state["records"])
            if last is not None:
                self._record({"kind": "resume", "epoch": self.state["epoch"] + 1,
                              "step": self.state["step"]})

    def _restore(self, directory: Path) -> None:
        load_weights(
            self.model, directory / WEIGHTS_FILE, device=self.device,
            model_from=f"this run's model settings ({self.run_dir / CONFIG_NAME})",
            fix="resume with the settings the run was started with, or train into a new folder",
        )
        saved = ckpt.load_state(directory, map_location=self.device)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if saved["scaler"]:
            self.scaler.load_state_dict(saved["scaler"])
        self.state.update(saved["progress"])
        rng = saved["rng"]
        if len(rng) == self.cluster.world:
            mine = rng[self.cluster.rank]
            torch.set_rng_state(mine["torch"].cpu())
            self.sampling_rng.set_state(mine["sampling"].cpu())
            if self.device.type == "cuda" and "cuda" in mine:
                torch.cuda.set_rng_state(mine["cuda"].cpu(), self.device)
        else:
            log.warning(
                "checkpoint from %d process(es) resumed by %d: the data order and random "
                "draws will differ from an uninterrupted run", len(rng), self.cluster.world
            )
        self.state["world_size"] = self.cluster.world
        if self.cluster.main:
            log.info("resumed %s at epoch %d, step %d", directory, self.state["epoch"] + 1,
                     self.state["step"])

    # -- the loop ----------------------------------------------------------------
    def run(self, resume: bool) -> TrainResult:
        self._prepare_run_dir(resume)
        loop = self.cfg.train
        self.started = time.monotonic()
        pairs_seen, stop = 0, None
        while stop is None:
            stop = self._stop_before_epoch()
            if stop is not None:
                break
            epoch = self.state["epoch"]
            self.sampler.set_position(epoch, self.state["batch"] * loop.batch_size)
            self.train_set.set_epoch(epoch)
            loader = DataLoader(
                self.train_set, batch_size=loop.batch_size, sampler=self.sampler,
                num_workers=self.cfg.data.workers, collate_fn=collate_groups,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(mix_seed(loop.seed, epoch)),
            )
            bar = _progress_bar(self.progress, epoch, loop.epochs, self.steps_per_epoch,
                                self.state["batch"])
            window_loss, window_batches, window_pairs = 0.0, 0, 0
            window_start = time.monotonic()
            for batch in loader:
                loss = self._step(batch)
                self.state["batch"] += 1
                pairs = len(batch["prompt"]) * self.cluster.world  # all ranks (approximately)
                pairs_seen += pairs
                window_pairs += pairs
                bar.update(1)
                if loss is not None:
                    window_loss += loss
                    window_batches += 1
                    step = self.state["step"]
                    if step % loop.log_every == 0:
                        rate = window_pairs / max(time.monotonic() - window_start, 1e-9)
                        mean = self.cluster.all_sum([window_loss])[0] / (
                            window_batches * self.cluster.world)
                        bar.set_postfix(loss=f"{mean:.4f}", pairs_s=f"{rate:.1f}")
                        self._record({"kind": "train", "epoch": epoch + 1, "step": step,
                                      "loss": mean, "lr": self.scheduler.get_last_lr()[0],
                                      "pairs_per_s": rate,
                                      "minutes": round(self._elapsed() / 60, 4)})
                        window_loss, window_batches, window_pairs = 0.0, 0, 0
                        window_start = time.monotonic()
                    mid_epoch = self.state["batch"] < self.steps_per_epoch
                    if step % loop.checkpoint_every == 0 and mid_epoch:
                        self._save_last()
                    self._maybe_snapshot()
                stop = self._stop_in_epoch()
                if stop is not None:
                    break
            bar.close()
            epoch_done = self.state["batch"] >= self.steps_per_epoch
            self._end_of_epoch(complete=epoch_done)
        elapsed = time.monotonic() - self.started
        return self._finish(stop, pairs_seen / elapsed if elapsed > 0 else 0.0)

    def _stop_before_epoch(self) -> str | None:
        loop, s = self.cfg.train, self.state
        if loop.max_steps is not None and s["step"] >= loop.max_steps:
            return "max_steps"
        if loop.patience is not None and s["bad_epochs"] >= loop.patience:
            return "early_stopping"
        if s["epoch"] >= loop.epochs:
            return "epochs"
        return None

    def _stop_in_epoch(self) -> str | None:
        loop = self.cfg.train
        if loop.max_steps is not None and self.state["step"] >= loop.max_steps:
            return "max_steps"
        if loop.max_minutes is not None:
            late = self._elapsed() >= 60 * loop.max_minutes
            if self.cluster.any(late):
                return "max_minutes"
        return None

    def _step(self, batch: dict[str, Any]) -> float | None:
        """One optimiser step; the loss, or None when a non-finite step was skipped."""
        images = batch["image"].to(self.device, non_blocking=True)
        masks = batch["mask"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None else contextlib.nullcontext()
        )
        deep = self.cfg.loss.deep_supervision
        with autocast:
            out = self.net(images, batch["prompt"], image_index=batch["image_index"],
                           targets=batch["target"], generator=self.sampling_rng, return_layers=deep)
        layers = [t.float() for t in out.layer_logits] if deep else None
        loss, _ = training_loss(out.logits.float(), masks, layers, weight=self.cfg.loss.weight,
                                target=self.cfg.loss.target, dice=self.cfg.loss.dice)
        if self.cluster.any(not bool(torch.isfinite(loss.detach()))):
            return self._non_finite("loss", loss.detach())
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), clip if clip is not None else math.inf
        )
        if not self.scaler.is_enabled() and not bool(torch.isfinite(norm)):
            # Gradients are already averaged over ranks: every rank takes this branch.
            return self._non_finite("gradient norm", norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.state["step"] += 1
        value = float(loss.detach())
        self.state["epoch_loss_sum"] += value
        self.state["epoch_batches"] += 1
        return value

    def _non_finite(self, what: str, value: Tensor) -> None:
        s = self.state
        where = (f"step {s['step'] + 1} (epoch {s['epoch'] + 1}, batch {s['batch'] + 1} of "
                 f"{self.steps_per_epoch})")
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.train.nan_policy == "skip":
            s["skipped_steps"] += 1
            log.warning("skipped %s: non-finite %s (%s)", where, what, float(value))
            return None
        last = self.last_dir if self.last_dir.exists() else "none yet"
        raise NonFiniteLossError(
            f"non-finite {what} ({float(value)}) at {where}; the model was not updated and "
            f"no checkpoint was written from it (last checkpoint: {last}). Lower optim.lr or "
            "optim.grad_clip, or set train.nan_policy=skip to skip such steps, then --resume"
        )

    def _end_of_epoch(self, *, complete: bool) -> None:
        """Validate; update best/patience (full epochs only); write `last`."""
        s = self.state
        self._sync_buffers()
        val = self._validate()
        self.last_val = val
        improved = val["val_loss"] < s["best_val_loss"]
        if improved:
            s.update(best_val_loss=val["val_loss"], best_val_dice=val["val_dice"],
                     best_epoch=s["epoch"] + 1)
            if self.cluster.main:
                ckpt.save_checkpoint(self.best_dir, self.model)
        sums = self.cluster.all_sum([s["epoch_loss_sum"], s["epoch_batches"]])
        record = {"kind": "val", "epoch": s["epoch"] + 1, "step": s["step"],
                  "train_loss": sums[0] / sums[1] if sums[1] else None, **val,
                  "best": improved, "complete": complete}
        self._record(record)
        if self.cluster.main:
            log.info("epoch %d: val loss %.4f, val Dice %.4f%s", s["epoch"] + 1,
                     val["val_loss"], val["val_dice"], " (best)" if improved else "")
        if complete:
            s["bad_epochs"] = 0 if improved else s["bad_epochs"] + 1
            s.update(epoch=s["epoch"] + 1, batch=0, epoch_loss_sum=0.0, epoch_batches=0)
        self._save_last()

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers. DDP broadcasts them at the start of each forward,
        so the last training forward leaves each rank's BatchNorm statistics its own."""
        if self.cluster.world > 1:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """Mean validation loss and Dice (threshold 0.5, both-empty = 1) over every rank."""
        loop = self.cfg.train  # as many pairs per batch as a training step decodes
        loader = DataLoader(self.val_set, batch_size=loop.batch_size * loop.prompts_per_image,
                            num_workers=self.cfg.data.workers, collate_fn=collate)
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed)
        self.model.eval()
        loss_sum = dice_sum = count = 0.0
        try:
            for batch in loader:
                images, index = unique_images(batch)  # each image encoded once
                masks = batch["mask"].to(self.device)
                logits = self.model(images.to(self.device), batch["prompt"],
                                    image_index=index.to(self.device), targets=batch["target"],
                                    generator=generator).logits.float()
                n = masks.shape[0]
                loss_sum += float(dice_bce_loss(logits, masks, self.cfg.loss.dice)) * n
                dice_sum += float(dice_batch(logits > 0, masks > 0.5).sum())
                count += n
        finally:
            self.model.train()
        loss_sum, dice_sum, count = self.cluster.all_sum([loss_sum, dice_sum, count])
        return {"val_loss": loss_sum / count, "val_dice": dice_sum / count}

    # -- files ----------------------------------------------------------------
    def _maybe_snapshot(self) -> None:
        """Every `snapshot_minutes`, keep the weights in snapshots/<minutes>min (rank 0), for
        curves of a metric against training time."""
        every = self.cfg.train.snapshot_minutes
        if every is None or not self.cluster.main:
            return
        mark = math.floor(self._elapsed() / 60 / every) * every
        path = snapshot_dir(self.run_dir, mark)
        if mark > 0 and not path.exists():
            self.model.save_pretrained(path)

    def _save_last(self) -> None:
        rng = {"torch": torch.get_rng_state(), "sampling": self.sampling_rng.get_state().cpu()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        every_rank = self.cluster.gather(rng)
        if not self.cluster.main:
            return
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": every_rank,
            "progress": {**self.state, "seconds": self._elapsed()},
        }
        ckpt.save_checkpoint(self.last_dir, self.model, state)

    def _record(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl (rank 0)."""
        if not self.cluster.main:
            return
        record = {**record, "time": round(time.time(), 3)}
        with (self.run_dir / METRICS_NAME).open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.state["records"] += 1

    def _truncate_metrics(self, keep: int) -> None:
        """Drop records written after the checkpoint being resumed (they will be redone)."""
        path = self.run_dir / METRICS_NAME
        if not path.exists():
            self.state["records"] = 0
            return
        lines = path.read_text().splitlines(keepends=True)
        if len(lines) > keep:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(lines[:keep]))
            os.replace(tmp, path)
        self.state["records"] = min(keep, len(lines))

    def _finish(self, stop: str, pairs_per_s: float) -> TrainResult:
        s = self.state
        if self.last_val is None and s["best_epoch"] is not None:
            self.last_val = {"val_loss": s["best_val_loss"], "val_dice": s["best_val_dice"]}
        metrics = {
            "stop_reason": stop,
            "epochs": s["epoch"],
            "step": s["step"],
            "skipped_steps": s["skipped_steps"],
            "best_epoch": s["best_epoch"],
            "best_val_loss": s["best_val_loss"] if s["best_epoch"] is not None else None,
            "best_val_dice": s["best_val_dice"],
            "last_val_loss": self.last_val["val_loss"] if self.last_val else None,
            "last_val_dice": self.last_val["val_dice"] if self.last_val else None,
            "pairs_per_s": pairs_per_s,
            "train_items": self.n_train,
            "val_items": self.n_val,
            "world_size": self.cluster.world,
        }
        if self.cluster.main:
            self._record({"kind": "end", **metrics})
            records = [json.loads(line) for line in
                       (self.run_dir / METRICS_NAME).read_text().splitlines() if line]
            plot_loss_curve(records, self.run_dir / CURVE_NAME)
        self.cluster.barrier()
        return TrainResult(
            run_dir=self.run_dir,
            best_checkpoint=self.best_dir if self.best_dir.exists() else None,
            last_checkpoint=self.last_dir,
            metrics=metrics,
            model=self.model,
        )


# --- helpers ----------------------------------------------------------------
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


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: `weight_decay` on weight matrices and kernels, none on biases
    and norm weights (1-D parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


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


def _progress_bar(enabled: bool, epoch: int, epochs: int, total: int, initial: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                disable=not enabled, dynamic_ncols=True, leave=False)
