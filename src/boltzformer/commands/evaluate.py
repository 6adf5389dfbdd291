"""`boltzformer evaluate`: Dice report of a checkpoint on a data set split."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset

from boltzformer.commands._inference import add_existence_threshold
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluate import evaluate, write_report
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.existence import check_existence_threshold, check_min_score
from boltzformer.train.run_dir import resolve_checkpoint

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
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_existence_threshold(args.existence_threshold, "--existence-threshold")  # before loading
    check_min_score(args.min_score, "--min-score")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    checkpoint = resolve_checkpoint(args.checkpoint)
    model = BoltzFormer.from_pretrained(checkpoint, map_location=device)
    dataset: ConcatDataset[dict[str, Any]] = ConcatDataset([
        BiomedParseDataset(root, args.split, image_size=model.config.image_size)
        for root in args.data
    ])
    result = evaluate(model, dataset, seed=args.seed, batch_size=args.batch_size,
                      threshold=args.threshold, existence_threshold=args.existence_threshold,
                      workers=args.workers, size_floor=not args.no_size_floor,
                      min_score=args.min_score, progress=not args.no_progress)
    result.info.update(checkpoint=str(checkpoint), data=", ".join(map(str, args.data)),
                       split=args.split)
    paths = write_report(result, args.out)
    overall = result.metrics["overall"]
    strata = result.metrics["size_strata"]["weighted"]
    objects = result.metrics["objects"]["overall"]
    print(f"{result.metrics['n_samples']} samples: Dice {overall['dice_mean']:.4f} "
          f"(small {strata['small']['dice_mean']:.4f}, of which tiny "
          f"{strata['tiny']['dice_mean']:.4f}; large {strata['large']['dice_mean']:.4f}), "
          f"failure rate {overall['failure_rate']:.2%}; objects: F1 {objects['f1']:.4f}, "
          f"PQ {objects['pq']:.4f}")
    absent = result.metrics["absent"]
    if absent["n"]:
        exist = absent["existence"]
        print(f"absent targets: {absent['n']}, false positives {absent['false_positive_rate']:.2%}"
              + (f"; existence AUROC {exist['auroc']:.4f}, accuracy {exist['accuracy']:.2%}"
                 if exist else ""))
    print(f"report: {paths['report']}")
    return 0
