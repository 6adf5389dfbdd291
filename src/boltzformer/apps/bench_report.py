"""`boltzformer bench`'s summaries of its measurements: the fast path's ratios to the others,
how each metric grows with the input (the exponent a of metric ~ tokens^a, least squares in
log-log over the sizes, tokens being those of the finest decoder level, ~ pixels), and the
plain-text tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

from boltzformer.apps.bench_measure import FAST, FULL, REFERENCE


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
