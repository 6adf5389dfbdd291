"""Inference latency of `Predictor`: what a user waits for, per image and per extra prompt.

For a preset with random weights at each input size S (the model's `image_size`, the image
S x S so that nothing is resized): the time of `set_image` (backbone and pixel decoder) and
of `predict` with each number P of prompts (text encoder, decoder, PiGMA, the resize of the
answer), the median of `repeats` after `warmup` untimed rounds. Within a round `set_image` and
every P run in turn, so a slow moment of a shared machine hits all of them. The cost of an
extra prompt is the least-squares slope of the median `predict` time over P, and its
intercept the decoder's fixed cost. With `batch_sizes`, also `predict_images` (the folder
path, without file reading and writing) on one batch of B images with one prompt, as images
per second.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boltzformer.apps.bench import machine_description, size_problems, torch_threads
from boltzformer.apps.tool_output import progress_bar, write_json
from boltzformer.inference.predictor import Predictor
from boltzformer.modeling.boltzformer import build_model
from boltzformer.modeling.config import get_preset
from boltzformer.train.distributed import resolve_device

# Prompts in the order `predict` gets them: P prompts are the first P.
PROMPTS: tuple[str, ...] = (
    "nodule in lung CT", "left lung in chest CT", "liver in abdomen CT",
    "right kidney in abdomen CT", "tumor in brain MRI", "left ventricle in cardiac MRI",
    "nuclei in fluorescence microscopy", "polyp in colonoscopy",
)


@dataclass(frozen=True)
class LatencySettings:
    """What to measure: `preset` at each of `sizes`, `predict` with each P of `prompts`."""

    preset: str = "tiny"
    sizes: tuple[int, ...] = (256, 512, 1024)
    prompts: tuple[int, ...] = (1, 2, 4, 8)
    repeats: int = 5
    warmup: int = 1
    samples: int = 1
    batch_sizes: tuple[int, ...] = ()  # predict_images on B images, one prompt
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        problems = size_problems(self.sizes)
        if not self.prompts or any(not 1 <= p <= len(PROMPTS) for p in self.prompts):
            problems.append(f"prompt counts must be within 1-{len(PROMPTS)}, got "
                            f"{list(self.prompts)}")
        if any(b < 1 for b in self.batch_sizes):
            problems.append(f"batch sizes must be >= 1, got {list(self.batch_sizes)}")
        if self.repeats < 1 or self.warmup < 0 or self.samples < 1:
            problems.append("repeats and samples must be >= 1 and warmup >= 0")
        if problems:
            raise ValueError("; ".join(problems))
        get_preset(self.preset)  # raises with the valid names

    def rounds(self) -> int:
        """Timed and untimed rounds per size, each a `set_image`, every P and every B."""
        return (self.warmup + self.repeats) * len(self.sizes)


def _timer(device: torch.device) -> Callable[..., float]:
    """`timed(fn, *args, **kwargs)`: the seconds `fn(*args, **kwargs)` takes, the device's
    queued work included."""
    def timed(fn: Callable[..., object], *args: Any, **kwargs: Any) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    return timed


def slope(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares line through (x, y): (slope, intercept); slope 0 for one x."""
    if len(set(xs)) < 2:
        return 0.0, statistics.mean(ys)
    fit = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(fit[0]), float(fit[1])


