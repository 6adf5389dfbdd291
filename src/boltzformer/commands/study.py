"""`boltzformer study`: the paper's Tables 3-8 under an equal budget on the phantoms."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from boltzformer.apps.study import TABLES, TRAINING, StudySettings, run_study


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "study",
        help="reproduce the paper's comparisons (full/masked/Boltzmann, ablations)",
        description="Train and evaluate the tiny model under one budget for every variant of "
        "the paper's Tables 3-8 (attention mode, tau0, sampling ratio, queries, text prior, "
        "PiGMA), a constant-prompt control, deep supervision on/off, K = 1 prompt per image "
        "against the default K, and the expert baseline (a U-Net with one output channel per "
        "target, needs the [baselines] extra), over several seeds. Resumable: finished runs "
        "are kept. Writes one Markdown + CSV table per table, study.png and summary.md into "
        "OUT_DIR. See docs/results/ for the measured time of the full study.",
        epilog="examples:\n  boltzformer study study_out\n  boltzformer study smoke --quick\n"
        "  boltzformer study study_out --tables table3_attention text_control --seeds 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="where runs and tables go")
    p.add_argument("--quick", action="store_true",
                   help="a minutes-long smoke version: 1 seed, 3 steps, 16 small images")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"seeds for the main tables (default {StudySettings.seeds})")
    p.add_argument("--ablation-seeds", type=int, default=None,
                   help="seeds for the ablations of Tables 4-8 (default "
                   f"{StudySettings.ablation_seeds})")
    p.add_argument("--minutes", type=float, default=None,
                   help=f"training minutes per run (default {TRAINING.train.max_minutes:g})")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per run instead of minutes (reproducible to the bit)")
    p.add_argument("--images", type=int, default=None,
                   help=f"phantom images (default {StudySettings.images})")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs trained at once in separate processes, each with CPUs / jobs "
                   f"threads (default {StudySettings.jobs}: on 2 cores, two 1-thread runs "
                   "train 1.4x more images/s than one 2-thread run)")
    p.add_argument("--tables", nargs="+", choices=[t.name for t in TABLES], default=None,
                   help="only these tables (default: all)")
    p.set_defaults(run=run)


def settings(args: argparse.Namespace) -> StudySettings:
    """The study the flags ask for: its own settings, and --minutes/--steps as overrides of
    every run's TrainConfig (which checks them)."""
    given = {k: v for k, v in {"seeds": args.seeds, "ablation_seeds": args.ablation_seeds,
                               "images": args.images, "jobs": args.jobs,
                               "tables": tuple(args.tables) if args.tables else None}.items()
             if v is not None}
    base = (StudySettings.quick(args.out_dir, **given) if args.quick
            else StudySettings(out_dir=args.out_dir, **given))
    budget = {k: v for k, v in {"train.max_minutes": args.minutes,
                                "train.max_steps": args.steps}.items() if v is not None}
    if args.steps is not None and args.minutes is None:
        budget["train.max_minutes"] = None  # a step budget alone
    return replace(base, training=base.training.with_overrides(budget)) if budget else base


def run(args: argparse.Namespace) -> int:
    paths = run_study(settings(args))
    print(paths["summary"].read_text())
    print(f"tables, study.png and summary.md are in {args.out_dir}")
    return 0
