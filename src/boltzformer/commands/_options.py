"""Pieces the measuring commands (bench, latency, throughput) share: integer-list options,
a progress bar that its callback labels, and writing a result as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm


def int_list(text: str) -> tuple[int, ...]:
    """An option's "256,512" -> (256, 512); anything else an argparse error."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 256,512, got {text!r}") from None


@contextmanager
def progress_bar(total: int, unit: str, quiet: bool) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr and the callback that labels and advances it."""
    with tqdm(total=total, disable=quiet, file=sys.stderr, unit=unit) as bar:
        def progress(label: str) -> None:
            bar.set_description(label)
            bar.update()

        yield progress


def write_json(path: Path | None, result: Any) -> None:
    """`result` as indented JSON at `path` (its folder made), said on stdout; None: nothing."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {path}")
