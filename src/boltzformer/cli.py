"""The `boltzformer` command line: a few verbs, each in `boltzformer.commands.<verb>`.

Each command module defines `add_parser(subparsers)` (registers its verb, arguments and help)
and `run(args) -> int`. The parser is built from every command module, so `--help` imports
them all, and torch with them: a command module imports what it needs at its top (the one
exception, `serve`, imports the web app in `run` because gradio is an optional extra).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Verbs in the order `--help` lists them; each names a module in boltzformer.commands (with
# "_" for "-"), unless MODULES names another.
COMMANDS: tuple[str, ...] = (
    "demo", "synth", "convert", "train", "calibrate", "evaluate", "predict", "visualize",
    "serve", "push-to-hub", "study", "bench", "throughput", "latency", "presets",
    "convert-release",
)
# `convert` (data sets) lives in convert_data, beside convert_release (model weights).
MODULES: dict[str, str] = {"convert": "convert_data"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boltzformer",
        description="BoltzFormer: find and segment small objects from a text prompt.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module_name = MODULES.get(name, name.replace("-", "_"))
        module = importlib.import_module(f"boltzformer.commands.{module_name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"boltzformer {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
