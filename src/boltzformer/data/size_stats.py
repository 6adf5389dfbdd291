"""Object size statistics of a written data set (phantoms and converted real data).

A record is one image: {"modality", "site", "masks": [(mask file, target, area fraction,
absent), ...]}; the statistics are per target, areas in % of the image.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def size_statistics(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-target rows: where it occurs, mask count, absent count and area % statistics."""
    areas: dict[str, list[float]] = {}
    absent: dict[str, int] = {}
    where: dict[str, set[str]] = {}
    for rec in records:
        for _, target, area, is_absent in rec["masks"]:
            places = where.setdefault(target, set())  # where it is present
            if is_absent:
                absent[target] = absent.get(target, 0) + 1
            else:
                places.add(f"{rec['modality']} {rec['site']}")
                areas.setdefault(target, [])
                areas[target].append(area * 100)
    rows = []
    for target in sorted(where, key=lambda t: np.mean(areas.get(t, [0.0]))):
        values = np.asarray(areas.get(target, [np.nan]))
        rows.append(
            {
                "target": target,
                "where": ", ".join(sorted(where[target])),
                "masks": int(np.isfinite(values).sum()),
                "absent": absent.get(target, 0),
                "mean_pct": float(np.mean(values)),
                "median_pct": float(np.median(values)),
                "min_pct": float(np.min(values)),
                "max_pct": float(np.max(values)),
                "share_below_1pct": float(np.mean(values < 1.0)),
            }
        )
    return rows


def format_size_table(rows: list[dict[str, Any]]) -> str:
    """The size statistics as a Markdown table (areas in % of the image)."""
    lines = [
        "| target | where | masks | absent | mean % | median % | min % | max % | share < 1 % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['where']} | {r['masks']} | {r['absent']} | "
            f"{r['mean_pct']:.3f} | {r['median_pct']:.3f} | {r['min_pct']:.4f} | "
            f"{r['max_pct']:.2f} | {r['share_below_1pct']:.2f} |"
        )
    return "\n".join(lines)


def write_size_stats(out_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """Save the rows as `size_stats.md` (the table) and `size_stats.csv` in `out_dir`."""
    out = Path(out_dir)
    (out / "size_stats.md").write_text(format_size_table(rows) + "\n", encoding="utf-8")
    if not rows:
        return
    with (out / "size_stats.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
