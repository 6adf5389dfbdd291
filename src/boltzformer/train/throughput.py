"""Training throughput: (image, prompt) pairs per second of real training steps.

Each measurement runs the trainer's own pipeline: `EpochView` groups of up to K prompts per
image (augmented), `collate_groups`, one encoding per image, the decoder on every pair, the
training loss (with or without deep supervision), backward and an AdamW step. Values of K are
measured interleaved (round-robin, one step each) so that a shared machine's drift affects them
alike; the median step time of each is reported.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from boltzformer.data import BiomedParseDataset
from boltzformer.loss import training_loss
from boltzformer.modeling.boltzformer import build_model
from boltzformer.train.data import EpochView, collate_groups


@dataclass(frozen=True)
class ThroughputSettings:
    data: Path
    preset: str = "tiny"
    image_size: int = 256
    batch_size: int = 8  # images per step
    prompts_per_image: tuple[int, ...] = (1, 8)
    steps: int = 10  # timed steps per K
    warmup: int = 2  # untimed steps per K first
    deep_supervision: bool = True
    seed: int = 0


def _batches(s: ThroughputSettings, base: BiomedParseDataset, k: int):
    view = EpochView(base, range(len(base)), seed=s.seed, augment=True, prompts_per_image=k)
    while True:
        loader = DataLoader(view, batch_size=s.batch_size, shuffle=True, collate_fn=collate_groups,
                            generator=torch.Generator().manual_seed(s.seed))
        yield from loader


def measure_throughput(s: ThroughputSettings, progress: bool = True) -> list[dict[str, Any]]:
    """One row per K: pairs and images per step, median seconds per step, pairs/s, images/s."""
    from tqdm.auto import tqdm

    base = BiomedParseDataset(s.data, "train", image_size=s.image_size, train=False)
    torch.manual_seed(s.seed)
    model = build_model(s.preset, image_size=s.image_size).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(s.seed)
    streams = {k: _batches(s, base, k) for k in s.prompts_per_image}
    times: dict[int, list[float]] = {k: [] for k in s.prompts_per_image}
    pairs: dict[int, list[int]] = {k: [] for k in s.prompts_per_image}
    total = (s.warmup + s.steps) * len(streams)
    with tqdm(total=total, desc="throughput", unit="step", disable=not progress) as bar:
        for i in range(s.warmup + s.steps):
            for k, stream in streams.items():
                batch = next(stream)
                started = time.perf_counter()
                out = model(batch["image"], batch["prompt"], image_index=batch["image_index"],
                            generator=generator, return_layers=s.deep_supervision)
                loss, _ = training_loss(out.logits, batch["mask"], out.layer_logits)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if i >= s.warmup:
                    times[k].append(time.perf_counter() - started)
                    pairs[k].append(len(batch["prompt"]))
                bar.update()
    rows = []
    for k in s.prompts_per_image:
        step = statistics.median(times[k])
        per_step = statistics.mean(pairs[k])
        rows.append({"prompts_per_image": k, "images_per_step": s.batch_size,
                     "pairs_per_step": per_step, "seconds_per_step": step,
                     "pairs_per_s": per_step / step, "images_per_s": s.batch_size / step})
    return rows


def format_rows(s: ThroughputSettings, rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `rows`, with the speed-up of each K over the first."""
    lines = [f"`{s.preset}` at {s.image_size}x{s.image_size}, {s.batch_size} images per step, "
             f"deep supervision {'on' if s.deep_supervision else 'off'}, "
             f"{torch.get_num_threads()} thread(s); median of {s.steps} steps", "",
             "| K (prompts per image) | pairs per step | s per step | pairs/s | images/s | "
             "pairs/s vs first |", "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['prompts_per_image']} | {r['pairs_per_step']:.1f} | "
                     f"{r['seconds_per_step']:.2f} | {r['pairs_per_s']:.1f} | "
                     f"{r['images_per_s']:.1f} | "
                     f"{r['pairs_per_s'] / rows[0]['pairs_per_s']:.2f}x |")
    return "\n".join(lines)
