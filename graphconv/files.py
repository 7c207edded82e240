"""Replacing a file at once: the new contents go to a temporary file in the same folder, which is renamed over the
target only when it is complete, so a crash or an error never leaves a half-written file (weights, checkpoints,
formatted specs).

    with replacing(path) as fh:            # binary; replacing(path, text=True) for text
        fh.write(data)
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

__all__ = ["replacing"]


@contextmanager
def replacing(path: str | os.PathLike, *, text: bool = False, sync: bool = False,
              before_rename: Callable[[Path], None] | None = None) -> Iterator[IO]:
    """An open temporary file next to `path`. When the block ends normally the file is closed (and with `sync`
    flushed to disk), `before_rename(temporary path)` runs (e.g. to set permissions), and it is renamed over `path`;
    when the block raises, the temporary file is removed and `path` is left as it was."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with (os.fdopen(fd, "w", encoding="utf-8", newline="\n") if text else os.fdopen(fd, "wb")) as fh:
            yield fh
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
