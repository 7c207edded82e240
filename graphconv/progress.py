"""Progress of long work (compiling a big model) on standard error.

The library stays silent by default; the command line turns progress on (`enable(True)`), and tqdm then draws bars
only when standard error is a terminal, so pipes, logs and `--json` output stay clean.

    for node in progress.iterate(nodes, "generating kernels"): ...
    with progress.stage("LLVM: optimizing and emitting machine code"): ...
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

__all__ = ["enable", "enabled", "iterate", "stage"]

T = TypeVar("T")

_enabled = False


def enable(on: bool = True) -> None:
    """Show progress (from the command line) or not (the default for the library)."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    """Whether progress is shown: enabled and standard error is a terminal."""
    return _enabled and _is_terminal()


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def iterate(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items`, with a progress bar while they are consumed when progress is shown."""
    if not enabled():
        yield from items
        return
    from tqdm import tqdm

    with tqdm(items, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr) as bar:
        yield from bar


@contextmanager
def stage(desc: str) -> Iterator[None]:
    """A step without a count: its name while it runs, then its time (when progress is shown)."""
    if not enabled():
        yield
        return
    t0 = time.perf_counter()
    print(f"{desc}...", end="", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
