"""Training throughput: (image, prompt) pairs per second of real training steps.

Each measurement runs the trainer's own pieces on a `TrainConfig`: `EpochView` groups of up
to K prompts per image (augmented), `collate_groups`, and `TrainStep` (one encoding per image,
the decoder on every pair, the training loss with or without deep supervision, backward,
clipping, the AdamW step and the schedule's). Values of K are measured interleaved
(round-robin, one step each) so that a shared machine's drift affects them alike; the median
step time of each is reported.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.profiler import record_function
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from boltzformer.apps.profiling import Profile, format_profile, model_parts, profile_calls
from boltzformer.data import BiomedParseDataset, generate_phantoms
from boltzformer.modeling.attention import PART
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.train.config import DataConfig, LoopConfig, ModelSpec, TrainConfig
from boltzformer.train.data import EpochView, collate_groups
from boltzformer.train.distributed import resolve_device
from boltzformer.train.optim import build_optimizer, build_scheduler
from boltzformer.train.step import TrainStep

# What is measured unless told otherwise: `tiny` at 256 pixels, 8 images a step, on the CPU,
# the data loaded in the measuring process (the timed steps exclude loading).
TRAINING = TrainConfig(
    model=ModelSpec(preset="tiny", overrides={"image_size": 256}),
    data=DataConfig(workers=0),
    train=LoopConfig(batch_size=8, device="cpu"),
)


@dataclass(frozen=True)
class ThroughputSettings:
    """Each K of `prompts_per_image` in turn (as `train.prompts_per_image`), `steps` timed
    steps after `warmup` untimed ones, of the run `training` describes (its `data.root`).
    `compare`: other settings ("key=value" overrides of `training`, one tuple each) measured
    alongside, each with its own model, interleaved step by step with the first."""

    training: TrainConfig = TRAINING
    prompts_per_image: tuple[int, ...] = (1, 8)
    steps: int = 10  # timed steps per K
    warmup: int = 2  # untimed steps per K first
    compare: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup < 0:
            raise ValueError(f"steps must be >= 1 and warmup >= 0, got {self.steps} and "
                             f"{self.warmup}")
        if not self.prompts_per_image:
            raise ValueError("give at least one value of prompts_per_image")
        for setting in self.settings:
            for k in self.prompts_per_image:
                self.config(k, setting)  # each is checked as the training config checks it

    @property
    def settings(self) -> tuple[tuple[str, ...], ...]:
        """The settings measured: `training` itself (no overrides), then each of `compare`."""
        return ((), *self.compare)

    def config(self, k: int, setting: tuple[str, ...] = ()) -> TrainConfig:
        """The training measured for K = `k` under `setting`'s overrides."""
        return self.training.with_overrides(list(setting)).with_overrides(
            {"train.prompts_per_image": k})


def _batches(cfg: TrainConfig, base: BiomedParseDataset) -> Iterator[dict[str, Any]]:
    loop = cfg.train
    view = EpochView(base, range(len(base)), seed=loop.seed, augment=cfg.data.augment,
                     prompts_per_image=loop.prompts_per_image, rotations=cfg.data.rotations,
                     negatives=cfg.data.negatives)
    while True:
        loader = DataLoader(view, batch_size=loop.batch_size, shuffle=True,
                            num_workers=cfg.data.workers, collate_fn=collate_groups,
                            generator=torch.Generator().manual_seed(loop.seed))
        yield from loader


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(s: ThroughputSettings, setting: tuple[str, ...] = ()
           ) -> tuple[BoltzFormer, TrainStep, dict[int, Iterator[dict[str, Any]]]]:
    """The model, its `TrainStep` and a batch stream per K, as `measure_throughput` runs them,
    under `setting`'s overrides."""
    cfg = s.training.with_overrides(list(setting))
    loop = cfg.train
    if cfg.data.root is None:
        raise ValueError("no data to measure on: set data.root (--data DIR)")
    device = resolve_device(loop.device)
    model_config = cfg.model.resolve()
    base = BiomedParseDataset(cfg.data.root, cfg.data.split, image_size=model_config.image_size,
                              train=False)
    torch.manual_seed(loop.seed)
    model = BoltzFormer.from_config(model_config).to(device).train()
    optimizer = build_optimizer(model, cfg.optim)
    per_k = s.warmup + s.steps
    scheduler = build_scheduler(optimizer, cfg.optim, per_k * len(s.prompts_per_image))
    step = TrainStep(model, optimizer, scheduler, cfg, device,
                     torch.Generator(device).manual_seed(loop.seed),
                     net=torch.compile(model) if loop.compile else model)
    return model, step, {k: _batches(s.config(k, setting), base) for k in s.prompts_per_image}


