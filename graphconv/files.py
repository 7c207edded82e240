"""Replacing a file at once: the new contents go to a temporary file in the same folder, which is renamed over the
target only when it is complete, so a crash or an error never leaves a half-written file (weights, checkpoints,
formatted specs).

    with replacing(path) as fh:            # binary; replacing(path, text=True) for text
        fh.write(data)
"""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

__all__ = ["replacing", "read_bounded"]


def read_bounded(path: str, limit: int, what: str, error: type[Exception]) -> bytes:
    """The bytes of the untrusted file at `path`, at most `limit` of them. Raises `error` with a one-line message
    naming `what` and the file when it is not a regular file (checked before opening it: opening a FIFO or a device
    could block), when it is larger than `limit` (checked before reading, and again while reading, as it may grow),
    or when it cannot be read."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} '{path}' is not a regular file")
        if st.st_size > limit:
            raise error(f"{what} '{path}' is {st.st_size:,} bytes; {what} files are limited to {limit:,} bytes")
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening it does not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise error(f"{what} '{path}' is not a regular file")
            data = fh.read(limit + 1)
    except OSError as e:
        raise error(f"cannot read {what} '{path}': {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{what} '{path}' is larger than {limit:,} bytes; {what} files are limited to {limit:,} bytes")
    return data


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
