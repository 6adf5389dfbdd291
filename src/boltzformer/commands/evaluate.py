"""`boltzformer evaluate`: Dice report of a checkpoint on a data set split."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.commands._inference import add_dtype, add_existence_threshold, add_windows
from boltzformer.evaluation.evaluate_checkpoint import evaluate_checkpoint

EXAMPLE = """\
example:
  boltzformer evaluate --checkpoint runs/tiny --data data/phantoms --split test \\
      --out reports/tiny --seed 0

--checkpoint takes a checkpoint folder (config.json + model.safetensors), a training run
folder (its best/ checkpoint, else last/, else its newest snapshot) or a Hugging Face Hub id
(org/name, downloaded once into the Hub cache). Several --data folders
(one per data set) are scored together and reported per data set (the folder name). The
report folder gets metrics.json, per_sample.csv, report.md and dice_vs_size.png.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint: Dice per target, modality, data set and object size",
        description="Evaluate a checkpoint on a BiomedParse-format split: Dice per sample, "
        "aggregated per target, modality and data set, stratified by object size (small < 1% "
        "of the image, as in the paper's Table 2, and its tiny part < 0.1%), failure rate, "
        "absent-target false positives and mean predicted area (and, for a model with the "
        "existence head, its AUROC and accuracy), object detection (F1, panoptic quality) and, for "
        "slices of volumes, 3D Dice per case.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="run folder, checkpoint folder or Hugging Face Hub id "
                        "(org/name)")
    parser.add_argument("--data", type=Path, required=True, nargs="+", metavar="DIR",
                        help="BiomedParse-format folder(s); several are reported per data set")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR",
                        help="folder for the report")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the attention sampling (default: 0)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="probability threshold of a predicted pixel (default: 0.5)")
    add_existence_threshold(parser)
    parser.add_argument("--no-size-floor", action="store_true",
                        help="score the answers without the checkpoint's size floor (set by "
                        "`boltzformer calibrate`: an answer smaller than a share of its "
                        "target's usual size is an empty mask)")
    parser.add_argument("--min-score", type=float, default=0.0, metavar="S",
                        help="an answer whose mask score (its mean probability where it "
                        "paints) is below S is an empty mask: fewer false positives on "
                        "absent targets, some present ones lost (default 0: off)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_dtype(parser)
    add_windows(parser)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    print(evaluate_checkpoint(
        args.checkpoint, args.data, args.out, split=args.split, seed=args.seed,
        batch_size=args.batch_size, threshold=args.threshold,
        existence_threshold=args.existence_threshold, size_floor=not args.no_size_floor,
        min_score=args.min_score, device=args.device, dtype=args.dtype, workers=args.workers,
        progress=not args.no_progress, window_size=args.window_size,
        window_overlap=args.window_overlap,
    ))
    return 0
