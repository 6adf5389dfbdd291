"""Measure what Boltzmann attention sampling saves: time, FLOPs and memory per attention mode.

Two parts are measured at each input size: the decoder alone, fed random multi-scale features,
semantic map and text tokens of the shapes the pixel decoder and text encoder give it, and the
whole model on a random image. Every part runs in each mode of `MODES`, with the same weights
(modes switch settings that do not change parameters):

- forward time (inference: eval mode, no gradient) and forward+backward time (training step:
  forward, mean of the output, backward), median of `repeats` after `warmup` runs, the modes
  interleaved within every repeat so that a slow moment of a shared machine hits all of them;
- FLOPs counted by `torch.utils.flop_counter.FlopCounterMode` (plus formulas for the CPU
  attention kernels it does not know), in total and inside the cross-attention modules;
- peak memory: on CUDA the allocator's peak; on CPU the most bytes held at once by tensors
  created during the step (a dispatch mode follows every new storage until it is freed);
- how each grows with the input: the exponent a of metric ~ tokens^a (least squares in
  log-log over the sizes), tokens being those of the finest decoder level (~ pixels).

A fixed random generator makes every mode draw the same samples in every repeat.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import (
    FlopCounterMode,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from boltzformer.modeling.attention import SampledCrossAttention
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.config import BoltzFormerConfig, get_preset
from boltzformer.modeling.mask_decoder import BoltzFormerDecoder

TEXT_TOKENS = 8  # prompt length fed to the decoder alone ("left adrenal gland in abdomen CT")
PROMPT = "left adrenal gland in abdomen CT"
PARTS: tuple[str, ...] = ("decoder", "model")


@dataclass(frozen=True)
class Mode:
    """An attention mode: how keep masks are made, which attention kernel, which logits."""

    attention: str  # SamplingSettings.attention
    impl: str  # SampledCrossAttention implementation
    logits: str  # SamplingSettings.logits
    about: str


MODES: dict[str, Mode] = {
    "full": Mode("full", "auto", "lowres", "every query attends to every token"),
    "masked": Mode("masked", "auto", "lowres", "Mask2Former masked attention, threshold 0.5"),
    "boltzmann-reference": Mode(
        "boltzmann", "dense", "reference",
        "Boltzmann sampling computed as the authors' release computes it: full-resolution "
        "logits of every query at every layer, dense attention with a boolean mask (one draw "
        "per query; the release draws per head, sampling_per_head)",
    ),
    "boltzmann-fast": Mode(
        "boltzmann", "auto", "lowres",
        "Boltzmann sampling with low-resolution logits and sparse attention",
    ),
}
REFERENCE, FAST, FULL = "boltzmann-reference", "boltzmann-fast", "full"


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
        problems = []
        if not self.sizes or any(s <= 0 or s % 32 for s in self.sizes):
            problems.append(f"sizes must be positive multiples of 32, got {list(self.sizes)}")
        if unknown := [p for p in self.parts if p not in PARTS]:
            problems.append(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
        if unknown := [m for m in self.modes if m not in MODES]:
            problems.append(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
        if self.repeats < 1 or self.warmup < 0 or self.batch < 1:
            problems.append("repeats and batch must be >= 1 and warmup >= 0")
        if problems:
            raise ValueError("; ".join(problems))
        get_preset(self.preset)  # raises with the valid names


@dataclass
class Workload:
    """A module to measure and how to run it: `run(generator, return_sampling)` returns the
    output tensor and, when asked, the keep masks of every decoder layer."""

    module: nn.Module
    decoder: BoltzFormerDecoder
    run: Callable[[torch.Generator, bool], tuple[Tensor, list[Tensor] | None]]
    leaves: list[Tensor] = field(default_factory=list)  # inputs that take gradients
    tokens: int = 0  # tokens of the finest decoder level


def decoder_workload(config: BoltzFormerConfig, size: int, batch: int,
                     device: torch.device, seed: int) -> Workload:
    """The decoder alone with random inputs of the shapes it gets at `size` x `size`.

    Levels (B, d, size/s, size/s) for s = 32, 16, 8; S (B, D, size/4, size/4); text (B, 8, d).
    The inputs take gradients, as they do when the whole model trains.
    """
    torch.manual_seed(seed)
    decoder = BoltzFormerDecoder.from_config(config).to(device)
    g = torch.Generator(device).manual_seed(seed)
    d = config.hidden_dim

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, device=device).requires_grad_()

    strides = (32, 16, 8)[: config.num_levels]
    levels = [rand(batch, d, size // s, size // s) for s in strides]
    semantic = rand(batch, config.mask_dim, size // 4, size // 4)
    text = rand(batch, TEXT_TOKENS, d)
    padding = torch.zeros(batch, TEXT_TOKENS, dtype=torch.bool, device=device)

    def run(generator: torch.Generator, return_sampling: bool):
        out = decoder(levels, semantic, text, padding, generator=generator,
                      return_sampling=return_sampling)
        return out.query_logits, out.keep_masks

    return Workload(decoder, decoder, run, levels + [semantic, text],
                    (size // strides[-1]) ** 2)


def model_workload(config: BoltzFormerConfig, size: int, batch: int,
                   device: torch.device, seed: int) -> Workload:
    """The whole model (random weights) on a random `size` x `size` image and a prompt."""
    torch.manual_seed(seed)
    model = BoltzFormer.from_config(config.override(image_size=size)).to(device)
    g = torch.Generator(device).manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g, device=device) * 255
    prompts = [PROMPT] * batch

    def run(generator: torch.Generator, return_sampling: bool):
        out = model(images, prompts, generator=generator, return_sampling=return_sampling)
        return out.logits, out.keep_masks

    stride = (32, 16, 8)[config.num_levels - 1]
    return Workload(model, model.decoder, run, [], (size // stride) ** 2)


def set_mode(decoder: BoltzFormerDecoder, mode: Mode) -> None:
    """Switch `decoder` to `mode` in place (same weights)."""
    decoder.sampling = replace(
        decoder.sampling, attention=mode.attention, logits=mode.logits, mask_threshold=0.5
    )
    decoder.set_attention_impl(mode.impl)


# --- one step ---------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clear_grads(work: Workload) -> None:
    for t in [*work.module.parameters(), *work.leaves]:
        t.grad = None


def _step(work: Workload, backward: bool, seed: int, device: torch.device) -> None:
    """One inference forward (eval, no grad) or one training step (forward + backward)."""
    generator = torch.Generator(device).manual_seed(seed)
    if backward:
        work.module.train()
        out, _ = work.run(generator, False)
        out.float().mean().backward()
    else:
        work.module.eval()
        with torch.no_grad():
            work.run(generator, False)


def _timed(work: Workload, backward: bool, seed: int, device: torch.device) -> float:
    _clear_grads(work)
    _synchronize(device)
    start = time.perf_counter()
    _step(work, backward, seed, device)
    _synchronize(device)
    return time.perf_counter() - start


# --- FLOPs ------------------------------------------------------------------------------------
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args,
                             out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# The counter has formulas for the CUDA attention kernels only; the CPU one does the same math
# (dense: every query against every token, whatever the mask).
_EXTRA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        _cpu_sdpa_backward_flops,
}


def _flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)


def count_flops(work: Workload, seed: int, device: torch.device) -> dict[str, int]:
    """FLOPs of one forward and one forward+backward: in total, and inside the cross-attention.

    Modules run in training mode (no dropout in these models) and with gradients enabled, so
    that PyTorch's fused inference kernels, which the counter cannot see into, are not used
    (the forward math is the same). Cross-attention FLOPs are counted by replaying every
    cross-attention call of the step with the same inputs, keep masks included (the counter's
    per-module split is unreliable in the backward pass); the replayed backward sends
    gradients to the queries, the image tokens and the weights.
    """
    work.module.train()
    calls: list[tuple[SampledCrossAttention, tuple]] = []

    def record(module: nn.Module, args: tuple, kwargs: dict, _out: Any) -> None:
        calls.append((module, tuple(a.detach() if isinstance(a, Tensor) else a for a in args)))

    attns = [m for m in work.module.modules() if isinstance(m, SampledCrossAttention)]
    hooks = [m.register_forward_hook(record, with_kwargs=True) for m in attns]
    _clear_grads(work)
    try:
        with _flop_counter() as fwd:
            out, _ = work.run(torch.Generator(device).manual_seed(seed), False)
    finally:
        for h in hooks:
            h.remove()
    with _flop_counter() as bwd:
        out.float().mean().backward()
    _clear_grads(work)

    attn_fwd = attn_bwd = 0
    for module, (query, memory, *rest) in calls:
        query, memory = query.requires_grad_(), memory.requires_grad_()
        with _flop_counter() as counter:
            attended = module(query, memory, *rest)
        attn_fwd += counter.get_total_flops()
        with _flop_counter() as counter:
            attended.sum().backward()
        attn_bwd += counter.get_total_flops()
    _clear_grads(work)
    return {
        "total_forward": fwd.get_total_flops(),
        "total_forward_backward": fwd.get_total_flops() + bwd.get_total_flops(),
        "attention_forward": attn_fwd,
        "attention_forward_backward": attn_fwd + attn_bwd,
    }


# --- memory -----------------------------------------------------------------------------------
class _PeakTensorMemory(TorchDispatchMode):
    """Follows every storage created while active until it is freed; `peak` is the most bytes
    held at once. Storages that existed before are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _freed(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # Views, in-place and out= results share an input's storage: nothing new.
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, Tensor):
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self.live or key in inputs:
                continue
            self.live[key] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._freed, key)
        return out


