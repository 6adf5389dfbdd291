"""`train(cfg, out_dir)`: the paper's recipe (appendix A.4), resumable and distributed.

Each step (`step.py`) encodes `batch_size` images once and decodes up to `prompts_per_image`
of each image's targets; AdamW with a warm-up and a cosine decay over the steps or over
`max_minutes` (`optim.py`). A seeded 20% of the training split (by image) for validation,
validation loss (the final Dice + BCE) and Dice after every epoch, early stopping on
validation loss, `best` and `last` checkpoints in RUN_DIR. Under `torchrun` it trains with
DistributedDataParallel (`distributed.py`); only rank 0 writes files.

RUN_DIR holds `config.yaml` (the resolved TrainConfig), `metrics.jsonl` (one JSON record per
line: "train" every `log_every` steps, "val" per epoch, "resume", "end"), `best/` and `last/`
(checkpoint folders, see `checkpoint.py`) and `loss_curve.png` (`run_dir.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from boltzformer.data import collate
from boltzformer.evaluation.evaluate import dice_batch, unique_images
from boltzformer.evaluation.plots import plot_loss_curve
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.checkpoint import WEIGHTS_FILE, load_weights
from boltzformer.modeling.existence import gate_logits
from boltzformer.modeling.loss import dice_bce_loss
from boltzformer.train import checkpoint as ckpt
from boltzformer.train.config import TrainConfig
from boltzformer.train.data import (
    CropItems,
    EpochView,
    ResumableSampler,
    collate_groups,
    crops_of,
    mix_seed,
    run_split,
)
from boltzformer.train.distributed import Cluster
from boltzformer.train.eta import Eta
from boltzformer.train.optim import build_optimizer, build_scheduler, total_steps
from boltzformer.train.plan import resolve_plan
from boltzformer.train.run_dir import (
    BEST,
    CONFIG_NAME,
    CURVE_NAME,
    LAST,
    METRICS_NAME,
    append_record,
    check_resumable,
    read_records,
    save_snapshot,
    truncate_records,
)
from boltzformer.train.state import TrainState
from boltzformer.train.step import StepResult, TrainStep

log = logging.getLogger("boltzformer.train")


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
    cluster = Cluster.start(cfg.train.device)
    try:
        return Trainer(cfg, Path(out_dir), cluster, progress=progress).run(resume)
    finally:
        cluster.stop()  # a failing rank leaves the group; the others' collectives then fail


class Trainer:
    """One process's part of a training run into `run_dir`.

    Built from the config: the data (split by image into an `EpochView` for training and a
    validation subset), the model (seeded), its optimiser, schedule and `TrainStep`, and a
    `TrainState` at zero. `run` checks or restores the run folder, then loops over epochs:
    steps, records every `log_every` steps, mid-epoch checkpoints and snapshots, validation
    and the `best`/`last` checkpoints at each epoch's end, until a stopping rule holds.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, cluster: Cluster, *, progress: bool):
        # whole images or crops: planned from the data where the config leaves it open
        cfg = resolve_plan(cfg, run_dir / CONFIG_NAME, log.info if cluster.main else None)
        self.cfg, self.run_dir, self.cluster = cfg, run_dir, cluster
        self.progress = progress and cluster.main
        self.device = cluster.device
        loop = cfg.train
        self.model_config = cfg.model.resolve()

        # Data: one un-augmented reader (at native size for crops), split by image into
        # training and validation views.
        crops = crops_of(cfg.data, self.model_config.image_size)
        base, train_idx, val_idx = run_split(
            cfg.data, None if crops else self.model_config.image_size, loop.seed)
        if self.model_config.text_encoder == "labels" and not self.model_config.text_labels:
            # a closed vocabulary: the data's target names, saved with the checkpoint
            self.model_config = self.model_config.override(text_labels=tuple(base.target_names))
        self.train_set = EpochView(base, train_idx, seed=loop.seed, augment=cfg.data.augment,
                                   prompts_per_image=loop.prompts_per_image,
                                   rotations=cfg.data.rotations,
                                   negatives=cfg.data.negatives,
                                   absent_repeat=cfg.data.absent_repeat,
                                   tiny_repeat=cfg.data.tiny_repeat, crops=crops,
                                   cropped_out=cfg.data.cropped_out)
        validation: Dataset = base if crops is None else CropItems(base, val_idx, crops,
                                                                   seed=loop.seed)
        shard = range(cluster.rank, len(val_idx), cluster.world)
        self.val_set = Subset(validation, [val_idx[i] for i in shard] if crops is None
                              else list(shard))
        self.n_train, self.n_val = len(train_idx), len(val_idx)
        self.sampler = ResumableSampler(
            self.train_set, num_replicas=cluster.world, rank=cluster.rank, seed=loop.seed
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch(loop.batch_size)
        self.run_steps = total_steps(loop, self.steps_per_epoch)  # at most

        self.state = TrainState(world_size=cluster.world)  # saved in every checkpoint
        self.last_val: Mapping[str, float | None] | None = None
        self.started = time.monotonic()  # this invocation's start (reset when `run` starts)

        # Model (seeded alike on every rank), then each rank's own random streams.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(loop.seed)
            self.model = BoltzFormer.from_config(self.model_config).to(self.device)
        torch.manual_seed(mix_seed(loop.seed, cluster.rank))
        self.sampling_rng = torch.Generator(device=self.device)
        self.sampling_rng.manual_seed(mix_seed(loop.seed, cluster.rank, 1))
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.optim, self.run_steps,
            # under a time budget the decay follows the share of the minutes spent
            None if loop.max_minutes is None else self._budget_spent,
        )
        net: torch.nn.Module = self.model
        if cluster.world > 1:
            net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.train_step = TrainStep(
            self.model, self.optimizer, self.scheduler, cfg, self.device, self.sampling_rng,
            net=torch.compile(net) if loop.compile else net, any_rank=cluster.any,
        )

    def _elapsed(self) -> float:
        """Seconds the run has trained, all invocations together."""
        return self.state.seconds + time.monotonic() - self.started

    def _budget_spent(self) -> float:
        """Share of the `max_minutes` budget spent, the time schedule's progress."""
        minutes = self.cfg.train.max_minutes
        assert minutes is not None  # the schedule gets this function only with a time budget
        return self._elapsed() / (60 * minutes)  # lr_factor clamps it

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
            # records written after the checkpoint being resumed are dropped (to be redone)
            self.state.records = truncate_records(self.run_dir / METRICS_NAME,
                                                  self.state.records)
            if last is not None:
                self._record({"kind": "resume", "epoch": self.state.epoch + 1,
                              "step": self.state.step})

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
            self.train_step.scaler.load_state_dict(saved["scaler"])
        self.state = TrainState.from_dict(saved["progress"])
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
        self.state.world_size = self.cluster.world
        if self.cluster.main:
            log.info("resumed %s at epoch %d, step %d", directory, self.state.epoch + 1,
                     self.state.step)

    # -- the loop ----------------------------------------------------------------
    def run(self, resume: bool) -> TrainResult:
        """Train until a stopping rule holds; the result of this process."""
        self._prepare_run_dir(resume)
        loop = self.cfg.train
        self.started = time.monotonic()
        self.eta = Eta(self.state.step, self.run_steps if loop.max_steps else None,
                       loop.max_minutes, self._elapsed, quiet=not self.progress)
        pairs_seen, stop = 0, None
        while stop is None:
            stop = self._stop_before_epoch()
            if stop is not None:
                break
            epoch = self.state.epoch
            self.sampler.set_position(epoch, self.state.batch * loop.batch_size)
            self.train_set.set_epoch(epoch)
            loader = DataLoader(
                self.train_set, batch_size=loop.batch_size, sampler=self.sampler,
                num_workers=self.cfg.data.workers, collate_fn=collate_groups,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(mix_seed(loop.seed, epoch)),
            )
            # a step budget: one bar over the run's steps, so that its ETA is the run's
            by_run = loop.max_steps is not None
            bar = tqdm(total=self.run_steps if by_run else self.steps_per_epoch,
                       initial=self.state.step if by_run else self.state.batch,
                       desc=f"epoch {epoch + 1}/{loop.epochs}", unit="step",
                       disable=not self.progress, dynamic_ncols=True, leave=False)
            window_loss, window_final, window_batches, window_pairs = 0.0, 0.0, 0, 0
            window_start = time.monotonic()
            for batch in loader:
                result = self._step(batch)
                self.state.batch += 1
                pairs = len(batch["prompt"]) * self.cluster.world  # all ranks (approximately)
                pairs_seen += pairs
                window_pairs += pairs
                bar.update(1)
                if result is not None:
                    window_loss += result.loss or 0.0
                    window_final += result.final_loss or 0.0
                    window_batches += 1
                    step = self.state.step
                    if step % loop.log_every == 0:
                        rate = window_pairs / max(time.monotonic() - window_start, 1e-9)
                        mean, final = (v / (window_batches * self.cluster.world) for v in
                                       self.cluster.all_sum([window_loss, window_final]))
                        bar.set_postfix(loss=f"{mean:.4f}", pairs_s=f"{rate:.1f}")
                        self._record({"kind": "train", "epoch": epoch + 1, "step": step,
                                      "loss": mean, "final_loss": final,
                                      "lr": self.scheduler.get_last_lr()[0],
                                      "pairs_per_s": rate,
                                      "minutes": round(self._elapsed() / 60, 4)})
                        window_loss, window_final, window_batches, window_pairs = 0.0, 0.0, 0, 0
                        window_start = time.monotonic()
                    self.eta.step(step)
                    mid_epoch = self.state.batch < self.steps_per_epoch
                    if step % loop.checkpoint_every == 0 and mid_epoch:
                        self._save_last()
                    self._maybe_snapshot()
                stop = self._stop_in_epoch()
                if stop is not None:
                    break
            bar.close()
            epoch_done = self.state.batch >= self.steps_per_epoch
            self._end_of_epoch(complete=epoch_done)
        elapsed = time.monotonic() - self.started
        return self._finish(stop, pairs_seen / elapsed if elapsed > 0 else 0.0)

    def _stop_before_epoch(self) -> str | None:
        loop, s = self.cfg.train, self.state
        if loop.max_steps is not None and s.step >= loop.max_steps:
            return "max_steps"
        if loop.patience is not None and s.bad_epochs >= loop.patience:
            return "early_stopping"
        if s.epoch >= loop.epochs:
            return "epochs"
        return None

    def _stop_in_epoch(self) -> str | None:
        loop = self.cfg.train
        if loop.max_steps is not None and self.state.step >= loop.max_steps:
            return "max_steps"
        if loop.max_minutes is not None:
            late = self._elapsed() >= 60 * loop.max_minutes
            if self.cluster.any(late):
                return "max_minutes"
        return None

    def _step(self, batch: dict[str, Any]) -> StepResult | None:
        """One optimiser step; what it did, or None when a non-finite step was skipped."""
        result = self.train_step(batch)
        if result.loss is None:
            self._non_finite(result)
            return None
        s = self.state
        s.step += 1
        s.epoch_loss_sum += result.loss
        s.epoch_batches += 1
        return result

    def _non_finite(self, result: StepResult) -> None:
        """Count the step as skipped (train.nan_policy=skip) or stop the run."""
        s = self.state
        where = (f"step {s.step + 1} (epoch {s.epoch + 1}, batch {s.batch + 1} of "
                 f"{self.steps_per_epoch})")
        if self.cfg.train.nan_policy == "skip":
            s.skipped_steps += 1
            log.warning("skipped %s: non-finite %s (%s)", where, result.non_finite, result.value)
            return
        last = self.last_dir if self.last_dir.exists() else "none yet"
        raise NonFiniteLossError(
            f"non-finite {result.non_finite} ({result.value}) at {where}; the model was not "
            f"updated and no checkpoint was written from it (last checkpoint: {last}). Lower "
            "optim.lr or optim.grad_clip, or set train.nan_policy=skip to skip such steps, "
            "then --resume"
        )

    def _end_of_epoch(self, *, complete: bool) -> None:
        """Validate; update best/patience (full epochs only); write `last`."""
        s = self.state
        self.cluster.broadcast_buffers(self.model)
        val = self._validate()
        self.last_val = val
        improved = val["val_loss"] < s.best_val_loss
        if improved:
            s.best_val_loss, s.best_val_dice = val["val_loss"], val["val_dice"]
            s.best_epoch = s.epoch + 1
            if self.cluster.main:
                ckpt.save_checkpoint(self.best_dir, self.model)
        sums = self.cluster.all_sum([s.epoch_loss_sum, s.epoch_batches])
        record = {"kind": "val", "epoch": s.epoch + 1, "step": s.step,
                  "train_loss": sums[0] / sums[1] if sums[1] else None, **val,
                  "best": improved, "complete": complete}
        self._record(record)
        if self.cluster.main:
            log.info("epoch %d: val loss %.4f, val Dice %.4f%s", s.epoch + 1,
                     val["val_loss"], val["val_dice"], " (best)" if improved else "")
        if complete:
            s.complete_epoch(improved)
        self._save_last()

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
                out = self.model(images.to(self.device), batch["prompt"],
                                 image_index=index.to(self.device), targets=batch["target"],
                                 generator=generator)
                logits, n = out.logits.float(), masks.shape[0]
                loss_sum += float(dice_bce_loss(logits, masks, self.cfg.loss.dice)) * n
                answer = gate_logits(logits, out.existence_logits)  # absent: an empty mask
                dice_sum += float(dice_batch(answer > 0, masks > 0.5).sum())
                count += n
        finally:
            self.model.train()
        loss_sum, dice_sum, count = self.cluster.all_sum([loss_sum, dice_sum, count])
        return {"val_loss": loss_sum / count, "val_dice": dice_sum / count}

    # -- files ----------------------------------------------------------------
    def _maybe_snapshot(self) -> None:
        """Every `snapshot_minutes`, keep the weights in snapshots/ (rank 0)."""
        every = self.cfg.train.snapshot_minutes
        if every is not None and self.cluster.main:
            save_snapshot(self.model, self.run_dir, self._elapsed() / 60, every)

    def _save_last(self) -> None:
        rng = {"torch": torch.get_rng_state(), "sampling": self.sampling_rng.get_state().cpu()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        every_rank = self.cluster.gather(rng)
        if not self.cluster.main:
            return
        scaler = self.train_step.scaler
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": every_rank,
            "progress": {**self.state.to_dict(), "seconds": self._elapsed()},
        }
        ckpt.save_checkpoint(self.last_dir, self.model, state)

    def _record(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl (rank 0)."""
        if self.cluster.main:
            append_record(self.run_dir / METRICS_NAME, record)
            self.state.records += 1

    def _finish(self, stop: str, pairs_per_s: float) -> TrainResult:
        s = self.state
        if self.last_val is None and s.best_epoch is not None:
            self.last_val = {"val_loss": s.best_val_loss, "val_dice": s.best_val_dice}
        metrics = {
            "stop_reason": stop,
            "epochs": s.epoch,
            "step": s.step,
            "skipped_steps": s.skipped_steps,
            "best_epoch": s.best_epoch,
            "best_val_loss": s.best_val_loss if s.best_epoch is not None else None,
            "best_val_dice": s.best_val_dice,
            "last_val_loss": self.last_val["val_loss"] if self.last_val else None,
            "last_val_dice": self.last_val["val_dice"] if self.last_val else None,
            "pairs_per_s": pairs_per_s,
            "minutes": round(self._elapsed() / 60, 3),  # of training, all invocations
            "train_items": self.n_train,
            "val_items": self.n_val,
            "world_size": self.cluster.world,
            "amp": self.train_step.amp,  # what train.amp ran as ("auto" resolved)
        }
        if self.cluster.main:
            self._record({"kind": "end", **metrics})
            plot_loss_curve(read_records(self.run_dir / METRICS_NAME),
                            self.run_dir / CURVE_NAME)
        self.cluster.barrier()
        return TrainResult(
            run_dir=self.run_dir,
            best_checkpoint=self.best_dir if self.best_dir.exists() else None,
            last_checkpoint=self.last_dir,
            metrics=metrics,
            model=self.model,
        )
