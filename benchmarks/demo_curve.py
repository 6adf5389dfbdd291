"""The demo's learning curve: test Dice and absent-prompt figures against training minutes.

`boltzformer demo` keeps the weights every 2 minutes in OUT/run/snapshots/; this scores each
snapshot and the final model on the demo's test split with the same evaluator and seed, and
draws the curve. It scores in batches of 32 and the final weights (last/); the demo's report
scores in batches of 8 (its sampling's draws differ) and its best/ checkpoint, so the last
point can differ from the report by a few tenths.

    python benchmarks/demo_curve.py demo_output --out docs/results/demo_curve
    python benchmarks/demo_curve.py RUN --data DATA --every 2 --out OUT \\
        --targets nodule "right adrenal gland" "left adrenal gland" esophagus

writes OUT.png and OUT.md (the table). Columns: Dice on the tiny (< 0.1 % of the image),
small and large strata and overall, the failure rate, then, where the test split has absent
prompts, the share painted (absent FP) and the own-site share (a target of the image's site
left out of it, e.g. a missing adrenal gland; foreign ones are a target of the other site),
and Dice per `--targets`. `--every K` scores every K-th snapshot (and always the last).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from boltzformer.data import BiomedParseDataset
from boltzformer.data.phantoms import FOREIGN_CANDIDATES
from boltzformer.evaluation.evaluate import evaluate
from boltzformer.modeling.boltzformer import BoltzFormer


def _checkpoints(run: Path, every: int) -> list[tuple[float, Path]]:
    """(minutes, weights) of every `every`-th snapshot and of the final model: the newest
    snapshot when it was kept at the end of training, else last/."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_minutes = max(r.get("minutes", 0) for r in records if r["kind"] == "train")
    snapshots = [(float(p.name.removesuffix("min")), p)
                 for p in sorted((run / "snapshots").glob("*min"))]
    chosen = snapshots[every - 1 :: every]
    if snapshots and snapshots[-1][0] >= last_minutes:  # kept after the last logged step
        return chosen if chosen[-1:] == snapshots[-1:] else [*chosen, snapshots[-1]]
    return [*chosen, (last_minutes, run / "last")]


def _own_site_fp(samples: list[dict[str, Any]]) -> float:
    """The share (%) of own-site absent prompts painted (NaN if none): the evaluator reports
    absent prompts as one; the own-site ones are those not foreign to the image's site."""
    own = [s for s in samples if s["size"] == "absent"
           and s["target"] not in FOREIGN_CANDIDATES.get(s["site"], ())]
    return 100 * sum(bool(s["false_positive"]) for s in own) / len(own) if own else math.nan


def _points(demo: Path, data: Path, seed: int, every: int, targets: list[str]) -> list[dict]:
    run = demo / "run"
    points, test = [], None
    for minutes, path in _checkpoints(run, every):
        model = BoltzFormer.from_pretrained(path)
        if test is None:  # one test split for all the run's weights (one image size)
            test = BiomedParseDataset(data, "test", image_size=model.config.image_size,
                                      train=False)
        result = evaluate(model, test, seed=seed, batch_size=32, progress=False)
        m = result.metrics
        strata = m["size_strata"]["weighted"]
        point = {"minutes": minutes, "tiny": 100 * strata["tiny"]["dice_mean"],
                 "small": 100 * strata["small"]["dice_mean"],
                 "large": 100 * strata["large"]["dice_mean"],
                 "all": 100 * m["overall"]["dice_mean"],
                 "failure_rate": 100 * m["overall"]["failure_rate"],
                 "absent_fp": 100 * m["absent"]["false_positive_rate"],  # NaN: none
                 "own_fp": _own_site_fp(result.samples),
                 **{t: 100 * m["by_target"][t]["dice_mean"] if t in m["by_target"]
                    else math.nan for t in targets}}
        print(" ".join(f"{k} {v:.1f}" for k, v in point.items()), flush=True)
        points.append(point)
    return points


def _plot(points: list[dict], targets: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = [p["minutes"] for p in points]
    lines = [("tiny", "#ff7f0e", "o-"), ("small", "#d62728", "o-"), ("large", "#1f77b4", "o-"),
             ("all", "black", "o-"), ("own_fp", "#7f7f7f", "s--")]
    palette = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#2ca02c")
    lines += [(t, palette[i % len(palette)], ".:") for i, t in enumerate(targets)]
    labels = {"tiny": "tiny objects", "small": "small objects", "large": "large objects",
              "all": "all", "own_fp": "own-site absences painted (%)"}
    for key, color, style in lines:
        ys = [p[key] for p in points]
        if all(y != y for y in ys):
            continue
        ax.plot(x, ys, style, color=color, label=labels.get(key, key))
    ax.set_xlabel("training minutes")
    ax.set_ylabel("test Dice (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("boltzformer demo: test figures against training time", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def _table(points: list[dict], targets: list[str]) -> list[str]:
    def cell(v: float, suffix: str = "") -> str:
        return "–" if v != v else f"{v:.1f}{suffix}"

    head = ["training minutes", "tiny", "small", "large", "all", "failure rate", "absent FP",
            "own-site FP", *targets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for p in points:
        cells = [f"{p['minutes']:.1f}", *(cell(p[k]) for k in ("tiny", "small", "large", "all")),
                 cell(p["failure_rate"], " %"), cell(p["absent_fp"], " %"),
                 cell(p["own_fp"], " %"), *(cell(p[t]) for t in targets)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", type=Path, help="the demo's output folder")
    parser.add_argument("--data", type=Path, default=None,
                        help="the data set it trained on (default: DEMO/data, the phantoms)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/demo_curve"),
                        help="path prefix of the figure and table")
    parser.add_argument("--every", type=int, default=1, help="score every K-th snapshot")
    parser.add_argument("--targets", nargs="*", default=[], help="targets with their own column")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.every < 1:
        parser.error("--every must be >= 1")
    torch.manual_seed(args.seed)
    points = _points(args.demo, args.data or args.demo / "data", args.seed, args.every,
                     args.targets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _plot(points, args.targets, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text("\n".join(_table(points, args.targets)) + "\n")
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
