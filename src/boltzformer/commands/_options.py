"""The integer-list option that the measuring commands (bench, latency, throughput) share."""

from __future__ import annotations

import argparse


def int_list(text: str) -> tuple[int, ...]:
    """An option's "256,512" -> (256, 512); anything else an argparse error."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 256,512, got {text!r}") from None
