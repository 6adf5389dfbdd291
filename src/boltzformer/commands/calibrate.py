"""`boltzformer calibrate`: choose a trained run's size floor on its validation split."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.evaluation.calibrate import FRACTIONS, PERCENTILE, calibrate_run
from boltzformer.train.run_dir import CONFIG_NAME

EXAMPLE = """\
example:
  boltzformer calibrate runs/tiny
  boltzformer calibrate demo_output/run --data demo_output/data --fractions 0,0.5,1

The size floor (not in the paper): a small organ that the image lacks tends to be answered
with a speck where it would be. Each target's floor is FRACTION times the 5th percentile
(--percentile) of its objects' sizes in the run's training items; an answer smaller than
its target's floor is an empty mask ("not found"). FRACTION is the one of --fractions with
the best mean score on the run's validation items (an absent target scores 1 when left
empty, a present one its Dice). The floor is written into the checkpoint's config.json
(best/, else last/); evaluate, predict, visualize and serve then apply it to prompts that
name a target ("left adrenal gland", "left adrenal gland in abdomen CT"). Calibrate again
after training further. See docs/inference.md.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "calibrate",
        help="choose a run's size floor on its validation split (absent targets answered empty)",
        description="Choose a trained run's size floor: per target, a fraction of its usual "
        "smallest size in the training items, the fraction chosen on the run's validation "
        "items; answers under it become empty masks. Written into the run's checkpoint.",
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


def _fractions(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not v >= 0 for v in values):
        raise ValueError(f"--fractions must be numbers >= 0 separated by commas, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    print(calibrate_run(args.run_dir, data=args.data, fractions=_fractions(args.fractions),
                        percentile=args.percentile, batch_size=args.batch_size,
                        device=args.device, dry_run=args.dry_run,
                        progress=not args.no_progress), end="")
    return 0