def peak_memory(work: Workload, backward: bool, seed: int, device: torch.device) -> int:
    """Peak bytes allocated by one step beyond what was allocated before it."""
    _clear_grads(work)
    if device.type == "cuda":
        _synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _step(work, backward, seed, device)
        _synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        with _PeakTensorMemory() as tracker:
            _step(work, backward, seed, device)
        peak = tracker.peak
    _clear_grads(work)
    return peak


# --- agreement --------------------------------------------------------------------------------
def agreement(work: Workload, seed: int, device: torch.device) -> dict[str, float]:
    """Run the reference and the fast Boltzmann paths with the same generator and compare
    the keep masks they draw and their outputs."""
    work.module.eval()
    results = []
    for name in (REFERENCE, FAST):
        set_mode(work.decoder, MODES[name])
        with torch.no_grad():
            results.append(work.run(torch.Generator(device).manual_seed(seed), True))
    (ref_out, ref_keep), (fast_out, fast_keep) = results
    mismatches = sum(int((a != b).sum()) for a, b in zip(ref_keep, fast_keep))
    pairs = sum(k.numel() for k in ref_keep)
    kept = sum(int(k.sum()) for k in ref_keep)
    return {
        "keep_mask_mismatches": mismatches,
        "query_token_pairs": pairs,
        "kept_fraction": kept / pairs,
        "output_max_abs_diff": float((ref_out - fast_out).abs().max()),
        "output_max_abs": float(ref_out.abs().max()),
    }


