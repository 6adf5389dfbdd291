"""Training the U-Net expert: one item per image with all its targets' masks, Dice + BCE on
the annotated channels, AdamW at a constant learning rate for a step or time budget.

The split is the BoltzFormer trainer's (`split_by_image`, same `val_fraction` and seed), so
both models train on the same images; the held-out images are left unused here, like the
test split. Given the seed, initialisation, data order and any augmentation are fixed; with a
`steps` budget the whole run is deterministic (with `minutes` it stops with the clock, and
with `schedule="cosine"` the learning rate follows the clock too).

The default recipe is issue 24's: at equal steps on the demo's phantoms a warm-up and cosine
decay over the budget, the BoltzFormer trainer's, cost half the small-object Dice of a
constant rate, and 2e-3 beat 1e-3 (docs/results/unet_controls.md); the older choices stay as
options.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from boltzformer.baselines.unet import UNetBaselineConfig, UNetExpert
from boltzformer.data import BiomedParseDataset, random_augment
from boltzformer.data.crops import Crops
from boltzformer.modeling.loss import dice_bce_loss, dice_loss
from boltzformer.train.data import group_by_image, mix_seed, split_by_image
from boltzformer.train.optim import cosine_factor, decay_groups
from boltzformer.train.step import resolve_amp

METRICS_NAME = "metrics.jsonl"
DICE_KINDS = ("image", "batch")  # one Dice per (image, target) pair, or per target a batch


class ImageTargets(Dataset):
    """The items of `base` at `indices` grouped by image: one item per image.

    `base` is a BiomedParseDataset built with train=False, augment=False. An item is a dict:
    "image" (3, S, S) float 0-255; "masks" (C, S, S) 0/1, channel c the mask of `targets[c]`
    (the union if an image has several masks of one target, zeros if it has none);
    "annotated" (C,) bool, True where the image has a mask of that target (an empty mask, an
    absent target, counts as annotated); "image_file". With `crops` (`base` read at native
    size) the image and all its masks are cut by one crop (`Crops.cut`, BoltzFormer's
    trainer's recipe), then with `augment`, `random_augment` moves the image and all its
    masks alike, both seeded by (seed, epoch, image index); with `rotations` false it leaves
    out the 90-degree rotations.
    """

    def __init__(
        self,
        base: BiomedParseDataset,
        indices: Sequence[int],
        targets: Sequence[str],
        *,
        seed: int = 0,
        augment: bool = False,
        rotations: bool = True,
        crops: Crops | None = None,
    ) -> None:
        self.base = base
        self.crops = crops
        self.channel_of = {name: c for c, name in enumerate(targets)}
        self.seed = seed
        self.augment = augment
        self.rotations = rotations
        self.epoch = 0
        for i in indices:
            sample = base.samples[i]
            if sample.target not in self.channel_of:
                raise ValueError(f"{sample.mask_file}: target {sample.target!r} not in {targets}")
        self.groups = sorted(group_by_image(base, indices),
                             key=lambda group: base.samples[group[0]].image_path)

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch: the augmentation depends on it."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict[str, Any]:
        items = self.base.load_group(self.groups[i])
        image = items[0]["image"]
        masks = torch.zeros(len(self.channel_of), *image.shape[-2:])
        annotated = torch.zeros(len(self.channel_of), dtype=torch.bool)
        for item in items:
            c = self.channel_of[item["target"]]
            masks[c] = torch.maximum(masks[c], item["mask"][0])
            annotated[c] = True
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, i))
        if self.crops is not None:
            image, masks = self.crops.cut(image, masks, generator)
        if self.augment:
            image, masks = random_augment(image, masks, generator, rotate=self.rotations)
        return {"image": image, "masks": masks, "annotated": annotated,
                "image_file": items[0]["image_file"]}


def _check_dice(dice: str) -> None:
    if dice not in DICE_KINDS:
        raise ValueError(f"dice must be one of {list(DICE_KINDS)}, got {dice!r}")


def batch_dice(logits: Tensor, masks: Tensor, annotated: Tensor) -> Tensor:
    """nnU-Net's batch Dice loss: for each target channel, one Dice (`dice_loss`) over the
    pixels of every image that annotates it (not one per image), then averaged over those
    channels. An image whose lesion is a few pixels, or an empty one, does not count as a
    whole Dice of its own. logits, masks (B, C, H, W); annotated (B, C) bool, some True."""
    channels = annotated.any(0).nonzero().flatten().tolist()
    return torch.stack([
        dice_loss(logits[annotated[:, c], c].reshape(1, -1),
                  masks[annotated[:, c], c].reshape(1, -1).to(logits.dtype))
        for c in channels]).mean()


def masked_dice_bce(logits: Tensor, masks: Tensor, annotated: Tensor, *,
                    dice: str = "image") -> Tensor:
    """Dice + BCE averaged over the annotated (image, target) pairs; other channels get no
    gradient. logits, masks (B, C, H, W); annotated (B, C) bool with at least one True.
    `dice`: "image" (one Dice per pair, averaged) or "batch" (`batch_dice`)."""
    _check_dice(dice)
    if not bool(annotated.any()):
        raise ValueError("no annotated channel in the batch: nothing to learn from")
    if dice == "batch":
        bce = F.binary_cross_entropy_with_logits(logits[annotated],
                                                 masks[annotated].to(logits.dtype))
        return bce + batch_dice(logits, masks, annotated)
    return dice_bce_loss(logits[annotated][:, None], masks[annotated][:, None])


def multilabel_dice_bce(logits: Tensor, masks: Tensor, annotated: Tensor, *,
                        dice: str = "image") -> Tensor:
    """BCE on every channel (a target the image does not annotate counts as empty), averaged
    over all pixels of all channels, plus Dice averaged over each image's annotated channels
    and then over the images that annotate any (`dice="image"`), or `batch_dice` ("batch").
    logits, masks (B, C, H, W); annotated (B, C) bool with at least one True."""
    _check_dice(dice)
    if not bool(annotated.any()):
        raise ValueError("no annotated channel in the batch: nothing to learn from")
    masks = masks.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, masks)
    if dice == "batch":
        return bce + batch_dice(logits, masks, annotated)
    p = logits.sigmoid().flatten(2)
    t = masks.flatten(2)
    per_pair = 1 - (2 * (p * t).sum(2) + 1) / (p.sum(2) + t.sum(2) + 1)  # (B, C)
    weight = annotated.to(per_pair.dtype)
    per_image = (per_pair * weight).sum(1) / weight.sum(1).clamp(min=1)
    return bce + per_image[annotated.any(1)].mean()


SUPERVISION = {"all": multilabel_dice_bce, "annotated": masked_dice_bce}
SCHEDULES = ("constant", "cosine")


def lr_factor_at(progress: float, *, warmup: float = 0.05, min_ratio: float = 0.05) -> float:
    """Learning-rate multiplier at `progress` (0-1) of the budget: linear from `min_ratio` to
    1 over the first `warmup` of it, then a cosine decay back to `min_ratio` at 1."""
    if progress < warmup:
        return min_ratio + (1 - min_ratio) * progress / warmup
    return cosine_factor((progress - warmup) / (1 - warmup), min_ratio)


@dataclass
class UNetTrainResult:
    """out_dir (the model: config.json + model.safetensors, and metrics.jsonl); metrics: the
    run's "end" record (steps, seconds, images_per_s, steps_per_s, final loss, ...)."""

    out_dir: Path
    metrics: dict[str, Any]
    model: UNetExpert = field(repr=False)


def train_unet(
    data_root: str | Path,
    out_dir: str | Path,
    *,
    minutes: float | None = None,
    steps: int | None = None,
    image_size: int = 256,
    batch_size: int = 8,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    schedule: str = "constant",
    clip: float | None = None,
    supervise: str = "annotated",
    dice: str = "image",
    seed: int = 0,
    augment: bool = False,
    rotations: bool = True,
    encoder: str = "tu-resnet10t",
    val_fraction: float = 0.2,
    workers: int = 0,
    log_every: int = 10,
    amp: str = "none",
    channels_last: bool = False,
    crops: Crops | None = None,
    window_overlap: float = 0.5,
    progress: bool = True,
) -> UNetTrainResult:
    """Train a `UNetExpert` on the "train" split of `data_root` for `minutes` or `steps`
    (exactly one) and write it to `out_dir`. `batch_size` counts images (each with all its
    targets). AdamW (`weight_decay`, none on biases and norms) at `lr` throughout
    (`schedule="constant"`) or warmed up and decayed per `lr_factor_at` of the elapsed share of
    the budget ("cosine"); gradients clipped to norm `clip` (None: not clipped). The loss is
    Dice + BCE on the channels of the targets each image annotates (`supervise="annotated"`,
    `masked_dice_bce`) or BCE on every channel, an unannotated target as empty ("all",
    `multilabel_dice_bce`: right only where every image annotates every target it shows).
    Its Dice is one per (image, target) pair (`dice="image"`) or nnU-Net's batch Dice, one
    per target over the whole batch ("batch", `batch_dice`).
    `augment`: `random_augment`'s crops (and 90-degree turns with `rotations`), off by
    default. `amp` ("none", "bf16", "auto": bf16 where native, as `train.amp`) and
    `channels_last` set the precision and layout as for BoltzFormer, so that both models of a
    comparison get the same hardware. `crops` (e.g. `train.data.crops_of` a BoltzFormer run's
    data config): train on crops of the images read at native size, as that run does; the
    saved config then predicts on windows of the crop's size and scale (`window_overlap`).
    Records "train" every `log_every` steps and "end" in metrics.jsonl.
    """
    from tqdm.auto import tqdm

    if (minutes is None) == (steps is None):
        raise ValueError("give exactly one budget: minutes or steps")
    if (minutes is not None and not minutes > 0) or (steps is not None and steps < 1):
        raise ValueError(f"the budget must be positive, got minutes={minutes}, steps={steps}")
    if supervise not in SUPERVISION:
        raise ValueError(f"supervise must be one of {sorted(SUPERVISION)}, got {supervise!r}")
    _check_dice(dice)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    loss_of = SUPERVISION[supervise]
    out = Path(out_dir)
    metrics_path = out / METRICS_NAME
    if metrics_path.exists():
        raise FileExistsError(f"{out} already holds a run ({METRICS_NAME}); choose a new folder")
    base = BiomedParseDataset(data_root, "train", image_size=None if crops else image_size,
                              train=False, augment=False, seed=seed)
    train_idx, val_idx = split_by_image(base, val_fraction, seed)
    targets = base.target_names  # one channel per target the data set names
    data = ImageTargets(base, train_idx, targets, seed=seed, augment=augment,
                        rotations=rotations, crops=crops)
    config = UNetBaselineConfig(tuple(targets), image_size=image_size, encoder=encoder)
    if crops is not None:  # it predicts as it trained: windows of the crop
        config = replace(config, window_size=crops.size, window_scale=crops.scale,
                         window_overlap=window_overlap)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNetExpert(config)
    model.train()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    precision = resolve_amp(amp, torch.device("cpu"))
    if precision not in ("none", "bf16"):
        raise ValueError("the U-Net trains on the CPU: amp must be none, bf16 or auto, got "
                         f"{amp!r}")
    optimizer = torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr)
    out.mkdir(parents=True, exist_ok=True)

    def record(entry: dict[str, Any]) -> None:
        with metrics_path.open("a") as f:
            f.write(json.dumps({**entry, "time": round(time.time(), 3)}) + "\n")

    bar = tqdm(total=steps, desc="unet", unit="step", disable=not progress)
    step, epoch, images_seen, last_loss = 0, 0, 0, math.nan
    window_loss, window_steps = 0.0, 0
    started = time.monotonic()

    def used() -> float:
        """The share of the budget spent: steps taken, or minutes elapsed."""
        if steps is not None:
            return step / steps
        assert minutes is not None  # exactly one budget (checked above)
        return (time.monotonic() - started) / (60 * minutes)

    while used() < 1:
        data.set_epoch(epoch)
        loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(mix_seed(seed, epoch)))
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = lr * (lr_factor_at(used()) if schedule == "cosine" else 1.0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model.channel_logits(batch["image"].contiguous(memory_format=layout))
            loss = loss_of(logits.float(), batch["masks"], batch["annotated"], dice=dice)
            if not bool(torch.isfinite(loss)):
                raise FloatingPointError(f"non-finite loss {float(loss)} at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            step += 1
            images_seen += len(batch["image"])
            last_loss = float(loss.detach())
            window_loss, window_steps = window_loss + last_loss, window_steps + 1
            bar.update(1)
            if step % log_every == 0:
                bar.set_postfix(loss=f"{window_loss / window_steps:.4f}")
                record({"kind": "train", "epoch": epoch + 1, "step": step,
                        "loss": window_loss / window_steps, "lr": optimizer.param_groups[0]["lr"],
                        "elapsed_s": round(time.monotonic() - started, 3)})
                window_loss, window_steps = 0.0, 0
            if used() >= 1:
                break
        epoch += 1
    bar.close()
    seconds = time.monotonic() - started
    metrics = {
        "steps": step, "epochs": images_seen / len(data), "images": images_seen,
        "seconds": seconds,
        "images_per_s": images_seen / seconds, "steps_per_s": step / seconds,
        "final_loss": last_loss, "train_images": len(data), "train_masks": len(train_idx),
        "val_masks_unused": len(val_idx), "targets": targets, "amp": precision,
        "recipe": {"lr": lr, "schedule": schedule, "weight_decay": weight_decay, "clip": clip,
                   "supervise": supervise, "dice": dice, "augment": augment,
                   "batch_size": batch_size,
                   "crops": None if crops is None else [crops.size, crops.scale,
                                                        crops.object_share]},
    }
    record({"kind": "end", **metrics})
    model.eval()
    model.save_pretrained(out)
    return UNetTrainResult(out, metrics, model)
