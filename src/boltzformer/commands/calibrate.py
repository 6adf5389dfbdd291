"""`boltzformer calibrate`: choose a trained run's existence threshold and size floor on its
validation split."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.evaluation.calibrate import (
    FRACTIONS,
    PERCENTILE,
    THRESHOLDS,
    WINDOW_THRESHOLDS,
    calibrate_run,
)
from boltzformer.train.run_dir import CONFIG_NAME

EXAMPLE = """\
example:
  boltzformer calibrate runs/tiny
  boltzformer calibrate demo_output/run --data demo_output/data --fractions 0,0.5,1

The existence threshold (a model with the existence head): an answer whose probability that
the target is in the image is below it is an empty mask ("not found"). The head can be too
strict on small lesions: it then hides masks the model found (docs/results/native_resolution.md).

The size floor (not in the paper): a small organ that the image lacks tends to be answered
with a speck where it would be. Each target's floor is FRACTION times the 5th percentile
(--percentile) of its objects' sizes in the run's training items; an answer smaller than
its target's floor is an empty mask ("not found").

The threshold (of --thresholds) and FRACTION (of --fractions) are the pair with the best
mean score on the run's validation items (an absent target scores 1 when left empty, a
present one its Dice); ties go to the lower threshold and the smaller fraction. Both are
written into the checkpoint's config.json (best/, else last/); evaluate, predict, visualize
and serve then apply them (the floor to prompts that name a target: "left adrenal gland",
"left adrenal gland in abdomen CT"). Calibrate again after training further. See
docs/inference.md.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "calibrate",
        help="choose a run's existence threshold and size floor on its validation split",
        description="Choose a trained run's gates on its validation items: the existence "
        "head's threshold and the size floor (per target, a fraction of its usual smallest "
        "size in the training items); answers they reject become empty masks. Written into "
        "the run's checkpoint.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN",
                        help=f"a training run folder (with {CONFIG_NAME} and best/ or last/)")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="the run's data folder, if it has moved (default: the run's "
                        "data.root)")
    parser.add_argument("--fractions", default=",".join(f"{f:g}" for f in FRACTIONS),
                        help="fractions to try, comma-separated (0: no floor; default "
                        "%(default)s)")
    parser.add_argument("--thresholds", metavar="T,T,...",
                        help="existence thresholds to try, comma-separated, in [0, 1] (0: the "
                        "gate off; default " + ",".join(f"{t:g}" for t in THRESHOLDS) +
                        ", or " + ",".join(f"{t:g}" for t in WINDOW_THRESHOLDS) + " for a "
                        "model on sliding windows: one evaluation each)")
    parser.add_argument("--percentile", type=float, default=PERCENTILE,
                        help="percentile of each target's training sizes that the floor is a "
                        "fraction of (default %(default)g)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the table and the choice, write nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def _numbers(text: str, flag: str, top: float = float("inf")) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 0 <= v <= top for v in values):
        bound = ">= 0" if top == float("inf") else f"in [0, {top:g}]"
        raise ValueError(f"{flag} must be numbers {bound} separated by commas, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    thresholds = (None if args.thresholds is None
                  else _numbers(args.thresholds, "--thresholds", 1.0))
    print(calibrate_run(args.run_dir, data=args.data,
                        fractions=_numbers(args.fractions, "--fractions"),
                        thresholds=thresholds, percentile=args.percentile,
                        batch_size=args.batch_size,
                        device=args.device, dry_run=args.dry_run,
                        progress=not args.no_progress), end="")
    return 0
