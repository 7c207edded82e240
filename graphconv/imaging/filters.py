"""The learned kernels of a convolution as a picture (`graphconv filters`).

Which arrays are convolution kernels: with a spec, the `weight` of every conv2d and conv_transpose2d node (fixed
kernels written in the spec, such as Sobel's, come from the spec when the file leaves them out); without one, every
rank-4 array of the file, its layer named by the array name without `.weight`. A layer is found by its name (`c1`)
or its array's (`c1.weight`).

How a kernel [O, I, kh, kw] is drawn (`channels`):
- "rgb": each of the O filters as one colour tile, its 3 input channels as red, green and blue (first layers of
  RGB networks: AlexNet's 64 filters of 3×11×11);
- "all": each (filter, input channel) slice as a gray tile, one row of I tiles per filter (a single input channel:
  the O tiles in the squarest grid);
- "mean": each filter as one gray tile, the mean of its I slices;
- "auto" (the default): "rgb" when I = 3, else "all" when O·I <= ALL_TILES_LIMIT, else "mean".
A transposed convolution's kernel is [in, out/groups, kh, kw]: drawn the same way, a tile per input channel. A
kernel with a dimension of 0 has nothing to draw and is refused, as is a grid larger than MAX_SIDE pixels a side
even at one pixel per weight (the error suggests --channels mean only when that would fit).

Values map to brightness symmetrically around zero: v -> 0.5 + 0.5 v / m, where m is the largest |v| of the
filter (`scale="filter"`, the default: every filter uses the full contrast) or of the whole layer ("layer":
filters compare with each other). So a zero weight is always mid-gray (in RGB, gray), positive is brighter and
negative darker, and the sign of a lobe can be read off the picture, which a min-max stretch would hide. Tiles are
magnified by nearest neighbour (default: to about 64 pixels a side) with a 1-pixel dark blue gap (no gray
weight has its colour, so neighbouring tiles never merge).

Weights files are untrusted: the archive and every array header are checked as graphconv/weights.py checks them
(no pickle, member count, compression, sizes) and only the chosen array is read.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GraphconvError, WeightsError, did_you_mean
from .grid import gray, grid_shape, grid_size, tile_grid, to_bytes

__all__ = ["Kernel", "FilterGrid", "conv_kernels", "find_kernel", "read_kernel", "draw_filters", "CONV_OPS",
           "ALL_TILES_LIMIT", "MAX_SIDE", "GAP_COLOR"]

CONV_OPS = ("conv2d", "conv_transpose2d")
ALL_TILES_LIMIT = 1024  # "auto" draws every (filter, input) slice up to this many tiles, else the mean per filter
TILE_PIXELS = 64  # default magnification: kernels become about this many pixels a side
MAX_SIDE = 8192  # pixels a side of a filter picture; the magnification shrinks to fit
GAP_COLOR = (30, 60, 110)  # between tiles: a dark blue no gray weight takes, so tiles never merge


@dataclass(frozen=True)
class Kernel:
    """A convolution kernel in a weights file: its layer, array name, shape, and (with a spec) op and groups."""

    layer: str
    array: str
    shape: tuple[int, ...]
    op: str | None = None
    groups: int | None = None
    fixed: np.ndarray | None = None  # a kernel written in the spec and left out of the file

    def describe(self) -> str:
        """E.g. "conv2d c1: 6 filters of 1×5×5"."""
        o, i, kh, kw = self.shape
        what = f"{self.op} " if self.op else ""
        groups = f", groups {self.groups}" if self.groups and self.groups > 1 else ""
        return f"{what}{self.layer}: {o} filters of {i}×{kh}×{kw}{groups}"


@dataclass
class FilterGrid:
    """A drawn kernel: the picture (RGB bytes), its grid and how it was made."""

    image: np.ndarray
    rows: int
    cols: int
    tiles: int
    channels: str  # "rgb", "all" or "mean"
    scale: str
    zoom: int


# -- the weights file ------------------------------------------------------------------------------------------------

def _resolve_file(path: str) -> str:
    """A run directory of graphconv train stands for its weights.npz."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "weights.npz")):
        return os.path.join(path, "weights.npz")
    return path


