"""demo.md's 60-minute comparison: the U-Net expert trained beside a `boltzformer train` run
(the same data, seed and minutes, two one-thread jobs at once) and scored like it.

    python benchmarks/long_run.py unet RUN/config.yaml --minutes 60 --out UNET
    python benchmarks/long_run.py unet demo_output/run/config.yaml --out UNET  # its 700 steps
    python benchmarks/long_run.py evaluate UNET --min-score 0.9 --out UNET/gate_0.9
    python benchmarks/long_run.py targets BZF.eval UNET [...]   # Dice per target

`unet` trains the expert as `boltzformer demo --expert` does (`apps.demo.train_expert` with the
run's config and `train.max_minutes` = MINUTES, or without --minutes the run's own budget (a
demo run's 700 steps, as `demo --expert` trains it): its data, seed, image size,
validation share, precision and layout), with its size floor chosen on the run's validation
items, and writes the test report into UNET. `evaluate` scores UNET/model (its floor included)
on the run's test split again, optionally with a score gate. `targets` prints each evaluation
folder's Dice per target (present prompts) and, in brackets, its failure rate (the share
missed: Dice 0).
BoltzFormer's side is the CLI: `boltzformer train --config RUN/config.yaml --out BZF
train.max_minutes=60`, `boltzformer calibrate BZF`, `boltzformer evaluate --checkpoint
BZF/best --data DATA --seed S [--min-score G]`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from boltzformer.apps.demo import train_expert
from boltzformer.baselines import UNetExpert
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import evaluate, write_report
from boltzformer.train.config import TrainConfig

CONFIG_NAME = "run_config.yaml"  # the run's config with the U-Net's budget, beside it


def test_split(cfg: TrainConfig) -> BiomedParseDataset:
    return BiomedParseDataset(str(cfg.data.root), "test", image_size=cfg.model.resolve().image_size,
                              train=False)


def unet(config: Path, minutes: float | None, out: Path) -> None:
    cfg = TrainConfig.from_yaml(config)
    if minutes is not None:
        cfg = cfg.with_overrides({"train.max_minutes": minutes, "train.max_steps": None})
    result = train_expert(cfg, out, test_split(cfg), progress=False)
    cfg.to_yaml(out / CONFIG_NAME)  # the config it was trained with (its minutes)
    print(f"{result['train']['steps']} steps in {result['train']['seconds'] / 60:.1f} min; "
          f"floor fraction {result['floor'].floor.fraction:g}; report in {out}")


def score(folder: Path, min_score: float, out: Path) -> None:
    cfg = TrainConfig.from_yaml(folder / CONFIG_NAME)
    model = UNetExpert.from_pretrained(folder / "model")
    write_report(evaluate(model, test_split(cfg), seed=cfg.train.seed, progress=False,
                          min_score=min_score), out)
    print(f"report in {out}")


def targets(folders: list[Path]) -> None:
    metrics = [json.loads((f / "metrics.json").read_text())["by_target"] for f in folders]
    print("| target | " + " | ".join(str(f) for f in folders) + " |")
    print("|---|" + "---:|" * len(folders))
    for target in sorted(metrics[0]):
        cells = [f"{100 * m[target]['dice_mean']:.1f} ({100 * m[target]['failure_rate']:.0f} %)"
                 if target in m else "–" for m in metrics]
        print(f"| {target} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    u = sub.add_parser("unet", help="train, calibrate and score the expert beside a run")
    u.add_argument("config", type=Path, help="the BoltzFormer run's config.yaml")
    u.add_argument("--minutes", type=float, default=None,
                   help="a time budget (default: the run's own budget, as in its config)")
    u.add_argument("--out", type=Path, required=True)
    e = sub.add_parser("evaluate", help="score a trained expert again (a score gate)")
    e.add_argument("folder", type=Path, help="what `unet` wrote")
    e.add_argument("--min-score", type=float, default=0.0)
    e.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("targets", help="Dice (failure rate) per target of evaluations")
    t.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "unet":
        unet(args.config, args.minutes, args.out)
    elif args.command == "evaluate":
        score(args.folder, args.min_score, args.out)
    else:
        targets(args.folders)


if __name__ == "__main__":
    main()
