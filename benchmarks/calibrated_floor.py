"""The size floor as `boltzformer demo` now chooses it, applied to `boltzformer demo --expert`
folders: for BoltzFormer and the U-Net expert of each folder, the floor is calibrated on the
run's validation items (`boltzformer.evaluation.calibrate`, as `boltzformer calibrate` and the
demo do),
the test split is evaluated with it into DEMO/floor/ and DEMO/expert/floor/ (report.md,
metrics.json, per_sample.csv; calibration.md and validation.csv: the table and the rows the
fraction was chosen on), and one row per model and run compares it with
the folder's own evaluation without a floor (DEMO/metrics.json, DEMO/expert/metrics.json; a
demo from before the floor, or run with --no-size-floor); with several folders, the means.
With --min-scores, each model with its floor is also scored with each score gate
(`evaluate(min_score=S)`: an answer whose mask score is below S is empty) into
DEMO/gate_S/ and DEMO/expert/gate_S/, in a second table.

    python benchmarks/calibrated_floor.py DEMO [DEMO ...] [--data DIR] [--reuse]
        [--min-scores 0.8,0.85,0.9]

--reuse reads a folder's floor/metrics.json (and gate_S/metrics.json) where an earlier call
wrote it instead of calibrating and evaluating again.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from boltzformer.baselines import UNetExpert
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.calibrate import calibrate_gates, format_table, with_calibration
from boltzformer.evaluation.evaluate import CSV_COLUMNS, evaluate, write_report
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.train.config import TrainConfig
from boltzformer.train.run_dir import CONFIG_NAME, run_checkpoint

KEYS = ("fp", "small", "tiny", "large", "all", "prompt")


def figures(metrics: dict) -> dict[str, float]:
    """Absent false-positive rate, Dice strata and prompt accuracy, in %."""
    w = metrics["size_strata"]["weighted"]
    return {"fp": 100 * metrics["absent"]["false_positive_rate"],
            "small": 100 * w["small"]["dice_mean"], "tiny": 100 * w["tiny"]["dice_mean"],
            "large": 100 * w["large"]["dice_mean"], "all": 100 * metrics["overall"]["dice_mean"],
            "prompt": 100 * metrics["grounding"]["prompt_accuracy"]}


def floored(model, cfg: TrainConfig, test: BiomedParseDataset, out: Path
            ) -> tuple[float, dict[str, float]]:
    """Calibrate `model` on the run's validation items, evaluate the test split with the
    floor into `out` -> (the fraction chosen, its figures)."""
    cal = calibrate_gates(model, cfg, progress=False)
    with_calibration(model, cal.floor, cal.existence_threshold)
    result = evaluate(model, test, seed=cfg.train.seed, progress=False)
    write_report(result, out)
    (out / "calibration.md").write_text(format_table(cal))
    with (out / "validation.csv").open("w", newline="") as f:  # the rows it was chosen on
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in CSV_COLUMNS} for row in cal.rows)
    return cal.floor.fraction, figures(result.metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demos", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, help="the demos' data, if it has moved")
    parser.add_argument("--reuse", action="store_true",
                        help="read floor/metrics.json where it exists")
    parser.add_argument("--min-scores", default="", metavar="S,S,...",
                        help="score gates to score each model with, after its floor")
    args = parser.parse_args()
    gates = [float(v) for v in args.min_scores.split(",") if v.strip()]
    gated: dict[tuple[str, float], list[dict]] = {}
    gate_lines: list[str] = []
    print("| model, run | fraction | absent FP | small | tiny | large | all | prompt acc. |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows: dict[str, list[tuple[dict, dict]]] = {"BoltzFormer": [], "U-Net expert": []}
    for demo in args.demos:
        cfg = TrainConfig.from_yaml(demo / "run" / CONFIG_NAME)
        if args.data is not None:
            cfg = cfg.with_overrides({"data.root": str(args.data)})
        size = cfg.model.resolve().image_size
        test = BiomedParseDataset(str(cfg.data.root), "test", image_size=size, train=False)
        models = {
            "BoltzFormer": (BoltzFormer.from_pretrained(run_checkpoint(demo / "run")), demo),
            "U-Net expert": (UNetExpert.from_pretrained(demo / "expert" / "model"),
                             demo / "expert"),
        }
        for name, (model, folder) in models.items():
            before = figures(json.loads((folder / "metrics.json").read_text()))
            done = folder / "floor" / "metrics.json"
            todo = [g for g in gates if not (args.reuse and (folder / f"gate_{g:g}" /
                                                              "metrics.json").is_file())]
            if args.reuse and done.is_file() and not todo:
                metrics = json.loads(done.read_text())
                fraction, after = metrics["size_floor_fraction"], figures(metrics)
            else:
                fraction, after = floored(model, cfg, test, folder / "floor")
            rows[name].append((before, after))
            cells = " | ".join(f"{before[k]:.1f} → {after[k]:.1f}" for k in KEYS)
            print(f"| {name}, {demo.name} | {fraction:g} | {cells} |", flush=True)
            for gate in gates:  # the model has its floor (floored) unless all were reused
                out = folder / f"gate_{gate:g}"
                if gate in todo:
                    result = evaluate(model, test, seed=cfg.train.seed, progress=False,
                                      min_score=gate)
                    write_report(result, out)
                figs = figures(json.loads((out / "metrics.json").read_text()))
                gated.setdefault((name, gate), []).append(figs)
                cells = " | ".join(f"{figs[k]:.1f}" for k in KEYS)
                gate_lines.append(f"| {name}, {demo.name} | {gate:g} | {cells} |")
    if len(args.demos) > 1:
        for name, pairs in rows.items():
            cells = " | ".join(f"{statistics.mean(b[k] for b, _ in pairs):.1f} → "
                               f"{statistics.mean(a[k] for _, a in pairs):.1f}" for k in KEYS)
            print(f"| **{name}, mean of {len(pairs)}** | | {cells} |")
    if gates:
        print("\nWith the floor and a score gate (min score S):\n")
        print("| model, run | min score | absent FP | small | tiny | large | all | prompt acc. |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(gate_lines))
        if len(args.demos) > 1:
            for (name, gate), runs in gated.items():
                cells = " | ".join(f"{statistics.mean(r[k] for r in runs):.1f}" for k in KEYS)
                print(f"| **{name}, mean of {len(runs)}** | {gate:g} | {cells} |")


if __name__ == "__main__":
    main()
