"""`boltzformer synth`: write the built-in synthetic CT/MRI phantom benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.data.phantoms import format_size_table, generate_phantoms

_EPILOG = """\
The data set is written in the BiomedParse format, so BiomedParseDataset reads it:
  OUT_DIR/train/, train_mask/, train.json, test/, test_mask/, test.json,
  size_stats.md and size_stats.csv (object size per target, in % of the image).
Images are CT-like chest and abdomen slices and MRI-like (T1/T2) abdomen slices; targets
range from ~0.005% (small nodules, adrenal glands) to ~16% (lungs, liver) of the image, and
each mask has several paraphrased prompts, including left/right structures.

example:
  boltzformer synth data/phantoms --images 2000 --size 256 --seed 0
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `synth` verb."""
    parser = subparsers.add_parser(
        "synth",
        help="generate synthetic CT/MRI phantoms with small text-prompted targets",
        description="Generate the built-in synthetic benchmark: CT/MRI-like slices with "
        "small targets (nodules, tumours, adrenal glands, ...) and distractors of similar "
        "look, written as a BiomedParse-format data set with train and test splits.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path,
                        help="new (or empty) folder to write the data set into")  # fmt: skip
    parser.add_argument("--images", type=int, default=2000, help="number of images (default 2000)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of images in the test split (default 0.2)")  # fmt: skip
    parser.add_argument("--absent-fraction", type=float, default=0.0,
                        help="share of images where one prompted target is absent, written "
                        "with an empty mask (default 0)")  # fmt: skip
    parser.add_argument("--foreign-fraction", type=float, default=0.0,
                        help="share of images that also get a prompt for a target of the other "
                        "site (a lung on an abdomen slice, the liver on a chest slice), "
                        "written with an empty mask flagged absent (default 0)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: all CPUs for 64+ images)")  # fmt: skip
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate the phantoms with a progress bar, then print where they went and their sizes."""
    summary = generate_phantoms(
        args.out_dir,
        images=args.images,
        size=args.size,
        seed=args.seed,
        test_fraction=args.test_fraction,
        absent_fraction=args.absent_fraction,
        foreign_fraction=args.foreign_fraction,
        workers=args.workers,
        progress=True,
    )
    splits = ", ".join(f"{n} {split}" for split, n in summary["images"].items())
    masks = sum(summary["masks"].values())
    print(f"wrote {args.images} images ({splits}) and {masks} masks to {summary['out_dir']} "
          f"in {summary['seconds']:.1f} s")  # fmt: skip
    print(format_size_table(summary["stats"]))
    print(f"size table saved as {Path(summary['out_dir']) / 'size_stats.md'} and .csv")
    return 0
