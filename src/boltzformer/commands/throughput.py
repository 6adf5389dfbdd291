"""`boltzformer throughput`: training pairs/s for several prompts-per-image values K."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from boltzformer.data import generate_phantoms
from boltzformer.modeling.config import PRESETS
from boltzformer.train.throughput import ThroughputSettings, format_rows, measure_throughput

_EPILOG = """\
Each step encodes --batch-size images once and decodes up to K of each image's targets, as
`boltzformer train` does with train.prompts_per_image=K. The K values are measured
interleaved, one step each in turn, so that a shared machine's drift affects them alike.

example (the figures in docs/training.md):
  boltzformer throughput --prompts-per-image 1,8 --threads 2
"""


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,8, got {text!r}")
    return values


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "throughput",
        help="measure training speed (pairs/s) for several prompts per image",
        description="Measure training throughput, in (image, prompt) pairs per second, of "
        "real training steps (augmented data, deep supervision, backward, AdamW) for each "
        "number K of prompts decoded per encoded image.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="BiomedParse-format folder with a train split (default: 40 "
                        "phantoms generated in a temporary folder)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    parser.add_argument("--prompts-per-image", type=_ints, default=(1, 8), metavar="K,K",
                        help="values of K, comma-separated (default 1,8)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per K (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per K first")
    parser.add_argument("--no-deep-supervision", action="store_true",
                        help="the final loss only (the authors' release)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.image_size % 32 or args.image_size < 96:
        raise ValueError(f"--image-size must be a multiple of 32 and >= 96, got {args.image_size}")
    for name in ("batch_size", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "phantoms"
            generate_phantoms(data, images=40, size=args.image_size, seed=args.seed,
                              progress=False)
        s = ThroughputSettings(
            data=data, preset=args.preset, image_size=args.image_size,
            batch_size=args.batch_size, prompts_per_image=args.prompts_per_image,
            steps=args.steps, warmup=args.warmup,
            deep_supervision=not args.no_deep_supervision, seed=args.seed)
        rows = measure_throughput(s, progress=not args.no_progress)
    print(format_rows(s, rows))
    return 0
