"""graphconv/files.py: replacing a file at once, and reading an untrusted file within a limit."""

from __future__ import annotations

import os

import pytest

from graphconv.errors import GraphconvError
from graphconv.files import read_bounded, replacing


def test_replacing_writes_whole_files_or_nothing(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"old")
    with replacing(path) as fh:
        fh.write(b"new contents")
    assert path.read_bytes() == b"new contents"
    with pytest.raises(RuntimeError):
        with replacing(path) as fh:
            fh.write(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"new contents" and sorted(os.listdir(tmp_path)) == ["w.bin"]


def test_read_bounded_checks_before_reading(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"12345")
    assert read_bounded(str(path), 5, "labels", GraphconvError) == b"12345"
    with pytest.raises(GraphconvError, match=r"labels '.*a.txt' is 5 bytes; labels files are limited to 4 bytes"):
        read_bounded(str(path), 4, "labels", GraphconvError)
    with pytest.raises(GraphconvError, match="is not a regular file"):
        read_bounded(str(tmp_path), 4, "labels", GraphconvError)
    with pytest.raises(GraphconvError, match="cannot read labels .*No such file"):
        read_bounded(str(tmp_path / "missing"), 4, "labels", GraphconvError)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(GraphconvError, match="is not a regular file"):
        read_bounded(str(fifo), 100, "image", GraphconvError)
