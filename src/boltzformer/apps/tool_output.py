"""What the measuring tools (bench, latency, throughput) show and keep: a progress bar on
stderr that its callback labels, and a result written as JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm


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
