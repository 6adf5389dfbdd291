"""The demo's recipe for a fixed number of steps: loss per step and test Dice, to compare
two settings (or two source trees) at equal steps.

    python benchmarks/fixed_steps.py run DATA OUT/old --steps 200
    python benchmarks/fixed_steps.py run DATA OUT/pool2 --steps 200 --set loss.layer_pool=2
    python benchmarks/fixed_steps.py compare OUT/old OUT/pool2 --out docs/results

`run` trains the demo's `TRAINING` (apps/demo.py) on DATA (a BiomedParse-layout folder with
train and test splits, e.g. `boltzformer synth`'s) for --steps steps with the data loaded in
the training process, one record per step, then scores the last weights on the test split
(Dice small / large / all) into OUT/result.json. `compare` tabulates the runs every 25 steps
(means over 25 steps of the training loss and of its final-output term, `final_loss`, which
no deep-supervision setting changes) and draws fixed_steps.png (running means over 10 steps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from boltzformer.apps.demo import TRAINING, WITHOUT_EXISTENCE, headline
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import evaluate
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.train.trainer import train

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _run(args: argparse.Namespace) -> None:
    cfg = TRAINING.with_overrides({
        **WITHOUT_EXISTENCE,  # as the committed tables were measured
        "data.root": str(args.data), "data.workers": 0, "train.max_minutes": None,
        "train.max_steps": args.steps, "train.log_every": 1, "train.snapshot_minutes": None,
        "train.checkpoint_every": 10 * args.steps}).with_overrides(args.set)
    result = train(cfg, args.out / "run", progress=True)
    model = BoltzFormer.from_pretrained(result.last_checkpoint)
    test = BiomedParseDataset(args.data, "test", image_size=model.config.image_size,
                              train=False)
    metrics = evaluate(model, test, seed=cfg.train.seed, batch_size=32, progress=False).metrics
    records = [json.loads(line) for line in
               (args.out / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [{k: r.get(k) for k in ("step", "loss", "final_loss", "minutes")}
             for r in records if r["kind"] == "train"]  # final_loss: None before it was logged
    strata = metrics["size_strata"]["weighted"]
    out = {"overrides": args.set, "steps": steps, "headline": headline(metrics),
           "dice": {"small": strata["small"]["dice_mean"], "large": strata["large"]["dice_mean"],
                    "all": metrics["overall"]["dice_mean"]}}
    (args.out / "result.json").write_text(json.dumps(out, indent=1))
    print(out["headline"])


def _compare(args: argparse.Namespace) -> None:
    runs = {p.name: json.loads((p / "result.json").read_text()) for p in args.runs}
    names = list(runs)
    by_step = {n: {s["step"]: s for s in r["steps"]} for n, r in runs.items()}
    last = min(max(s) for s in by_step.values())

    def mean(name: str, key: str, first: int, end: int) -> str:
        """The mean of `key` over steps first..end of run `name`; "–" where not logged."""
        values = [by_step[name][i][key] for i in range(first, end + 1)]
        return "–" if None in values else f"{sum(values) / len(values):.4f}"

    lines = ["| steps | " + " | ".join(f"{n} loss | {n} final_loss" for n in names) + " |",
             "|---|" + "---:|---:|" * len(names)]
    for end in range(25, last + 1, 25):
        cells = [f"{mean(n, 'loss', end - 24, end)} | {mean(n, 'final_loss', end - 24, end)}"
                 for n in names]
        lines.append(f"| {end - 24}-{end} | " + " | ".join(cells) + " |")
    lines += ["", "| run | small | large | all | mean final_loss, last 50 steps |",
              "|---|---:|---:|---:|---:|"]
    for n, r in runs.items():
        d = r["dice"]
        lines.append(f"| {n} | {100 * d['small']:.1f} | {100 * d['large']:.1f} | "
                     f"{100 * d['all']:.1f} | {mean(n, 'final_loss', last - 49, last)} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fixed_steps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(runs, args.out / "fixed_steps.png")


def _smooth(values: list[float], width: int = 10) -> list[float]:
    """Running mean over the last `width` values."""
    return [sum(values[max(0, i - width + 1) : i + 1]) / (i + 1 - max(0, i - width + 1))
            for i in range(len(values))]


def _plot(runs: dict[str, dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=110)
    FigureCanvasAgg(fig)
    for i, key in enumerate(("loss", "final_loss")):
        ax = fig.add_subplot(1, 2, i + 1)
        for color, (name, r) in zip(PALETTE, runs.items(), strict=False):
            points = [(s["step"], s[key]) for s in r["steps"] if s[key] is not None]
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, alpha=0.2, linewidth=0.8, color=color)
            ax.plot(steps, _smooth(list(values)), color=color, label=name)
        ax.set_xlabel("step")
        ax.set_title("training loss" if key == "loss"
                     else "its final-output term (Dice + BCE)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train for --steps steps and score the test split")
    run.add_argument("data", type=Path)
    run.add_argument("out", type=Path)
    run.add_argument("--steps", type=int, default=200)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a TrainConfig override, e.g. loss.layer_pool=2 (repeatable)")
    compare = sub.add_parser("compare", help="tabulate and plot runs")
    compare.add_argument("runs", type=Path, nargs="+")
    compare.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _run(args) if args.command == "run" else _compare(args)


if __name__ == "__main__":
    main()
