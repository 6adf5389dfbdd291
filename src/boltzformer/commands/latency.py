"""`boltzformer latency`: how long `Predictor` takes per image and per extra prompt."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.apps.latency import PROMPTS, LatencySettings, run_latency
from boltzformer.commands._options import int_list
from boltzformer.modeling.config import PRESETS

_EPILOG = """\
examples (the figures in docs/inference.md):
  boltzformer latency --threads 1 --json latency-tiny.json
  boltzformer latency --preset paper-hiera-s --sizes 256,512 --repeats 3 --threads 1
  boltzformer latency --sizes 256 --batch-sizes 1,8      # also the folder path, images/s
  boltzformer latency --device cuda --repeats 20         # on a GPU

The weights are random: the time does not depend on them. The input image is S x S for
each size S (the model's input size), so nothing is resized. "per extra prompt" is the
slope of the median predict time over the prompt counts; a user's image costs
set_image + predict(P prompts), and each further prompt on the same image about the slope.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    default = LatencySettings()
    parser = subparsers.add_parser(
        "latency",
        help="measure inference latency: per image (set_image) and per prompt (predict)",
        description="Measure what a Predictor user waits for, with random weights: the time\n"
        "of set_image (backbone and pixel decoder, once per image) and of predict with 1, 2,\n"
        "4, 8 prompts (text encoder and decoder, all prompts in one batched pass), at each\n"
        "input size; the median of --repeats after --warmup rounds, set_image and the prompt\n"
        "counts taking turns within a round. Prints a Markdown table with the machine and its\n"
        "load average; --json writes every timing.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default=default.preset, choices=sorted(PRESETS),
                        help=f"model configuration (default {default.preset})")
    parser.add_argument("--sizes", type=int_list, default=default.sizes, metavar="S,S",
                        help="input sizes in pixels, multiples of 32 (default "
                        f"{','.join(map(str, default.sizes))})")
    parser.add_argument("--prompts", type=int_list, default=default.prompts, metavar="P,P",
                        help=f"prompt counts, 1-{len(PROMPTS)} (default "
                        f"{','.join(map(str, default.prompts))})")
    parser.add_argument("--batch-sizes", type=int_list, default=default.batch_sizes,
                        metavar="B,B", help="also time predict_images (the folder path, "
                        "without file I/O) on one batch of B images with one prompt")
    parser.add_argument("--repeats", type=int, default=default.repeats,
                        help=f"timed rounds per size (default {default.repeats})")
    parser.add_argument("--warmup", type=int, default=default.warmup,
                        help=f"untimed rounds per size first (default {default.warmup})")
    parser.add_argument("--samples", type=int, default=default.samples,
                        help="sampling draws per predict (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", default=default.device, help="cpu (default) or cuda")
    parser.add_argument("--seed", type=int, default=default.seed, help="weights and images")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write every timing to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def command_line(args: argparse.Namespace) -> str:
    """The command that repeats this run, every setting spelled out."""
    words = ["boltzformer", "latency", "--preset", args.preset,
             "--sizes", ",".join(map(str, args.sizes)),
             "--prompts", ",".join(map(str, args.prompts)),
             "--repeats", str(args.repeats), "--warmup", str(args.warmup),
             "--samples", str(args.samples), "--device", args.device, "--seed", str(args.seed)]
    if args.batch_sizes:
        words += ["--batch-sizes", ",".join(map(str, args.batch_sizes))]
    if args.threads is not None:
        words += ["--threads", str(args.threads)]
    if args.json is not None:
        words += ["--json", str(args.json)]
    return " ".join(words)


def run(args: argparse.Namespace) -> int:
    settings = LatencySettings(
        preset=args.preset, sizes=args.sizes, prompts=args.prompts, repeats=args.repeats,
        warmup=args.warmup, samples=args.samples, batch_sizes=args.batch_sizes,
        device=args.device, seed=args.seed,
    )
    run_latency(settings, threads=args.threads, json_path=args.json, quiet=args.quiet,
                command=command_line(args))
    return 0
