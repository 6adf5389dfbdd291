"""Paper Table 3 on the tiny stratum (issue 24 item 5): full, masked (0.5 threshold) and
Boltzmann attention at the demo's recipe, equal minutes, on phantoms with absent targets.

    boltzformer synth DATA --images 1200 --size 256 --seed 0 \\
        --absent-fraction 0.5 --foreign-fraction 0.5 --workers 1
    # one arm: the demo's recipe (configs/demo.yaml) for a fixed number of steps, then its
    # last weights on the test split; S in 0 1 2, two arms at a time, one thread each
    python benchmarks/attention_tiny.py run DATA RUNS boltzmann --seed S --steps 300
    python benchmarks/attention_tiny.py run DATA RUNS full      --seed S --steps 291
    python benchmarks/attention_tiny.py run DATA RUNS masked    --seed S --steps 270
    python benchmarks/attention_tiny.py table RUNS            # the Markdown table

Equal minutes as equal time: the step counts are 300 × the measured ratio of each mode's
training step to Boltzmann's (`boltzformer throughput --preset tiny --image-size 256
--batch-size 4 --prompts-per-image 8 --steps 8 --warmup 2 --threads 1 --compare
model.attention=full --compare model.attention=masked`: 1.46, 1.50, 1.63 s per step), so
the budget is reproducible to the bit whatever else the machine runs. `--set KEY=VALUE`
adds a TrainConfig override to an arm (e.g. `--set data.negatives=2`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from boltzformer.apps.demo import WITHOUT_EXISTENCE
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import evaluate, write_report
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.train.config import TrainConfig, parse_overrides
from boltzformer.train.trainer import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
MODES = ("full", "masked", "boltzmann")
# the targets under 0.1 % of a 256² phantom (median area 0.035-0.052 %)
TINY_TARGETS = ("nodule", "left adrenal gland", "right adrenal gland", "esophagus")


def run(data: Path, runs: Path, mode: str, seed: int, steps: int, extra: list[str]) -> Path:
    """Train one arm into RUNS/<mode>-s<seed>/run and write its test report beside it."""
    out = runs / f"{mode}-s{seed}"
    cfg = TrainConfig.from_yaml(CONFIG).with_overrides({
        **WITHOUT_EXISTENCE,  # the recipe the table was measured with; --set to change it
        "data.root": str(data), "data.workers": 0, "model.attention": mode,
        "train.amp": "none", "train.channels_last": False,  # float32, as the table was measured
        "train.seed": seed, "train.max_minutes": None, "train.max_steps": steps,
        "train.snapshot_minutes": None, **parse_overrides(extra)})
    started = time.monotonic()
    result = train(cfg, out / "run", progress=False)
    seconds = time.monotonic() - started
    model = BoltzFormer.from_pretrained(result.last_checkpoint)
    test = BiomedParseDataset(data, "test", image_size=cfg.model.resolve().image_size)
    write_report(evaluate(model, test, seed=seed, progress=False), out)
    (out / "arm.json").write_text(json.dumps({"mode": mode, "seed": seed, "steps": steps,
                                              "overrides": extra, "train_seconds": seconds}))
    return out


def _cell(values: list[float], scale: float = 100, digits: int = 1) -> str:
    """Mean ± sd over seeds of `values` times `scale` (a share in % by default); "–" when
    none is a number (a model without the existence head has no AUROC)."""
    values = [scale * v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    mean = f"{float(np.mean(values)):.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ± {np.std(values, ddof=1):.{digits}f}"


def table(runs: Path) -> str:
    """Mean ± sd over seeds per mode: tiny, small, large Dice; each tiny target; absent
    prompts' false-positive rate, mean predicted area and existence AUROC; prompt
    accuracy."""
    lines = ["| attention | seeds | steps | tiny (< 0.1 %) | small (< 1 %) | large | "
             + " | ".join(TINY_TARGETS) + " | absent FP | absent area | existence AUROC | "
             "prompt acc. |",
             "|---|---:|---:|" + "---:|" * (7 + len(TINY_TARGETS))]
    for mode in MODES:
        arms = sorted(runs.glob(f"{mode}-s*/metrics.json"))
        if not arms:
            continue
        ms = [json.loads(p.read_text()) for p in arms]
        steps = {json.loads((p.parent / "arm.json").read_text())["steps"] for p in arms}
        strata = [m["size_strata"]["weighted"] for m in ms]
        per_target = [[m["by_target"].get(t, {}).get("dice_mean", math.nan) for m in ms]
                      for t in TINY_TARGETS]
        absent = [m["absent"] for m in ms]
        lines.append(
            f"| {mode} | {len(ms)} | {'/'.join(map(str, sorted(steps)))} | "
            + " | ".join(_cell([s[k]["dice_mean"] for s in strata])
                         for k in ("tiny", "small", "large")) + " | "
            + " | ".join(_cell(v) for v in per_target) + " | "
            + f"{_cell([a['false_positive_rate'] for a in absent])} % | "
            + f"{_cell([a['mean_pred_area'] for a in absent])} % | "
            + _cell([(a.get("existence") or {}).get("auroc", math.nan) for a in absent], 1, 3)
            + " | "
            + f"{_cell([m['grounding']['prompt_accuracy'] for m in ms])} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and test one arm")
    r.add_argument("data", type=Path)
    r.add_argument("runs", type=Path)
    r.add_argument("mode", choices=MODES)
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig override for the arm (repeatable)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--steps", type=int, required=True)
    t = sub.add_parser("table", help="the Markdown table of every arm in RUNS")
    t.add_argument("runs", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        print(run(args.data, args.runs, args.mode, args.seed, args.steps, args.overrides))
    else:
        print(table(args.runs))


if __name__ == "__main__":
    main()
