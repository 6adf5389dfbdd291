"""`boltzformer throughput`: training pairs/s for several prompts-per-image values K."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.apps.throughput import TRAINING, ThroughputSettings, run_throughput
from boltzformer.commands._options import int_list
from boltzformer.modeling.config import PRESETS

_EPILOG = """\
Each step encodes --batch-size images once and decodes up to K of each image's targets, as
`boltzformer train` does with train.prompts_per_image=K. The K values are measured
interleaved, one step each in turn, so that a shared machine's drift affects them alike.

--set changes the training measured (any TrainConfig key); each --compare adds a setting
(overrides of it, comma-separated) measured alongside, with its own model, one step each in
turn, and a row per setting.

examples (the figures in docs/training.md and docs/benchmarks.md):
  boltzformer throughput --prompts-per-image 1,8 --threads 2
  boltzformer throughput --batch-size 4 --prompts-per-image 8 --threads 1 \
      --set loss.layer_pool=1 --compare loss.layer_pool=2
"""


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
    model, loop = TRAINING.model.resolve(), TRAINING.train
    default = ThroughputSettings()
    parser.add_argument("--preset", default=TRAINING.model.preset, choices=sorted(PRESETS))
    parser.add_argument("--image-size", type=int, default=model.image_size)
    parser.add_argument("--batch-size", type=int, default=loop.batch_size,
                        help=f"images per step (default {loop.batch_size})")
    parser.add_argument("--prompts-per-image", type=int_list, default=default.prompts_per_image,
                        metavar="K,K", help="values of K, comma-separated (default "
                        f"{','.join(map(str, default.prompts_per_image))})")
    parser.add_argument("--steps", type=int, default=default.steps,
                        help=f"timed steps per K (default {default.steps})")
    parser.add_argument("--warmup", type=int, default=default.warmup,
                        help="untimed steps per K first")
    parser.add_argument("--no-deep-supervision", action="store_true",
                        help="the final loss only (the authors' release)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainConfig override of the training measured, e.g. "
                        "loss.layer_pool=2 (repeatable)")
    parser.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE,...",
                        help="also measure the training with these overrides (comma-"
                        "separated), interleaved with the first; repeatable")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seed", type=int, default=loop.seed)
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, profile --steps steps of each K with "
                        "torch.profiler and print CPU time by part (data loading, backbone, "
                        "pixel decoder, decoder parts, loss, backward, optimizer)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=run)
    return parser


def settings(args: argparse.Namespace) -> ThroughputSettings:
    """The measurement the flags ask for; the training flags override its TrainConfig (which
    checks them). data.root is left for `run` to set."""
    training = TRAINING.with_overrides({
        "model.preset": args.preset, "model.image_size": args.image_size,
        "train.batch_size": args.batch_size, "train.seed": args.seed,
        "loss.deep_supervision": not args.no_deep_supervision,
    }).with_overrides(args.set)
    if args.profile and args.compare:
        raise ValueError("--profile profiles one setting: give it with --set, not --compare")
    compare = tuple(tuple(p.strip() for p in c.split(",") if p.strip()) for c in args.compare)
    return ThroughputSettings(training=training, prompts_per_image=args.prompts_per_image,
                              steps=args.steps, warmup=args.warmup, compare=compare)


def run(args: argparse.Namespace) -> int:
    s = settings(args)  # checked before any phantoms are made
    run_throughput(s, data=args.data, threads=args.threads, profile=args.profile,
                   progress=not args.no_progress)
    return 0
