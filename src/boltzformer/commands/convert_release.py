"""`boltzformer convert-release`: the authors' release weights -> a checkpoint folder here."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.modeling.config import PRESETS
from boltzformer.modeling.release_weights import convert_release_checkpoint
from boltzformer.train.config import parse_overrides


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert-release",
        help="convert weights in the authors' release format into a checkpoint folder",
        description="Read a state_dict in the format of the authors' release "
        "(microsoft/BoltzFormer; .safetensors, or a PyTorch file read with weights_only) and "
        "write a checkpoint folder (config.json, model.safetensors) of PRESET holding its pixel "
        "decoder, decoder and PiGMA. Its backbone and language encoder are other architectures "
        "here and are not converted: those parts keep the preset's initial weights "
        "(docs/fidelity.md).",
        epilog="example:\n  boltzformer convert-release boltzformer_hiera-s.safetensors "
        "ckpt/hiera-s --preset paper-hiera-s",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, metavar="CKPT", help="the release's weights")
    p.add_argument("out", type=Path, metavar="OUT", help="checkpoint folder to write")
    p.add_argument("--preset", default="paper-hiera-s", choices=sorted(PRESETS),
                   help="model preset whose sizes the weights have (default paper-hiera-s)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="model config overrides of the preset, e.g. --set num_queries=101")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.set)
    out, skipped = convert_release_checkpoint(args.checkpoint, args.out, preset=args.preset,
                                              **overrides)
    note = f"; not converted: {len(skipped)} tensor(s) (first {skipped[0]})" if skipped else ""
    print(f"wrote {out} (preset {args.preset}){note}")
    return 0
