"""`boltzformer bench`: measure what Boltzmann attention sampling saves, in time, FLOPs and
memory per attention mode.

Every part (the decoder alone, the whole model) is measured at each input size in each mode
(`bench_measure`): the time is the median of `repeats` after `warmup` runs, the modes
interleaved within every repeat so that a slow moment of a shared machine hits all of them.
The result is summarised by `bench_report`.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from boltzformer.apps.bench_measure import (
    FAST,
    MODES,
    REFERENCE,
    Workload,
    agreement,
    count_flops,
    decoder_workload,
    model_workload,
    peak_memory,
    set_mode,
    time_step,
)
from boltzformer.apps.bench_report import format_report, ratios, scaling
from boltzformer.apps.profiling import Profile, format_profile, model_parts, profile_calls
from boltzformer.apps.tool_output import progress_bar, write_json
from boltzformer.modeling.config import get_preset

PARTS: tuple[str, ...] = ("decoder", "model")


@dataclass(frozen=True)
class BenchSettings:
    """What to measure. `sizes` are square input sizes in pixels (multiples of 32)."""

    preset: str = "paper-hiera-s"
    sizes: tuple[int, ...] = (256, 512)
    parts: tuple[str, ...] = PARTS
    modes: tuple[str, ...] = tuple(MODES)
    repeats: int = 3
    warmup: int = 1
    batch: int = 1
    seed: int = 0
    device: str = "cpu"
    memory: bool = True

    def __post_init__(self) -> None:
        problems = size_problems(self.sizes)
        if unknown := [p for p in self.parts if p not in PARTS]:
            problems.append(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
        if unknown := [m for m in self.modes if m not in MODES]:
            problems.append(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
        if self.repeats < 1 or self.warmup < 0 or self.batch < 1:
            problems.append("repeats and batch must be >= 1 and warmup >= 0")
        if problems:
            raise ValueError("; ".join(problems))
        get_preset(self.preset)  # raises with the valid names


def size_problems(sizes: tuple[int, ...]) -> list[str]:
    """What is wrong with image sizes to measure at ([] when nothing): they must be positive
    multiples of 32 (the backbone's stride)."""
    if not sizes or any(s <= 0 or s % 32 for s in sizes):
        return [f"sizes must be positive multiples of 32, got {list(sizes)}"]
    return []


def machine_description(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": _cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_count() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _workloads(settings: BenchSettings, device: torch.device) -> Iterator[tuple[str, int,
                                                                                 Workload]]:
    config = get_preset(settings.preset)
    builders = {"decoder": decoder_workload, "model": model_workload}
    for part in settings.parts:
        for size in settings.sizes:
            yield part, size, builders[part](config, size, settings.batch, device, settings.seed)


def steps_per_workload(settings: BenchSettings) -> int:
    """Progress units per (part, size): every timed or counted step of every mode."""
    per_mode = 2 * (settings.warmup + settings.repeats) + 1 + (2 if settings.memory else 0)
    return len(settings.modes) * per_mode + 1


