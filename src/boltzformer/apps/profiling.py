"""Where a step's time goes: `torch.profiler` CPU time split by model part, forward and backward.

Parts are profiler ranges: each module of `model_parts` is wrapped in a range by forward
hooks, and the model marks a few pieces of code itself (`PART` ranges: the decoder's sampling,
its mask logits, the cross-attention's folding, index and gathered attention, the training
step's loss and optimiser). An operator's self time goes to the innermost chain of part ranges
around it; a backward operator's to the part whose forward operator created its autograd node
(matched by the profiler's sequence numbers), so "backward" is split by part too. Time outside
every part is "other" (Python glue, the autograd engine's bookkeeping).

Each part's time is also split by whether its operators are ones `torch.utils.flop_counter`
counts (matrix products, convolutions, attention kernels: `COUNTED_OPS`) or not (gathers,
scatters, copies, elementwise work, sampling): FLOPs see only the first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from boltzformer.modeling.attention import (
    PART,
    CrossAttentionLayer,
    FFNLayer,
    SampledCrossAttention,
    SelfAttentionLayer,
)
from boltzformer.modeling.mask_decoder import BoltzFormerDecoder, MaskHead

BACKWARD_PREFIX = "autograd::engine::evaluate_function: "
OTHER = "other"
# Gradients written into leaves (weights, inputs): no forward op created their node.
LEAVES = "gradient accumulation (leaves)"
# Operators whose FLOPs `torch.utils.flop_counter` counts (with bench_measure's CPU attention
# formulas), by profiler name; any name with "convolution" counts too.
COUNTED_OPS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
})


def is_counted(name: str) -> bool:
    """Does the FLOP counter count the operator called `name` (a profiler event name)?"""
    return name in COUNTED_OPS or "convolution" in name


@dataclass(frozen=True)
class Profile:
    """Mean self CPU seconds of a step by (part, phase): in all (`seconds`) and in operators
    the FLOP counter counts (`counted`)."""

    seconds: dict[tuple[str, str], float]
    counted: dict[tuple[str, str], float]


def model_parts(model: nn.Module) -> dict[nn.Module, str]:
    """The modules of a BoltzFormer (or its decoder alone) to time, by part name."""
    parts: dict[nn.Module, str] = {}
    for name in ("backbone", "pixel_decoder", "fine_semantic", "text_encoder", "pigma"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            parts[module] = name.replace("_", " ")
    for module in model.modules():
        if isinstance(module, BoltzFormerDecoder):
            parts[module] = "decoder"
        elif isinstance(module, CrossAttentionLayer):
            parts[module] = "cross-attention"
        elif isinstance(module, SelfAttentionLayer):
            parts[module] = "self-attention"
        elif isinstance(module, FFNLayer):
            parts[module] = "FFN"
        elif isinstance(module, MaskHead):
            parts[module] = "mask head MLP"
        elif isinstance(module, SampledCrossAttention):
            for proj in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
                parts[proj] = "projections"
    return parts


@contextmanager
def labelled(parts: Mapping[nn.Module, str]) -> Iterator[None]:
    """Wrap each module's forward in a profiler range `PART + name`."""
    stack: list[Any] = []

    def enter(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            stack.append(record_function(PART + name))
            stack[-1].__enter__()
        return hook

    def leave(*_: Any) -> None:
        stack.pop().__exit__(None, None, None)

    handles = []
    for module, name in parts.items():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _chain(event: Any) -> tuple[str, ...]:
    """The part ranges around `event`, outermost first (itself included)."""
    names = []
    while event is not None:
        if event.name.startswith(PART):
            names.append(event.name[len(PART):])
        event = event.cpu_parent
    return tuple(reversed(names))


def _backward_node(event: Any) -> Any:
    """The autograd node evaluation `event` runs in, or None in the forward pass."""
    while event is not None:
        if event.name.startswith(BACKWARD_PREFIX):
            return event
        event = event.cpu_parent
    return None


def attribute(events: list[Any], counted_only: bool = False) -> dict[tuple[str, str], float]:
    """Self CPU seconds of `events` (profiler FunctionEvents) by (part, phase); with
    `counted_only`, of the operators the FLOP counter counts only.

    A part is its chain of ranges joined by " > " (e.g. "decoder > cross-attention >
    projections"); phase is "forward" or "backward".
    """
    events = sorted(events, key=lambda e: e.time_range.start)
    creator: dict[int, tuple[str, ...]] = {}  # sequence number -> parts of the forward op
    for e in events:  # the last op to start with a sequence number is the one that used it
        if e.sequence_nr >= 0 and _backward_node(e) is None:
            creator[e.sequence_nr] = _chain(e)
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        if counted_only and not is_counted(e.name):
            continue
        node = _backward_node(e)
        if node is None:
            chain, phase = _chain(e), "forward"
        elif "AccumulateGrad" in node.name:
            chain, phase = (LEAVES,), "backward"
        else:
            chain, phase = creator.get(node.sequence_nr, ()), "backward"
        seconds[(" > ".join(chain) or OTHER, phase)] += e.self_cpu_time_total / 1e6
    return dict(seconds)


def profile_calls(step: Callable[[], object], parts: Mapping[nn.Module, str], repeats: int
                  ) -> Profile:
    """Mean self CPU seconds per call of `step` by (part, phase), over `repeats` calls."""
    with labelled(parts), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    events = list(prof.events())
    return Profile(*({key: s / repeats for key, s in attribute(events, only).items()}
                     for only in (False, True)))


def format_profile(result: Profile, title: str) -> str:
    """A Markdown table: ms forward, backward and in all per part, its share of the step and
    the share of its time in operators the FLOP counter counts; parts in order of time."""
    seconds = result.seconds
    total = sum(seconds.values())

    def part_total(table: Mapping[tuple[str, str], float], part: str) -> float:
        return sum(s for (q, _), s in table.items() if q == part)

    parts = sorted({p for p, _ in seconds}, key=lambda p: -part_total(seconds, p))
    lines = [title, "", "| part | forward ms | backward ms | total ms | share | in FLOP-counted "
             "ops |", "|---|---:|---:|---:|---:|---:|"]
    for p in parts:
        fwd, bwd = seconds.get((p, "forward"), 0.0), seconds.get((p, "backward"), 0.0)
        lines.append(f"| {p} | {fwd * 1e3:.0f} | {bwd * 1e3:.0f} | {(fwd + bwd) * 1e3:.0f} | "
                     f"{(fwd + bwd) / total:.1%} | "
                     f"{part_total(result.counted, p) / max(fwd + bwd, 1e-12):.0%} |")
    fwd = sum(s for (_, ph), s in seconds.items() if ph == "forward")
    counted = sum(result.counted.values())
    lines.append(f"| **all** | {fwd * 1e3:.0f} | {(total - fwd) * 1e3:.0f} | "
                 f"{total * 1e3:.0f} | 100% | {counted / total:.0%} |")
    return "\n".join(lines)