def measure_throughput(s: ThroughputSettings, progress: bool = True) -> list[dict[str, Any]]:
    """One row per setting and K: pairs and images per step, median seconds per step, pairs/s,
    images/s. The settings and Ks take one step each in turn."""
    loop = s.training.train
    runs = {}  # (setting, K) -> (its step, its batches)
    for setting in s.settings:
        _, step, streams = _setup(s, setting)
        runs.update({(setting, k): (step, stream) for k, stream in streams.items()})
    per_k = s.warmup + s.steps
    times: dict[tuple, list[float]] = {key: [] for key in runs}
    pairs: dict[tuple, list[int]] = {key: [] for key in runs}
    with tqdm(total=per_k * len(runs), desc="throughput", unit="step",
              disable=not progress) as bar:
        for i in range(per_k):
            for key, (step, stream) in runs.items():
                batch = next(stream)
                _synchronize(step.device)
                started = time.perf_counter()
                step(batch)
                _synchronize(step.device)
                if i >= s.warmup:
                    times[key].append(time.perf_counter() - started)
                    pairs[key].append(len(batch["prompt"]))
                bar.update()
    rows = []
    for setting, k in runs:
        seconds = statistics.median(times[setting, k])
        per_step = statistics.mean(pairs[setting, k])
        rows.append({"setting": " ".join(setting), "prompts_per_image": k,
                     "images_per_step": loop.batch_size, "pairs_per_step": per_step,
                     "seconds_per_step": seconds, "pairs_per_s": per_step / seconds,
                     "images_per_s": loop.batch_size / seconds})
    return rows


def profile_training(s: ThroughputSettings, progress: bool = True
                     ) -> dict[int, Profile]:
    """`torch.profiler` CPU seconds of a training step by part and phase (`profiling`), data
    loading included, for each K: the mean of `steps` profiled steps after `warmup` others."""
    model, step, streams = _setup(s)
    parts = model_parts(model)
    tables = {}
    with tqdm(total=(s.warmup + s.steps) * len(streams), desc="profile", unit="step",
              disable=not progress) as bar:
        for k, stream in streams.items():
            for _ in range(s.warmup):
                step(next(stream))
                bar.update()

            def one(stream: Iterator[dict[str, Any]] = stream) -> None:
                with record_function(PART + "data loading"):
                    batch = next(stream)
                step(batch)
                bar.update()

            tables[k] = profile_calls(one, parts, s.steps)
    return tables


def format_rows(s: ThroughputSettings, rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `rows`, with the speed-up of each row over the first; a setting
    column when other settings were compared."""
    cfg = s.training
    size = cfg.model.resolve().image_size
    compared = bool(s.compare)
    lines = [f"`{cfg.model.preset}` at {size}x{size}, {cfg.train.batch_size} images per step, "
             f"deep supervision {'on' if cfg.loss.deep_supervision else 'off'}, "
             f"{torch.get_num_threads()} thread(s); median of {s.steps} steps", "",
             ("| setting " if compared else "") + "| K (prompts per image) | pairs per step | "
             "s per step | pairs/s | images/s | pairs/s vs first |",
             ("|---" if compared else "") + "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        setting = f"| {r['setting'] or 'as given'} " if compared else ""
        lines.append(f"{setting}| {r['prompts_per_image']} | {r['pairs_per_step']:.1f} | "
                     f"{r['seconds_per_step']:.2f} | {r['pairs_per_s']:.1f} | "
                     f"{r['images_per_s']:.1f} | "
                     f"{r['pairs_per_s'] / rows[0]['pairs_per_s']:.2f}x |")
    return "\n".join(lines)


def run_throughput(s: ThroughputSettings, *, data: Path | None = None,
                   threads: int | None = None, profile: bool = False,
                   progress: bool = True) -> None:
    """`boltzformer throughput`: the training of `s` on `data` (None: 40 phantoms at its image
    size in a temporary folder) with `threads` torch threads; prints the pairs/s table
    (`measure_throughput`) or, with `profile`, each K's step time by part."""
    if threads is not None:
        torch.set_num_threads(threads)
    model = s.training.model.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            data = Path(tmp) / "phantoms"
            generate_phantoms(data, images=40, size=model.image_size, seed=s.training.train.seed,
                              progress=False)
        s = replace(s, training=s.training.replace(
            data=replace(s.training.data, root=str(data))))
        if profile:
            tables = profile_training(s, progress=progress)
        else:
            rows = measure_throughput(s, progress=progress)
    if not profile:
        print(format_rows(s, rows))
        return
    cfg = s.training
    for k, result in tables.items():
        print(format_profile(result, f"**`{cfg.model.preset}` at {model.image_size}x"
                             f"{model.image_size}, {cfg.train.batch_size} images per step, "
                             f"K = {k}, {torch.get_num_threads()} thread(s), mean of "
                             f"{s.steps} steps**") + "\n")
