"""The demo's learning curve: test Dice (small / large / all) against training minutes.

`boltzformer demo` keeps the weights every 2 minutes in OUT/run/snapshots/; this scores each
snapshot and the final model on the demo's test split with the same evaluator and seed, and
draws the curve.

    python docs/results/demo_curve.py demo_output --out docs/results/demo_curve

writes demo_curve.png and demo_curve.md (the table) under --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from boltzformer.data import BiomedParseDataset
from boltzformer.evaluate import evaluate
from boltzformer.modeling.boltzformer import BoltzFormer


def _points(demo: Path, seed: int) -> list[dict]:
    run = demo / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    end = next(r for r in records if r["kind"] == "end")
    last_minutes = max(r.get("minutes", 0) for r in records if r["kind"] == "train")
    checkpoints = [(float(p.name.removesuffix("min")), p)
                   for p in sorted((run / "snapshots").glob("*min"))]
    checkpoints.append((last_minutes, run / "last"))
    points = []
    for minutes, path in checkpoints:
        model = BoltzFormer.from_pretrained(path)
        test = BiomedParseDataset(demo / "data", "test", image_size=model.config.image_size,
                                  train=False)
        m = evaluate(model, test, seed=seed, batch_size=32, progress=False).metrics
        strata = m["size_strata"]["weighted"]
        point = {"minutes": minutes, "small": 100 * strata["small"]["dice_mean"],
                 "large": 100 * strata["large"]["dice_mean"],
                 "all": 100 * m["overall"]["dice_mean"],
                 "failure_rate": 100 * m["overall"]["failure_rate"]}
        print(f"{minutes:5.1f} min: small {point['small']:.1f}, large {point['large']:.1f}, "
              f"all {point['all']:.1f}, failure rate {point['failure_rate']:.1f} %", flush=True)
        points.append(point)
    points[-1]["steps"] = end["step"]
    return points


def _plot(points: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = [p["minutes"] for p in points]
    for key, color in (("small", "#d62728"), ("large", "#1f77b4"), ("all", "black")):
        ax.plot(x, [p[key] for p in points], "o-", color=color, label=f"{key} objects"
                if key != "all" else "all")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("test Dice (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("boltzformer demo: test Dice against training time", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", type=Path, help="the demo's output folder")
    parser.add_argument("--out", type=Path, default=Path("docs/results/demo_curve"),
                        help="path prefix of the figure and table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    points = _points(args.demo, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _plot(points, args.out.with_suffix(".png"))
    lines = ["| training minutes | small Dice | large Dice | all Dice | failure rate |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {p['minutes']:.1f} | {p['small']:.1f} | {p['large']:.1f} | {p['all']:.1f} | "
              f"{p['failure_rate']:.1f} % |" for p in points]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
