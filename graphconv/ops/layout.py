"""Blocked channel layout: NCHW{b}c keeps b consecutive channels of a pixel together ([N, C/b, H, W, b]), so one
AVX-512 register (16 floats) holds 16 channels of one pixel. `to_blocked` and `from_blocked` convert; the optimizer's
assign_layout pass places them at the edges of the region a backend runs blocked. A node whose `layout`
attribute is b reads and writes that layout (see graphconv/ops/epilogue.py); its weights are packed by its op's
`pack_param` hook."""

from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..ir.graph import TensorType
from .schema import Attr, Int, OpDef, expect_rank, register


def blocked_type(t: TensorType, b: int) -> TensorType:
    n, c, h, w = t.shape
    return TensorType((n, int(c) // b, h, w, b), t.dtype)


def plain_type(t: TensorType) -> TensorType:
    n, cb, h, w, b = t.shape
    return TensorType((n, int(cb) * int(b), h, w), t.dtype)


def block(x: np.ndarray, b: int) -> np.ndarray:
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // b, b, h, w).transpose(0, 1, 3, 4, 2))


def unblock(x: np.ndarray) -> np.ndarray:
    n, cb, h, w, b = x.shape
    return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3).reshape(n, cb * b, h, w))


class LayoutConversion(OpDef):
    """Between the plain and the blocked layout: pure data movement."""

    attrs = (Attr("block", Int(min=1, max=64), 16, "channels per block"),)
    fusion = "injective"


@register
class ToBlocked(LayoutConversion):
    name = "to_blocked"
    doc = "[N, C, H, W] -> [N, C/block, H, W, block] (NCHW{block}c); C must be a multiple of block"

    def infer(self, attrs, in_types):
        x = in_types[0]
        expect_rank(self.name, x, 4)
        if int(x.shape[1]) % attrs["block"]:
            raise OpError(f"to_blocked: {x} has {x.shape[1]} channels, not a multiple of the block "
                          f"{attrs['block']}", attr="block")
        return blocked_type(x, attrs["block"])

    def reference(self, attrs, xs, ps, ctx):
        return block(xs[0], attrs["block"])

    def to_onnx(self, node, e):
        _, c, h, w = node.inputs[0].type.shape
        b = node.attrs["block"]
        y = e.add_node("Reshape", [e.value(node.inputs[0]), e.ints([0, int(c) // b, b, h, w], "shape")])
        e.add_node("Transpose", [y], e.out(node), perm=[0, 1, 3, 4, 2])


@register
class FromBlocked(LayoutConversion):
    name = "from_blocked"
    doc = "[N, C/block, H, W, block] (NCHW{block}c) -> [N, C, H, W]"

    def infer(self, attrs, in_types):
        x = in_types[0]
        expect_rank(self.name, x, 5)
        if x.shape[4] != attrs["block"]:
            raise OpError(f"from_blocked: {x} is not in blocks of {attrs['block']} channels", attr="block")
        return plain_type(x)

    def reference(self, attrs, xs, ps, ctx):
        return unblock(xs[0])

    def to_onnx(self, node, e):
        _, cb, h, w, b = node.inputs[0].type.shape
        y = e.add_node("Transpose", [e.value(node.inputs[0])], perm=[0, 1, 4, 2, 3])
        e.add_node("Reshape", [y, e.ints([0, int(cb) * int(b), h, w], "shape")], e.out(node))