def _catalog(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape, dtype) of every array in the .npz file, from the headers only (checked as weights.py does)."""
    from ..weights import (MAX_FILE_BYTES, ArchiveProblem, npy_header, npy_size_problem, npz_members)

    try:
        if not os.path.isfile(path):
            raise WeightsError(f"weights '{path}' is not a file" if os.path.exists(path)
                               else f"weights '{path}' does not exist")
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise WeightsError(f"weights '{path}' is {size:,} bytes; weights files are limited to "
                               f"{MAX_FILE_BYTES:,} bytes")
        with zipfile.ZipFile(path) as zf:
            members, problems = npz_members(zf, size)
            out = {}
            for name, info in members.items():
                try:
                    shape, dtype, header_len = npy_header(zf, info)
                except ArchiveProblem as e:
                    problems.append(f"'{name}' {e}")
                    continue
                bad = npy_size_problem(info, header_len, math.prod(shape), dtype)
                if bad:
                    problems.append(f"'{name}' {bad}")
                    continue
                out[name] = (shape, dtype)
    except ArchiveProblem as e:
        raise WeightsError(f"bad weights file '{path}': {e}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        raise WeightsError(f"'{path}' is not a valid .npz file (not a zip archive, or truncated): {e}") from None
    except OSError as e:
        raise WeightsError(f"cannot read weights '{path}': {e.strerror or e}") from None
    if problems:
        raise WeightsError(f"bad weights file '{path}': " + "; ".join(problems))
    return out


def _read_array(path: str, name: str) -> np.ndarray:
    from numpy.lib import format as npformat

    from ..weights import MAX_HEADER_BYTES

    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as fp:
            arr = npformat.read_array(fp, allow_pickle=False, max_header_size=MAX_HEADER_BYTES)
    except (ValueError, EOFError, OSError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise WeightsError(f"'{name}' in '{path}' cannot be read (corrupt or truncated): {e}") from None
    arr = np.asarray(arr, np.float64)
    if not np.all(np.isfinite(arr)):
        raise WeightsError(f"'{name}' in '{path}' contains NaN or infinite values")
    return arr


def conv_kernels(path: str | os.PathLike, graph: Any = None) -> tuple[dict[str, Kernel], dict[str, str]]:
    """(the convolution kernels of the weights file at `path` by layer name, the other layers with a weight:
    layer name -> what it is, for error messages). With `graph` (a spec's Graph), its conv nodes decide what is a
    kernel. Raises WeightsError for an unreadable or unsafe file."""
    path = _resolve_file(os.fspath(path))
    catalog = _catalog(path)
    kernels: dict[str, Kernel] = {}
    others: dict[str, str] = {}
    if graph is None:
        for name, (shape, _dtype) in catalog.items():
            layer = name[:-len(".weight")] if name.endswith(".weight") else name
            if len(shape) == 4:
                kernels[layer] = Kernel(layer, name, tuple(int(d) for d in shape))
            elif name.endswith(".weight"):
                kind = "a dense layer's weight" if len(shape) == 2 else f"a rank-{len(shape)} weight"
                others[layer] = f"{kind} {list(shape)}"
        return kernels, others
    for node in graph.nodes:
        w = node.params.get("weight")
        if w is None:
            continue
        param = graph.params[w.name]
        shape = tuple(int(d) for d in w.type.shape)
        if node.op not in CONV_OPS:
            others[node.name] = f"a {node.op} layer's weight {list(shape)}"
            continue
        fixed = None
        if w.name in catalog:
            got = tuple(int(d) for d in catalog[w.name][0])
            if got != shape:
                raise WeightsError(f"'{w.name}' in '{path}' has shape {list(got)}; {graph.name} expects "
                                   f"{list(shape)}")
        elif param.data is not None:
            fixed = np.asarray(param.data, np.float64).reshape(shape)
        else:
            continue  # not in this file
        kernels[node.name] = Kernel(node.name, w.name, shape, node.op, int(node.attrs.get("groups", 1)), fixed)
    return kernels, others


def find_kernel(kernels: dict[str, Kernel], others: dict[str, str], layer: str | None, path: str) -> Kernel:
    """The kernel of `layer` (a layer or array name). Raises GraphconvError naming the convolution layers (with a
    did-you-mean) when it is missing, unknown or not a convolution."""
    listing = ", ".join(kernels) if kernels else "none"
    if layer is None:
        raise GraphconvError(f"give --layer NAME; the convolution layers in '{path}': {listing}")
    name = layer[:-len(".weight")] if layer.endswith(".weight") and layer not in kernels else layer
    if name in kernels:
        return kernels[name]
    if name in others:
        raise GraphconvError(f"layer '{name}' is not a convolution ({others[name]}); filters are drawn for "
                             f"convolution layers: {listing}")
    hint = did_you_mean(name, kernels)
    raise GraphconvError(f"no convolution layer '{layer}' in '{path}'" + (f" ({hint})" if hint else "")
                         + f"; the convolution layers: {listing}")


def read_kernel(path: str | os.PathLike, kernel: Kernel) -> np.ndarray:
    """The kernel's values as float64 [O, I, kh, kw] (from the spec for a fixed kernel left out of the file)."""
    if kernel.fixed is not None:
        return kernel.fixed
    arr = _read_array(_resolve_file(os.fspath(path)), kernel.array)
    if arr.shape != kernel.shape:  # pragma: no cover - the header said otherwise
        raise WeightsError(f"'{kernel.array}' has shape {list(arr.shape)}; its header said {list(kernel.shape)}")
    return arr


# -- drawing ---------------------------------------------------------------------------------------------------------

def _symmetric(values: np.ndarray, axes: tuple[int, ...] | None) -> np.ndarray:
    """0.5 + 0.5 v / max|v| over `axes` (all of them when None); 0.5 where that maximum is 0."""
    m = np.max(np.abs(values), axis=axes, keepdims=True) if axes else np.max(np.abs(values))
    m = np.where(m > 0, m, 1.0)
    return 0.5 + 0.5 * values / m


def choose_channels(shape: tuple[int, ...], channels: str = "auto") -> str:
    """The drawing ("rgb", "all" or "mean") that `channels` means for a kernel of `shape`."""
    o, i = shape[0], shape[1]
    if channels == "auto":
        return "rgb" if i == 3 else "all" if o * i <= ALL_TILES_LIMIT else "mean"
    if channels == "rgb" and i != 3:
        raise GraphconvError(f"--channels rgb needs 3 input channels; this kernel has {i} ({list(shape)}); use "
                             f"--channels all or mean")
    if channels not in ("rgb", "all", "mean"):
        raise GraphconvError(f"--channels: expected auto, rgb, all or mean, got {channels!r}")
    return channels


def _fits(rows: int, cols: int, kh: int, kw: int, gap: int) -> bool:
    """Whether rows x cols tiles of kh x kw fit in MAX_SIDE a side at one pixel per weight."""
    height, width = grid_size(rows, cols, kh, kw, 1, gap)
    return max(height, width) <= MAX_SIDE


def _too_large(n: int, rows: int, cols: int, kh: int, kw: int, filters: int, mode: str, gap: int) -> str:
    """Why a grid does not fit in MAX_SIDE pixels a side, and what (if anything) would draw it."""
    height, width = grid_size(rows, cols, kh, kw, 1, gap)
    size = f"{width:,}×{height:,} pixels, more than {MAX_SIDE:,} a side"
    if n == 1 or not _fits(1, 1, kh, kw, gap):
        return (f"a {kh}×{kw} kernel slice makes a picture of at least {max(kh, kw) + 2 * gap:,} pixels a side "
                f"even at one pixel per weight, more than {MAX_SIDE:,}: filters cannot draw it")
    what = f"{n:,} tiles of {kh}×{kw} in {rows}×{cols} make a picture of {size}"
    if mode != "mean" and n > filters and _fits(*grid_shape(filters), kh, kw, gap):
        return f"{what}; use --channels mean (one tile per filter: {filters:,} tiles)"
    return f"{what}: filters cannot draw this layer"


def draw_filters(w: np.ndarray, channels: str = "auto", scale: str = "filter", zoom: int | None = None,
                 gap: int = 1) -> FilterGrid:
    """The kernel `w` [O, I, kh, kw] as a grid picture (see the module docstring). `zoom` defaults to about
    TILE_PIXELS per tile, and shrinks when the picture would be wider or taller than MAX_SIDE pixels."""
    w = np.asarray(w, np.float64)
    if w.ndim != 4:
        raise GraphconvError(f"a convolution kernel is [out, in, kh, kw]; got shape {list(w.shape)}")
    if scale not in ("filter", "layer"):
        raise GraphconvError(f"--scale: expected filter or layer, got {scale!r}")
    if w.size == 0:
        raise GraphconvError(f"the kernel {list(w.shape)} has no weights (a dimension is 0): nothing to draw")
    mode = choose_channels(w.shape, channels)
    o, i, kh, kw = w.shape
    per_filter = scale == "filter"
    cols: int | None = None
    if mode == "rgb":
        v = _symmetric(w, (1, 2, 3) if per_filter else None)
        tiles = to_bytes(np.transpose(v, (0, 2, 3, 1)))
    elif mode == "mean":
        m = w.mean(axis=1)
        tiles = gray(_symmetric(m, (1, 2) if per_filter else None))
    else:
        v = _symmetric(w, (1, 2, 3) if per_filter else None)
        tiles = gray(v.reshape(o * i, kh, kw))
        cols = i if i > 1 else None
    n = tiles.shape[0]
    rows, ncols = grid_shape(n, cols)
    want = zoom if zoom is not None else max(1, math.ceil(TILE_PIXELS / max(kh, kw)))
    fit = min((MAX_SIDE - (rows + 1) * gap) // (rows * kh), (MAX_SIDE - (ncols + 1) * gap) // (ncols * kw))
    if fit < 1:
        raise GraphconvError(_too_large(n, rows, ncols, kh, kw, o, mode, gap))
    z = max(1, min(int(want), fit))
    image = tile_grid(tiles, cols=ncols, zoom=z, gap=gap, background=GAP_COLOR)
    return FilterGrid(image, rows, ncols, n, mode, scale, z)
