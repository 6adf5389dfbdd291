"""`boltzformer train`: train a model on a BiomedParse-format data set."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from boltzformer.train.launch import summary, train_run

EXAMPLE = """\
examples:
  boltzformer train --config configs/tiny.yaml --data data/phantoms --out runs/tiny
  boltzformer train --config configs/tiny.yaml --data data/phantoms --out runs/tiny \\
      optim.lr=3e-4 train.epochs=10 model.attention=full
  boltzformer train --out runs/tiny --resume             # continue after a crash or a kill
  torchrun --nproc_per_node 2 -m boltzformer train --config configs/tiny.yaml \\
      --data data/phantoms --out runs/ddp                 # DistributedDataParallel

Overrides are section.key=value with YAML values; sections: model (preset and any model
config field), data, optim, train. See docs/training.md.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a model (resumable; runs under torchrun)",
        description="Train BoltzFormer with AdamW on Dice + BCE, validation-based early "
        "stopping and atomic checkpoints in RUN_DIR (best/, last/, metrics.jsonl, "
        "loss_curve.png).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="training config YAML (default: built-in "
                        "defaults; with --resume: the run's saved config)")
    parser.add_argument("--data", help="BiomedParse-format data set folder (sets data.root)")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR",
                        help="run folder for checkpoints, metrics and plots")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. optim.lr=2e-5 train.batch_size=4")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        result = train_run(args.config, args.out, data=args.data, overrides=args.overrides,
                           resume=args.resume, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        if world == 1:
            raise  # the one-line error of the command line
        rank = os.environ.get("RANK", "?")
        print(f"boltzformer train: error (rank {rank} of {world}): {err}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary(result))
    return 0