def run_benchmark(settings: BenchSettings, progress: Callable[[str], None] | None = None
                  ) -> dict[str, Any]:
    """Measure every part, size and mode; return a JSON-ready dict (see
    `bench_report.format_report`).

    `progress(label)` is called once per unit of work (`steps_per_workload` per part and size).
    """
    device = torch.device(settings.device)
    tick = progress or (lambda label: None)
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for part, size, work in _workloads(settings, device):
        label = f"{part} {size}px"
        times: dict[str, dict[str, list[float]]] = {
            m: {"forward": [], "forward_backward": []} for m in settings.modes
        }
        for repeat in range(settings.warmup + settings.repeats):
            for backward, key in ((False, "forward"), (True, "forward_backward")):
                for name in settings.modes:  # interleaved: every repeat visits every mode
                    set_mode(work.decoder, MODES[name])
                    seconds = time_step(work, backward, settings.seed, device)
                    if repeat >= settings.warmup:
                        times[name][key].append(seconds)
                    tick(f"{label} {name} {key.replace('_', '+')}")
        for name in settings.modes:
            set_mode(work.decoder, MODES[name])
            row: dict[str, Any] = {"part": part, "size": size, "tokens": work.tokens,
                                   "mode": name}
            for key, values in times[name].items():
                row[f"{key}_seconds"] = statistics.median(values)
                row[f"{key}_seconds_all"] = values
            row["flops"] = count_flops(work, settings.seed, device)
            tick(f"{label} {name} flops")
            if settings.memory:
                row["peak_memory_bytes"] = {}
                for backward, key in ((False, "forward"), (True, "forward_backward")):
                    row["peak_memory_bytes"][key] = peak_memory(work, backward, settings.seed,
                                                                device)
                    tick(f"{label} {name} memory {key.replace('_', '+')}")
            rows.append(row)
        if REFERENCE in settings.modes and FAST in settings.modes:
            checks.append({"part": part, "size": size, **agreement(work, settings.seed, device)})
        tick(f"{label} agreement")
        del work
    return {
        "settings": {
            **asdict(settings),
            "mode_definitions": {m: asdict(MODES[m]) for m in settings.modes},
        },
        "machine": machine_description(device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "results": rows,
        "ratios": ratios(rows),
        "scaling": scaling(rows),
        "agreement": checks,
    }


def profile_benchmark(settings: BenchSettings, progress: Callable[[str], None] | None = None
                      ) -> list[tuple[str, Profile]]:
    """`torch.profiler` CPU time of one forward+backward step by model part (`profiling`), for
    every part, size and mode: (title, seconds by (part, phase)) each, the mean of `repeats`
    profiled steps after `warmup` unprofiled ones."""
    device = torch.device(settings.device)
    tick = progress or (lambda label: None)
    tables = []
    for part, size, work in _workloads(settings, device):
        parts = model_parts(work.module)
        for name in settings.modes:
            set_mode(work.decoder, MODES[name])
            for _ in range(settings.warmup):
                time_step(work, True, settings.seed, device)
            step = functools.partial(time_step, work, True, settings.seed, device)
            seconds = profile_calls(step, parts, settings.repeats)
            tables.append((f"{part} {size}px, {name}, forward+backward, mean of "
                           f"{settings.repeats} step(s)", seconds))
            tick(f"{part} {size}px {name} profile")
        del work
    return tables


def format_profiles(tables: list[tuple[str, Profile]]) -> str:
    """The tables of `profile_benchmark`, one after another."""
    return "\n\n".join(format_profile(seconds, f"**{title}**") for title, seconds in tables)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` intra-op threads (None: leave as is), restoring the old count."""
    old = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_bench(settings: BenchSettings, *, threads: int | None = None, profile: bool = False,
              json_path: Path | None = None, quiet: bool = False,
              command: str = "boltzformer bench") -> dict[str, Any]:
    """`boltzformer bench`: measure (`run_benchmark`) or, with `profile`, profile
    (`profile_benchmark`) under `threads` torch threads with a progress bar on stderr, print
    the report, write the record to `json_path` (None: nowhere) and return it. `command`:
    the command line the record says made it."""
    if profile:
        total = len(settings.modes) * len(settings.parts) * len(settings.sizes)
        with torch_threads(threads), progress_bar(total, "profile", quiet) as progress:
            tables = profile_benchmark(settings, progress)
            used = torch.get_num_threads()
        print(f"`{command}`, {used} thread(s)\n")
        print(format_profiles(tables))
        rows = [{"title": title, "part": part, "phase": phase, "seconds": s,
                 "flop_counted_seconds": result.counted.get((part, phase), 0.0)}
                for title, result in tables for (part, phase), s in result.seconds.items()]
        record: dict[str, Any] = {"command": command, "threads": used, "rows": rows}
    else:
        total = steps_per_workload(settings) * len(settings.parts) * len(settings.sizes)
        with torch_threads(threads), progress_bar(total, "step", quiet) as progress:
            record = run_benchmark(settings, progress)
        record["command"] = command
        print(format_report(record))
    write_json(json_path, record)
    return record
