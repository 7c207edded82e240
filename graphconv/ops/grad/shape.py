"""Gradient ops of the shape family. Reshape, flatten, transpose and concat differentiate to forward ops (reshape
back, the inverse permutation, slices); slice and pad need their adjoints:

    dx = slice_grad(dy; axis, size, start, end, step)   # dy scattered into zeros of x's shape
    dx = pad_grad(dy; pads, mode)                       # the interior of dy, plus the border folded back onto
                                                        # the elements it copies (reflect, edge)
"""

from __future__ import annotations

import numpy as np

from ...errors import OpError
from ..schema import Attr, Enum, Int, OpDef, Pads, expect_rank, register
from ..shape import INT64_MIN


@register
class SliceGrad(OpDef):
    name = "slice_grad"
    training_only = True
    doc = ("gradient of slice: dy placed at the sliced positions of a zero tensor whose `axis` has `size` elements "
           "(start, end, step as slice stores them)")
    attrs = (
        Attr("axis", Int(min=1), doc="the sliced (non-negative) axis"),
        Attr("size", Int(min=1), doc="the length of that axis in the forward input"),
        Attr("start", Int(min=0), doc="first index taken"),
        Attr("end", Int(min=0), None, "index the slice stops before; none: past the last index in the step's direction", optional=True),
        Attr("step", Int(), 1, "stride between taken elements; not 0"),
    )
    fusion = "injective"

    def check_attr_combination(self, attrs):
        if attrs["step"] == 0:
            raise OpError("slice_grad: step must not be 0", attr="step")
        if attrs["start"] >= attrs["size"]:
            raise OpError(f"slice_grad: start {attrs['start']} is outside an axis of size {attrs['size']}",
                          attr="start")

    def infer(self, attrs, in_types):
        dy, axis, size = in_types[0], attrs["axis"], attrs["size"]
        if axis >= dy.rank:
            raise OpError(f"slice_grad: axis {axis} is out of range for {dy}", attr="axis")
        taken = len(range(*slice(attrs["start"], attrs["end"], attrs["step"]).indices(size)))
        if dy.shape[axis] != taken:
            raise OpError(f"slice_grad: the slice takes {taken} elements of {size} along axis {axis}, but dy {dy} "
                          f"has {dy.shape[axis]}", arg=0)
        return dy.with_shape(dy.shape[:axis] + (size,) + dy.shape[axis + 1:])

    def reference(self, attrs, xs, ps, ctx):
        dy, axis = xs[0], attrs["axis"]
        dx = np.zeros(dy.shape[:axis] + (attrs["size"],) + dy.shape[axis + 1:], dy.dtype)
        index = [slice(None)] * dy.ndim
        index[axis] = slice(attrs["start"], attrs["end"], attrs["step"])
        dx[tuple(index)] = dy
        return dx

    def to_onnx(self, node, e):
        a, t = node.attrs, node.inputs[0].type
        axis, start, step = a["axis"], a["start"], a["step"]
        n = int(t.shape[axis])
        g = e.value(node.inputs[0])
        axes = e.ints([axis], "axes")
        if step < 0:
            # reversed, the taken elements run forwards from the last one taken
            g = e.add_node("Slice", [g, e.ints([-1], "starts"), e.ints([INT64_MIN], "ends"), axes, e.ints([-1])])
            start, step = start + (n - 1) * step, -step
        extent = (n - 1) * step + 1
        if step > 1:
            # step - 1 zeros after each element: [.., n, ..] -> [.., n, step, ..] -> [.., n·step, ..], then cut the
            # zeros after the last element
            inner = e.ints([axis + 1], "inner")
            g = e.add_node("Pad", [e.add_node("Unsqueeze", [g, inner]), e.ints([0, step - 1], "pads"), "", inner])
            shape = [0] + [int(d) for d in t.shape[1:]]  # 0 keeps the batch dimension
            shape[axis] = n * step
            g = e.add_node("Reshape", [g, e.ints(shape, "shape")])
            g = e.add_node("Slice", [g, e.ints([0], "starts"), e.ints([extent], "ends"), axes])
        e.add_node("Pad", [g, e.ints([start, a["size"] - start - extent], "pads"), "", axes], e.out(node))


