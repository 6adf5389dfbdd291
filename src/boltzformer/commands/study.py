"""`boltzformer study`: the paper's Tables 3-8 under an equal budget on the phantoms."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from boltzformer.apps.study import TABLES

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
                   help="seeds for the main tables (default 3)")
    p.add_argument("--ablation-seeds", type=int, default=None,
                   help="seeds for the ablations of Tables 4-8 (default 1)")
    p.add_argument("--minutes", type=float, default=None,
                   help="training minutes per run (default 2.5)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per run instead of minutes (reproducible to the bit)")
    p.add_argument("--images", type=int, default=None, help="phantom images (default 600)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs trained at once in separate processes, each with CPUs / jobs "
                   "threads (default 2: on 2 cores, two 1-thread runs train 1.4x more images/s "
                   "than one 2-thread run)")
    p.add_argument("--tables", nargs="+", choices=[t.name for t in TABLES], default=None,
                   help="only these tables (default: all)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from boltzformer.apps.study import StudySettings, run_study

    given = {k: v for k, v in {"seeds": args.seeds, "ablation_seeds": args.ablation_seeds,
                               "steps": args.steps, "images": args.images,
                               "minutes": args.minutes, "jobs": args.jobs,
                               "tables": tuple(args.tables) if args.tables else None}.items()
             if v is not None}
    if args.steps is not None and args.minutes is None:
        given["minutes"] = None  # a step budget alone
    if args.quick:
        settings = StudySettings.quick(args.out_dir, **given)
    else:
        settings = StudySettings(out_dir=args.out_dir, **given)
    paths = run_study(settings)
    print(paths["summary"].read_text())
    print(f"tables, study.png and summary.md are in {args.out_dir}")
    return 0
