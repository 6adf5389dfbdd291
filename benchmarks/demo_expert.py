"""The tables of demo.md's side-by-side runs from `boltzformer demo --expert` output folders:
one row per model and run, the mean ± sd over the runs (absent FP: absent prompts answered with
a mask), and Dice per target (runs in order).

    python benchmarks/demo_expert.py demo_0 demo_1 demo_2
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path


def scores(folder: Path, steps: int) -> dict:
    """A model's figures from its evaluation folder (metrics.json), in %."""
    m = json.loads((folder / "metrics.json").read_text())
    strata = m["size_strata"]["weighted"]
    return {"steps": steps, "small": 100 * strata["small"]["dice_mean"],
            "tiny": 100 * strata["tiny"]["dice_mean"], "large": 100 * strata["large"]["dice_mean"],
            "all": 100 * m["overall"]["dice_mean"], "failures": 100 * strata["all"]["failure_rate"],
            "prompt": 100 * m["grounding"]["prompt_accuracy"],
            "absent": 100 * (m.get("absent", {}).get("false_positive_rate") or 0.0),
            "targets": {t: 100 * v["dice_mean"] for t, v in m["by_target"].items()}}


def runs(demo: Path) -> dict[str, dict]:
    """BoltzFormer's and the U-Net's figures of one demo folder."""
    steps = int(re.search(r"for (\d+) steps", (demo / "report.md").read_text()).group(1))
    records = [json.loads(line) for line in
               (demo / "expert" / "model" / "metrics.jsonl").read_text().splitlines()]
    unet_steps = next(r["steps"] for r in records if r["kind"] == "end")
    return {"BoltzFormer": scores(demo, steps), "U-Net": scores(demo / "expert", unet_steps)}


def main(folders: list[Path]) -> None:
    table = {name: [] for name in ("BoltzFormer", "U-Net")}
    keys = ("small", "tiny", "large", "all", "failures", "prompt", "absent")
    print("| model, run | steps | small | tiny | large | all | failures | prompt accuracy "
          "| absent FP |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for folder in folders:
        for name, r in runs(folder).items():
            table[name].append(r)
            print(f"| {name}, {folder.name} | {r['steps']} | "
                  + " | ".join(f"{r[k]:.1f}" for k in keys[:4]) + " | "
                  + " | ".join(f"{r[k]:.1f} %" for k in keys[4:]) + " |")
    for name, rs in table.items():
        def cell(k: str, rs: list = rs) -> str:
            values = [r[k] for r in rs]
            sd = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.1f}{sd}"
        print(f"| **{name}, mean ± sd** | {'/'.join(str(r['steps']) for r in rs)} | "
              + " | ".join(cell(k) for k in keys[:4]) + " | "
              + " | ".join(f"{cell(k)} %" for k in keys[4:]) + " |")
    print("\n| target | BoltzFormer | U-Net expert |\n|---|---:|---:|")
    for target in sorted(table["BoltzFormer"][0]["targets"]):
        cells = [" / ".join(f"{r['targets'][target]:.1f}" for r in table[n]) for n in table]
        print(f"| {target} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
