"""The tables of absent_targets.md from run folders: a demo's output folder (metrics.json,
per_sample.csv, report.md) or a `boltzformer train` run folder with its test report in
eval/ (`boltzformer evaluate --out RUN/eval`).

    python docs/results/absent_targets.py RUN [RUN ...]
    python docs/results/absent_targets.py --gate RUN    # a stricter existence threshold
    python docs/results/absent_targets.py --per-target RUN [RUN ...]  # own-site absences

A foreign prompt names a target of the other site (FOREIGN_CANDIDATES), e.g. a lung on an
abdomen slice; an own-site one a target of the image's site that it left out (a nodule, an
adrenal gland).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

from boltzformer.data.phantoms import FOREIGN_CANDIDATES


def _steps(run: Path) -> str:
    """The training steps: from a demo's report, else the run's last metrics.jsonl record."""
    report = run / "report.md"
    found = re.search(r"for (\d+) steps", report.read_text()) if report.is_file() else None
    if found:
        return found.group(1)
    records = (run / "metrics.jsonl").read_text().splitlines() if (
        run / "metrics.jsonl").is_file() else []
    return str(json.loads(records[-1]).get("step", "?")) if records else "?"


def row(run: Path) -> str:
    """One Markdown table row for the run folder `run`."""
    scores = run if (run / "metrics.json").is_file() else run / "eval"
    m = json.loads((scores / "metrics.json").read_text())
    absent, strata = m["absent"], m["size_strata"]["weighted"]
    exist = absent["existence"] or {}
    with (scores / "per_sample.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["size"] == "absent"]
    foreign = [r for r in rows if r["target"] in FOREIGN_CANDIDATES[r["site"]]]
    own = [r for r in rows if r["target"] not in FOREIGN_CANDIDATES[r["site"]]]

    def pct(v: float) -> str:
        return "–" if v != v else f"{100 * v:.1f}"

    def fp(items: list[dict]) -> str:
        n = sum(r["false_positive"] == "True" for r in items)
        return f"{pct(n / max(1, len(items)))} % ({n}/{len(items)})"

    nan = float("nan")
    auroc = exist.get("auroc", nan)
    return (f"| {run.name} | {_steps(run)} | "
            f"{pct(absent['false_positive_rate'])} % | {fp(foreign)} | {fp(own)} | "
            f"{100 * absent['mean_pred_area']:.2f} % | "
            f"{'–' if auroc != auroc else f'{auroc:.3f}'} | {pct(exist.get('accuracy', nan))} | "
            f"{pct(strata['tiny']['dice_mean'])} | {pct(strata['small']['dice_mean'])} | "
            f"{pct(strata['large']['dice_mean'])} | "
            f"{pct(m['overall']['dice_mean'])} | {pct(m['grounding']['prompt_accuracy'])} |")


def gate(run: Path, thresholds: tuple[float, ...] = (0.5, 0.8, 0.85, 0.9, 0.95)) -> None:
    """What a stricter existence threshold would give, from `per_sample.csv`'s existence
    column: a present target below it loses its Dice, an absent one its false positive."""
    scores = run if (run / "per_sample.csv").is_file() else run / "eval"
    with (scores / "per_sample.csv").open() as f:
        rows = list(csv.DictReader(f))
    absent = [r for r in rows if r["size"] == "absent"]
    present = [r for r in rows if r["size"] != "absent"]
    for t in thresholds:
        fp = sum(float(r["existence"]) >= t and r["false_positive"] == "True" for r in absent)
        kept = [float(r["dice"]) if float(r["existence"]) >= t else 0.0 for r in present]
        small = [d for d, r in zip(kept, present) if r["size"] == "small"]
        print(f"threshold {t}: absent FP {100 * fp / len(absent):.1f} %, small Dice "
              f"{100 * sum(small) / len(small):.1f}, all {100 * sum(kept) / len(kept):.1f}")


def per_target(runs: list[Path]) -> None:
    """Own-site absent prompts per target: how many, how many answered with a mask (summed
    over the runs), and the mean existence probability on them against that on the same
    target's present prompts (equal: the head answers the target's base rate, not the
    image)."""
    print("| site | target | absent prompts | false positives | existence, absent | "
          "existence, present |")
    print("|---|---|---:|---:|---:|---:|")
    absent: dict[tuple[str, str], list[dict]] = {}
    present: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        scores = run if (run / "per_sample.csv").is_file() else run / "eval"
        with (scores / "per_sample.csv").open() as f:
            for r in csv.DictReader(f):
                key = (r["site"], r["target"])
                if r["size"] == "absent":
                    absent.setdefault(key, []).append(r)
                else:
                    present.setdefault(key, []).append(float(r["existence"]))
    for (site, target), rows in sorted(absent.items()):
        if target in FOREIGN_CANDIDATES[site]:
            continue
        fp = sum(r["false_positive"] == "True" for r in rows)
        seen = present.get((site, target), [])
        on_present = f"{sum(seen) / len(seen):.2f}" if seen else "–"
        print(f"| {site} | {target} | {len(rows)} | {fp} | "
              f"{sum(float(r['existence']) for r in rows) / len(rows):.2f} | {on_present} |")


if __name__ == "__main__":
    if sys.argv[1] == "--gate":
        gate(Path(sys.argv[2]))
        sys.exit()
    if sys.argv[1] == "--per-target":
        per_target([Path(name) for name in sys.argv[2:]])
        sys.exit()
    print("| run | steps | absent FP | foreign FP | own-site FP | mean area (absent) | "
          "existence AUROC | existence acc. | tiny | small | large | all | prompt acc. |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in sys.argv[1:]:
        print(row(Path(name)))
