"""Pictures, specs and weights files for the imaging tests, all made in tmp_path (no binary files in the tree)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"

# class 1 ("bright") when the mean brightness m of the picture is above 0.5: logits (5 - 10 m, 10 m - 5), so
# p(bright) = sigmoid(20 m - 10), a known function of the picture
BRIGHT_SPEC = """\
# a brightness classifier with fixed weights: class 0 dark, class 1 bright
network bright {
  input image: f32[N, 1, 8, 8]
  logits = image -> global_avg_pool -> flatten -> dense(2, weight=[[-10], [10]], bias=[5, -5]) as fc
  output logits
}
"""

# the same, ending in softmax: its output already holds probabilities
BRIGHT_SOFTMAX_SPEC = """\
network bright_p {
  input image: f32[N, 3, 8, 8]
  probs = image -> global_avg_pool -> flatten
    -> dense(2, weight=[[-3, -3, -4], [3, 3, 4]], bias=[5, -5]) as fc -> softmax
  output probs
}
"""


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + np.exp(-z))


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def solid(tmp_path: Path, name: str, color, size=(16, 12), mode: str = "RGB", **save) -> str:
    """A one-colour picture of `size` (width, height) saved as `name` (the format from its suffix)."""
    path = tmp_path / name
    Image.new(mode, size, color).save(path, **save)
    return str(path)


def stripes(tmp_path: Path, name: str = "stripes.png", width: int = 200, height: int = 100) -> str:
    """Red on the left quarter, green in the middle half, blue on the right quarter."""
    a = np.zeros((height, width, 3), np.uint8)
    q = width // 4
    a[:, :q] = (255, 0, 0)
    a[:, q:width - q] = (0, 255, 0)
    a[:, width - q:] = (0, 0, 255)
    path = tmp_path / name
    Image.fromarray(a).save(path)
    return str(path)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(tmp_path: Path, name: str, width: int, height: int, color_type: int = 2) -> str:
    """A PNG whose header declares width x height pixels, with a few bytes of image data: a decompression bomb's
    shape (a real one would inflate a small IDAT to gigabytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def corrupt_png(tmp_path: Path, name: str = "corrupt.png") -> str:
    """A PNG with a valid signature and header whose image data is garbage."""
    a = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    good = tmp_path / "good-for-corrupt.png"
    Image.fromarray(a).save(good)
    data = bytearray(good.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start:start + 200] = b"\xff" * 200
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return str(path)


def labels_file(tmp_path: Path, names, name: str = "labels.txt") -> str:
    path = tmp_path / name
    path.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return str(path)


def lenet_weights(tmp_path: Path, name: str = "weights.npz", seed: int = 0) -> tuple[str, dict]:
    """lenet5's initial weights (seeded) saved as graphconv saves weights; returns (path, the arrays)."""
    from graphconv.spec import load_graph
    from graphconv.weights import init_weights, save_weights

    graph = load_graph(str(SPECS / "lenet5.gc"))
    weights = init_weights(graph, seed)
    path = tmp_path / name
    save_weights(path, weights)
    return str(path), weights
