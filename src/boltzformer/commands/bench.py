"""`boltzformer bench`: time, FLOPs and memory of each attention mode (see apps/bench*.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.apps.bench import PARTS, BenchSettings, run_bench
from boltzformer.apps.bench_measure import MODES
from boltzformer.commands._options import int_list
from boltzformer.modeling.config import PRESETS


def _names(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(t.strip() for t in text.split(",") if t.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(allowed)}"
            )
        return names

    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure time, FLOPs and memory of each attention mode",
        description=(
            "Measure the decoder alone (random features of the right shapes) and the whole "
            "model (random weights, random image) in each attention mode: full, masked "
            "(threshold 0.5), boltzmann-reference (what the authors' release computes: "
            "full-resolution logits per layer, dense masked attention) and boltzmann-fast "
            "(low-resolution logits, sparse attention). Reports forward and forward+backward "
            "time (median of repeats after warm-up, modes interleaved), FLOPs counted by "
            "torch.utils.flop_counter (total and inside cross-attention), peak memory, the "
            "fast/full and fast/reference ratios, and how each metric grows with input size."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", default="paper-hiera-s", choices=sorted(PRESETS),
                        help="model configuration to measure")
    parser.add_argument("--sizes", type=int_list, default="256,512",
                        help="input sizes in pixels (square, multiples of 32), comma-separated")
    parser.add_argument("--decoder-only", action="store_true",
                        help="skip the whole model (its backbone dominates and is slow on CPU)")
    parser.add_argument("--model-only", action="store_true", help="skip the decoder alone")
    parser.add_argument("--modes", type=_names(tuple(MODES)), default=",".join(MODES),
                        help="comma-separated attention modes")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per mode first")
    parser.add_argument("--batch", type=int, default=1, help="images per batch")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads; none given: torch's choice, one per core")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory runs (they are slower than plain runs)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of measuring, profile forward+backward with torch.profiler "
                        "and print CPU time by model part (decoder parts, backbone, ...) for "
                        "each mode: --repeats profiled steps after --warmup")
    parser.add_argument("--seed", type=int, default=0, help="weights, inputs and sampling")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write every measurement to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def command_line(args: argparse.Namespace, parts: tuple[str, ...]) -> str:
    """The command that repeats this run, every setting spelled out."""
    words = ["boltzformer", "bench", "--preset", args.preset,
             "--sizes", ",".join(map(str, args.sizes)), "--modes", ",".join(args.modes),
             "--repeats", str(args.repeats), "--warmup", str(args.warmup),
             "--batch", str(args.batch), "--device", args.device, "--seed", str(args.seed)]
    if parts != PARTS:
        words.append("--decoder-only" if parts == ("decoder",) else "--model-only")
    if args.threads is not None:
        words += ["--threads", str(args.threads)]
    if args.no_memory:
        words.append("--no-memory")
    if args.profile:
        words.append("--profile")
    if args.json is not None:
        words += ["--json", str(args.json)]
    return " ".join(words)


def run(args: argparse.Namespace) -> int:
    if args.decoder_only and args.model_only:
        raise ValueError("--decoder-only and --model-only exclude each other; give one")
    parts = ("decoder",) if args.decoder_only else ("model",) if args.model_only else PARTS
    settings = BenchSettings(
        preset=args.preset, sizes=args.sizes, parts=parts, modes=args.modes,
        repeats=args.repeats, warmup=args.warmup, batch=args.batch, seed=args.seed,
        device=args.device, memory=not args.no_memory,
    )
    run_bench(settings, threads=args.threads, profile=args.profile, json_path=args.json,
              quiet=args.quiet, command=command_line(args, parts))
    return 0