def _measure_size(
    s: LatencySettings, size: int, device: torch.device, progress: Callable[[str], None]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One size's row and its batch rows."""
    torch.manual_seed(s.seed)
    model = build_model(s.preset, image_size=size)
    predictor = Predictor(model, device=device, seed=s.seed)
    rng = np.random.default_rng(s.seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    batch = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
             for _ in range(max(s.batch_sizes, default=0))]
    timed = _timer(device)
    encode: list[float] = []
    predict: dict[int, list[float]] = {p: [] for p in s.prompts}
    batches: dict[int, list[float]] = {b: [] for b in s.batch_sizes}
    for round_ in range(s.warmup + s.repeats):
        keep = round_ >= s.warmup
        seconds = timed(predictor.set_image, image)
        if keep:
            encode.append(seconds)
        for p in s.prompts:
            seconds = timed(predictor.predict, PROMPTS[:p], samples=s.samples)
            if keep:
                predict[p].append(seconds)
        for b in s.batch_sizes:
            answers = predictor.predict_images(batch[:b], PROMPTS[:1], batch_size=b,
                                               samples=s.samples)  # runs when listed
            seconds = timed(list, answers)
            if keep:
                batches[b].append(seconds)
        progress(f"{s.preset} {size}")
    medians = {p: statistics.median(t) for p, t in predict.items()}
    per_prompt, fixed = slope(list(medians), list(medians.values()))
    row = {
        "size": size,
        "encode_s": statistics.median(encode),
        "predict_s": {str(p): m for p, m in medians.items()},
        "per_extra_prompt_s": per_prompt,
        "decoder_fixed_s": fixed,
        "image_one_prompt_s": statistics.median(encode) + medians[1] if 1 in medians else None,
        "encode_all_s": encode,
        "predict_all_s": {str(p): t for p, t in predict.items()},
    }
    rows = [{"size": size, "batch_size": b, "batch_s": statistics.median(t),
             "images_per_s": b / statistics.median(t), "batch_all_s": t}
            for b, t in batches.items()]
    return row, rows


def measure_latency(
    s: LatencySettings, progress: Callable[[str], None] = lambda label: None
) -> dict[str, Any]:
    """Every size's row (`rows`) and batch rows (`batches`), the settings, and the machine
    (its load average before and after, where the system reports one)."""
    device = resolve_device(s.device)
    started = datetime.now(timezone.utc)
    load_before = _load()
    rows, batches = [], []
    with torch.inference_mode():
        for size in s.sizes:
            row, batch_rows = _measure_size(s, size, device, progress)
            rows.append(row)
            batches += batch_rows
    machine = machine_description(device) | {"load_average_before": load_before,
                                             "load_average_after": _load()}
    return {"settings": asdict(s), "machine": machine, "started_utc": started.isoformat(
        timespec="seconds"), "seconds": (datetime.now(timezone.utc) - started).total_seconds(),
        "rows": rows, "batches": batches}


def _load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the system has none."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def format_latency(result: dict[str, Any]) -> str:
    """Markdown: the machine, a table of encode and predict times per size, and the batches."""
    s, m = result["settings"], result["machine"]
    ms = 1000.0
    head = (f"`{s['preset']}` (random weights), {m['device']}, {m['torch_threads']} torch "
            f"thread(s), {m.get('cpu_model', m['processor'])}, {m['cpu_count']} CPUs; load "
            f"average {m['load_average_before']} before, {m['load_average_after']} after; "
            f"median of {s['repeats']} after {s['warmup']} warm-up; samples {s['samples']}; "
            f"started {result['started_utc']}, {result['seconds']:.0f} s")
    prompts = list(result["rows"][0]["predict_s"]) if result["rows"] else []
    lines = [head, "", "| input | set_image (encode) | " + " | ".join(
        f"predict, {p} prompt{'s' if p != '1' else ''}" for p in prompts)
        + " | per extra prompt | image + 1 prompt |",
        "|---:|---:|" + "---:|" * len(prompts) + "---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['size']}² | {r['encode_s'] * ms:.0f} ms | " + " | ".join(
            f"{r['predict_s'][p] * ms:.0f} ms" for p in prompts)
            + f" | {r['per_extra_prompt_s'] * ms:.1f} ms | {_ms(r['image_one_prompt_s'])} |")
    if result["batches"]:
        lines += ["", "`predict_images`, one prompt, B images encoded together (no file I/O):",
                  "", "| input | B | s per batch | images/s |", "|---:|---:|---:|---:|"]
        for b in result["batches"]:
            lines.append(f"| {b['size']}² | {b['batch_size']} | {b['batch_s']:.2f} | "
                         f"{b['images_per_s']:.2f} |")
    return "\n".join(lines)


def run_latency(settings: LatencySettings, *, threads: int | None = None,
                json_path: Path | None = None, quiet: bool = False,
                command: str = "boltzformer latency") -> dict[str, Any]:
    """`boltzformer latency`: `measure_latency` under `threads` torch threads with a progress
    bar on stderr, the table printed, the record written to `json_path` (None: nowhere) and
    returned. `command`: the command line the record says made it."""
    with torch_threads(threads), progress_bar(settings.rounds(), "round", quiet) as progress:
        result = measure_latency(settings, progress)
    result["command"] = command
    print(format_latency(result))
    write_json(json_path, result)
    return result
