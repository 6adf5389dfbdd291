"""`boltzformer presets`: list the model presets, their sizes and (optionally) CPU speed."""

from __future__ import annotations

import argparse

from boltzformer.apps.presets import preset_rows


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "presets",
        help="list model presets with parameter counts (and measured forward time)",
        description="List the model presets. With --time, build each one with random weights "
        "and measure the median forward time of one image on this machine.",
        epilog="example: boltzformer presets --time --threads 2",
    )
    p.add_argument("--time", action="store_true", help="measure forward time (slow for the "
                   "paper presets on a CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for row in preset_rows(timed=args.time, repeats=args.repeats, threads=args.threads,
                           device=args.device):
        print(row, flush=True)
    return 0
