"""The activations of a network's layers on one picture, as grids of tiles (`graphconv featuremaps`).

The network runs on the reference executor, on a copy of its graph whose outputs also name the chosen layers (the
executor keeps graph outputs alive and returns them; nothing in graphconv/reference changes). Default layers:
every conv2d, conv_transpose2d and window pooling (max, average, Lp) whose output is [N, C, H, W], the first
MAX_DEFAULT_LAYERS of them; any layer with a rank-4 output can be named instead (a relu, a residual add...).

Each layer is a section: a caption (name, op, C×H×W, the range of its values, which channels are shown) over a
grid of its first `max_channels` channels, one tile each, in the squarest grid. Each channel is scaled to its own
min..max (so a weak channel is as visible as a strong one; the caption gives the layer's real range) and coloured
with viridis (dark violet low, yellow high) or grayscale; a constant channel is drawn at the low end. Tiles are
magnified by nearest neighbour to about MAP_PIXELS a side (small maps) with a 1-pixel gap: white between viridis
tiles, dark blue between gray ones (as between filters).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import GraphconvError, did_you_mean
from .filters import GAP_COLOR
from .grid import PAGE, captioned, gray, grid_shape, tile_grid, to_bytes, viridis

__all__ = ["Activation", "default_layers", "map_layers", "capture", "draw_activation", "draw_picture",
           "MAP_OPS", "MAX_DEFAULT_LAYERS", "MAP_PIXELS"]

MAP_OPS = ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "lp_pool2d")
MAX_DEFAULT_LAYERS = 16
MAP_PIXELS = 64  # small maps are magnified to about this many pixels a side
_PREFIX = "\x00featuremap:"  # names of the extra outputs: never a spec's output name


@dataclass
class Activation:
    """One layer's output on the picture: [C, H, W] of the first (only) sample."""

    layer: str
    op: str
    values: np.ndarray


def map_layers(graph: Any) -> list[Any]:
    """Every node whose output is [N, C, H, W], in graph order: the layers featuremaps can draw."""
    return [n for n in graph.nodes if n.output.type.rank == 4]


def default_layers(graph: Any, limit: int = MAX_DEFAULT_LAYERS) -> tuple[list[Any], int]:
    """(the first `limit` convolution and pooling layers with a rank-4 output, how many there are in all)."""
    nodes = [n for n in map_layers(graph) if n.op in MAP_OPS]
    return nodes[:limit], len(nodes)


def chosen_layers(graph: Any, names: Sequence[str]) -> list[Any]:
    """The nodes named `names` (each once, in the order given). Raises GraphconvError for an unknown layer (with a
    did-you-mean and the layers that can be drawn) or one whose output is not [N, C, H, W]."""
    drawable = {n.name: n for n in map_layers(graph)}
    by_name = {n.name: n for n in graph.nodes}
    out, seen = [], set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        if name in drawable:
            out.append(drawable[name])
            continue
        if name in by_name:
            t = by_name[name].output.type
            raise GraphconvError(f"layer '{name}' ({by_name[name].op}) has output {t}; feature maps need a "
                                 f"[N, C, H, W] output")
        hint = did_you_mean(name, drawable)
        shown = [n for n, node in drawable.items() if node.op in MAP_OPS]
        listing = ", ".join(shown[:40]) + (f", ... ({len(shown)} in all)" if len(shown) > 40 else "")
        others = len(drawable) - len(shown)
        raise GraphconvError(f"{graph.name} has no layer '{name}'" + (f" ({hint})" if hint else "")
                             + f"; its convolutions and poolings: {listing or 'none'}"
                             + (f" (and {others} other layers with [N, C, H, W] outputs: see graphconv summary)"
                                if others else ""))
    return out


def capture(graph: Any, weights: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray],
            nodes: Sequence[Any], dtype: str = "float32") -> list[Activation]:
    """Run `graph` on `inputs` (batch 1) with the reference executor and return the outputs of `nodes`."""
    from ..reference.executor import run_graph

    g = copy.copy(graph)  # a shallow copy: the same nodes and values, outputs of its own
    g.outputs = dict(graph.outputs)
    for n in nodes:
        g.outputs[_PREFIX + n.name] = n.output
    outs = run_graph(g, inputs, weights, dtype=dtype)
    return [Activation(n.name, n.op, np.asarray(outs[_PREFIX + n.name][0])) for n in nodes]


def _zoom(h: int, w: int) -> int:
    return max(1, round(MAP_PIXELS / max(h, w)))


def _scaled(values: np.ndarray) -> np.ndarray:
    """Each channel of [C, H, W] to [0, 1] by its own min..max (a constant channel to 0)."""
    v = np.asarray(values, np.float64)
    v = np.where(np.isfinite(v), v, 0.0)
    lo = v.min(axis=(1, 2), keepdims=True)
    span = v.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (v - lo) / np.where(span > 0, span, 1.0), 0.0)


def draw_activation(act: Activation, max_channels: int = 32, colormap: str = "viridis") -> np.ndarray:
    """The captioned grid of one layer's channels (RGB bytes)."""
    c, h, w = act.values.shape
    k = min(c, max_channels)
    v = _scaled(act.values[:k])
    tiles = viridis(v) if colormap == "viridis" else gray(v)
    rows, cols = grid_shape(k)
    finite = act.values[np.isfinite(act.values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"), float("nan"))
    shown = f"channels 0-{k - 1} of {c}" if k < c else f"{c} channel{'s' if c != 1 else ''}"
    lines = [f"{act.layer}  ({act.op})  {c}×{h}×{w}", f"{shown}; values {lo:.4g} .. {hi:.4g}"]
    gap = PAGE if colormap == "viridis" else GAP_COLOR  # white would merge with the white of a gray map
    return captioned(tile_grid(tiles, cols=cols, zoom=_zoom(h, w), background=gap), lines)


def draw_picture(raw: np.ndarray, caption: Sequence[str]) -> np.ndarray:
    """The network's input picture [C, H, W] in [0, 1] (before normalization) as one tile under `caption` (lines)."""
    c, h, w = raw.shape
    tile = to_bytes(np.transpose(raw, (1, 2, 0))) if c == 3 else gray(raw[0])
    return captioned(tile_grid(tile[None], zoom=_zoom(h, w)), list(caption))