def _index(axis: int, s: slice) -> tuple:
    return (slice(None),) * axis + (s,)


def _fold(a: np.ndarray, axis: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """The adjoint of padding one axis by (lo, hi): the interior, plus each border element added onto the element
    it was copied from."""
    n = a.shape[axis] - lo - hi
    out = a[_index(axis, slice(lo, lo + n))].copy()
    before, after = a[_index(axis, slice(0, lo))], a[_index(axis, slice(lo + n, None))]
    if mode == "reflect":  # border element k away from the edge copies the element k away on the inside
        out[_index(axis, slice(1, lo + 1))] += np.flip(before, axis)
        out[_index(axis, slice(n - 1 - hi, n - 1))] += np.flip(after, axis)
    elif mode == "edge":  # every border element copies the edge element
        out[_index(axis, slice(0, 1))] += before.sum(axis=axis, keepdims=True)
        out[_index(axis, slice(n - 1, n))] += after.sum(axis=axis, keepdims=True)
    return out


def _onnx_fold(e, g: str, axis: int, lo: int, hi: int, n: int, mode: str) -> str:
    """ONNX of `_fold`: each border part moved to its place by a zero Pad, then added."""
    axes = e.ints([axis], "axes")

    def part(start: int, end: int, step: int = 1) -> str:
        return e.add_node("Slice", [g, e.ints([start], "starts"), e.ints([end], "ends"), axes, e.ints([step])])

    def placed(x: str, before: int, after: int) -> str:
        return e.add_node("Pad", [x, e.ints([before, after], "pads"), "", axes])

    out = part(lo, lo + n)
    if mode == "reflect":
        if lo:
            out = e.add_node("Add", [out, placed(part(lo - 1, INT64_MIN, -1), 1, n - 1 - lo)])
        if hi:
            out = e.add_node("Add", [out, placed(part(-1, lo + n - 1, -1), n - 1 - hi, 1)])
    elif mode == "edge":
        for size, start, before in ((lo, 0, 0), (hi, lo + n, n - 1)):
            if size:
                total = e.add_node("ReduceSum", [part(start, start + size), axes], keepdims=1)
                out = e.add_node("Add", [out, placed(total, before, n - 1 - before)])
    return out


@register
class PadGrad(OpDef):
    name = "pad_grad"
    training_only = True
    doc = ("gradient of pad on [N, C, H, W]: the interior of dy; reflect and edge also add each padded element onto "
           "the element it copies")
    attrs = (
        Attr("pads", Pads(), doc="the forward pads [top, left, bottom, right]"),
        Attr("mode", Enum("constant", "reflect", "edge"), "constant"),
    )
    fusion = "opaque"

    def infer(self, attrs, in_types):
        dy = in_types[0]
        expect_rank(self.name, dy, 4)
        top, left, bottom, right = attrs["pads"]
        h, w = int(dy.shape[2]) - top - bottom, int(dy.shape[3]) - left - right
        if h < 1 or w < 1:
            raise OpError(f"pad_grad: pads {list(attrs['pads'])} leave nothing of dy {dy}", attr="pads")
        if attrs["mode"] == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
            raise OpError(f"pad_grad: reflect pads {list(attrs['pads'])} must be smaller than the unpadded size "
                          f"{h}×{w}", attr="pads")
        return dy.with_shape(dy.shape[:2] + (h, w))

    def reference(self, attrs, xs, ps, ctx):
        top, left, bottom, right = attrs["pads"]
        g = _fold(xs[0], 2, top, bottom, attrs["mode"])
        return _fold(g, 3, left, right, attrs["mode"])

    def to_onnx(self, node, e):
        top, left, bottom, right = node.attrs["pads"]
        t, mode = node.output.type, node.attrs["mode"]
        g = _onnx_fold(e, e.value(node.inputs[0]), 2, top, bottom, int(t.shape[2]), mode)
        g = _onnx_fold(e, g, 3, left, right, int(t.shape[3]), mode)
        e.add_node("Identity", [g], e.out(node))