# --- the run ----------------------------------------------------------------------------------
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
    """Measure every part, size and mode; return a JSON-ready dict (see `format_report`).

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
                    seconds = _timed(work, backward, settings.seed, device)
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


# --- summaries --------------------------------------------------------------------------------
def _find(rows: list[dict], part: str, size: int, mode: str) -> dict | None:
    return next((r for r in rows if (r["part"], r["size"], r["mode"]) == (part, size, mode)),
                None)


def ratios(rows: list[dict]) -> list[dict[str, Any]]:
    """Per part and size: the fast path against full (FLOPs) and against the reference (time).

    Time ratios are the median over repeats of the per-repeat ratio (modes measured side by
    side in each repeat), robust to a machine whose speed drifts.
    """
    out = []
    for part, size in dict.fromkeys((r["part"], r["size"]) for r in rows):
        fast, ref, full = (_find(rows, part, size, m) for m in (FAST, REFERENCE, FULL))
        if fast is None:
            continue
        entry: dict[str, Any] = {"part": part, "size": size}
        if full is not None:
            for key in ("attention_forward", "attention_forward_backward", "total_forward",
                        "total_forward_backward"):
                entry[f"{key}_flops_fast_over_full"] = fast["flops"][key] / full["flops"][key]
        for base_name, base in (("reference", ref), ("full", full)):
            if base is None:
                continue
            for key in ("forward", "forward_backward"):
                pairs = zip(fast[f"{key}_seconds_all"], base[f"{key}_seconds_all"])
                entry[f"{key}_time_fast_over_{base_name}"] = statistics.median(
                    a / b for a, b in pairs
                )
        out.append(entry)
    return out


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x: the a in y ~ x^a (None below 2 points)."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(points) < 2:
        return None
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


_SCALED_METRICS: dict[str, Callable[[dict], float]] = {
    "forward_seconds": lambda r: r["forward_seconds"],
    "forward_backward_seconds": lambda r: r["forward_backward_seconds"],
    "attention_flops_forward": lambda r: r["flops"]["attention_forward"],
    "attention_flops_forward_backward": lambda r: r["flops"]["attention_forward_backward"],
    "total_flops_forward_backward": lambda r: r["flops"]["total_forward_backward"],
    "peak_memory_forward_backward": lambda r: r.get("peak_memory_bytes", {}).get(
        "forward_backward", 0),
}


def scaling(rows: list[dict]) -> list[dict[str, Any]]:
    """Per part and mode: the exponent a of metric ~ tokens^a, fitted over all measured sizes
    ("fit") and between the two largest ("largest_pair", where fixed costs matter least)."""
    out = []
    for part, mode in dict.fromkeys((r["part"], r["mode"]) for r in rows):
        mine = sorted((r for r in rows if (r["part"], r["mode"]) == (part, mode)),
                      key=lambda r: r["tokens"])
        tokens = [r["tokens"] for r in mine]
        entry: dict[str, Any] = {"part": part, "mode": mode, "tokens": tokens}
        for name, get in _SCALED_METRICS.items():
            values = [get(r) for r in mine]
            entry[name] = {"fit": fit_exponent(tokens, values),
                           "largest_pair": fit_exponent(tokens[-2:], values[-2:])}
        out.append(entry)
    return out


def format_report(result: dict[str, Any]) -> str:
    """The measurements as plain-text tables (Markdown-compatible)."""
    rows = result["results"]
    lines = [
        "| part | size | mode | fwd ms | fwd+bwd ms | attn GFLOP fwd | attn GFLOP f+b "
        "| total GFLOP fwd | total GFLOP f+b | peak MiB fwd | peak MiB f+b |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        f, mem = r["flops"], r.get("peak_memory_bytes")
        peak = ([f"{mem[k] / 2**20:.0f}" for k in ("forward", "forward_backward")]
                if mem else ["-", "-"])
        lines.append(
            f"| {r['part']} | {r['size']} | {r['mode']} | {r['forward_seconds'] * 1e3:.0f} "
            f"| {r['forward_backward_seconds'] * 1e3:.0f} "
            f"| {f['attention_forward'] / 1e9:.2f} | {f['attention_forward_backward'] / 1e9:.2f} "
            f"| {f['total_forward'] / 1e9:.1f} | {f['total_forward_backward'] / 1e9:.1f} "
            f"| {peak[0]} | {peak[1]} |"
        )
    if result["ratios"]:
        lines += ["", "| part | size | attn FLOPs fast/full fwd | f+b | total FLOPs fast/full "
                  "f+b | time fast/reference fwd | f+b | time fast/full f+b |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for e in result["ratios"]:
            def g(key: str, e: dict = e) -> str:
                return f"{e[key]:.3f}" if key in e else "-"

            lines.append(
                f"| {e['part']} | {e['size']} | {g('attention_forward_flops_fast_over_full')} "
                f"| {g('attention_forward_backward_flops_fast_over_full')} "
                f"| {g('total_forward_backward_flops_fast_over_full')} "
                f"| {g('forward_time_fast_over_reference')} "
                f"| {g('forward_backward_time_fast_over_reference')} "
                f"| {g('forward_backward_time_fast_over_full')} |"
            )
    if any(e["tokens"][1:] for e in result["scaling"]):
        lines += ["", "Exponent a in metric ~ tokens^a (tokens of the finest level, ~ pixels), "
                  "fitted over all sizes / between the two largest:", "",
                  "| part | mode | fwd time | fwd+bwd time | attn FLOPs f+b | total FLOPs "
                  "f+b | peak memory f+b |", "|---|---|---:|---:|---:|---:|---:|"]
        for e in result["scaling"]:
            def x(key: str, e: dict = e) -> str:
                return " / ".join("-" if e[key][k] is None else f"{e[key][k]:.2f}"
                                  for k in ("fit", "largest_pair"))

            lines.append(
                f"| {e['part']} | {e['mode']} | {x('forward_seconds')} "
                f"| {x('forward_backward_seconds')} | {x('attention_flops_forward_backward')} "
                f"| {x('total_flops_forward_backward')} | {x('peak_memory_forward_backward')} |"
            )
    if result["agreement"]:
        lines += ["", "Reference vs fast Boltzmann path, same generator:", "",
                  "| part | size | keep-mask mismatches | kept fraction | max abs output diff "
                  "| max abs output |", "|---|---:|---:|---:|---:|---:|"]
        for c in result["agreement"]:
            lines.append(
                f"| {c['part']} | {c['size']} | {c['keep_mask_mismatches']} of "
                f"{c['query_token_pairs']} | {c['kept_fraction']:.4f} "
                f"| {c['output_max_abs_diff']:.2e} | {c['output_max_abs']:.2e} |"
            )
    return "\n".join(lines)


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
