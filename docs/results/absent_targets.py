"""The table of absent_targets.md from demo output folders (metrics.json, per_sample.csv).

    python docs/results/absent_targets.py RUN [RUN ...]

A foreign prompt names a target of the other site (FOREIGN_CANDIDATES), e.g. a lung on an
abdomen slice; the others left out a target of the image's own site.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

from boltzformer.data.phantoms import FOREIGN_CANDIDATES


def row(run: Path) -> str:
    """One Markdown table row for the demo output folder `run`."""
    m = json.loads((run / "metrics.json").read_text())
    absent, strata = m["absent"], m["size_strata"]["weighted"]
    exist = absent["existence"] or {}
    with (run / "per_sample.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["size"] == "absent"]
    foreign = [r for r in rows if r["target"] in FOREIGN_CANDIDATES[r["site"]]]
    fp = sum(r["false_positive"] == "True" for r in foreign)
    steps = re.search(r"for (\d+) steps", (run / "report.md").read_text())

    def pct(v: float) -> str:
        return "–" if v != v else f"{100 * v:.1f}"

    nan = float("nan")
    auroc = exist.get("auroc", nan)

    return (f"| {run.name} | {steps.group(1) if steps else '?'} | "
            f"{pct(absent['false_positive_rate'])} % ({absent['false_positive']}/{absent['n']}) | "
            f"{pct(fp / max(1, len(foreign)))} % ({fp}/{len(foreign)}) | "
            f"{100 * absent['mean_pred_area']:.2f} % | "
            f"{'–' if auroc != auroc else f'{auroc:.3f}'} | {pct(exist.get('accuracy', nan))} | "
            f"{pct(strata['small']['dice_mean'])} | {pct(strata['large']['dice_mean'])} | "
            f"{pct(m['overall']['dice_mean'])} | {pct(m['grounding']['prompt_accuracy'])} |")


if __name__ == "__main__":
    print("| run | steps | absent FP | foreign FP | mean area (absent) | existence AUROC | "
          "existence acc. | small | large | all | prompt acc. |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in sys.argv[1:]:
        print(row(Path(name)))
