"""Gradient of lrn (graphconv/ops/norm.py). With d_c = bias + alpha/size · Σ_{c' ∈ win(c)} x_c'² and
y_c = x_c · d_c^-beta, where win(c) = c - before .. c + after (before = floor((size-1)/2)):

    dx_j = dy_j · d_j^-beta - 2·alpha·beta/size · x_j · Σ_{c : j ∈ win(c)} dy_c · x_c · d_c^(-beta-1)

j ∈ win(c) exactly when c ∈ j - after .. j + before, so the second sum is the same channel-window sum with its two
sides swapped."""

from __future__ import annotations

import numpy as np

from ...errors import OpError
from ..schema import Attr, Float, Int, OpDef, expect_rank, register, same_dtype


def _sides(size: int) -> tuple[int, int]:
    """Channels before and after c in its window (ONNX LRN: the extra one of an even size goes after)."""
    before = (size - 1) // 2
    return before, size - 1 - before


def _channel_sum(a: np.ndarray, size: int, lo: int, hi: int) -> np.ndarray:
    """Σ over channels c - lo .. c + hi of a [N, C, H, W] (zeros beyond the channels)."""
    padded = np.pad(a, ((0, 0), (lo, hi), (0, 0), (0, 0)))
    return np.lib.stride_tricks.sliding_window_view(padded, size, axis=1).sum(axis=-1)


def _onnx_channel_sum(e, a: str, size: int, lo: int, hi: int) -> str:
    """ONNX `_channel_sum`: the channels as a depth axis [N, 1, C, H, W] and an all-ones size×1×1 Conv."""
    a5 = e.add_node("Unsqueeze", [a, e.ints([1], "axes")])
    s = e.add_node("Conv", [a5, e.const(np.ones((1, 1, size, 1, 1)), "ones")], kernel_shape=[size, 1, 1],
                   pads=[lo, 0, 0, hi, 0, 0])
    return e.add_node("Squeeze", [s, e.ints([1], "axes")])


@register
class LrnGrad(OpDef):
    name = "lrn_grad"
    training_only = True
    doc = ("gradient of lrn with respect to x: dy·d^-beta - 2·alpha·beta/size·x·Σ_window(dy·x·d^(-beta-1)), "
           "d = bias + alpha/size·Σ_window x² (the window transposed for the second sum)")
    inputs = ("dy", "x")
    attrs = (
        Attr("size", Int(min=1), 5, "channels in the window"),
        Attr("alpha", Float(min=0.0), 1e-4),
        Attr("beta", Float(), 0.75),
        Attr("bias", Float(min=0.0, min_exclusive=True), 1.0),
    )
    fusion = "opaque"

    def infer(self, attrs, in_types):
        dy, x = in_types
        expect_rank(self.name, x, 4, arg=1)
        same_dtype(self.name, in_types)
        if tuple(dy.shape) != tuple(x.shape):
            raise OpError(f"{self.name}: dy {dy} does not have the shape of x {x}", arg=0)
        return x

    def reference(self, attrs, xs, ps, ctx):
        dy, x = xs
        size, alpha, beta = attrs["size"], attrs["alpha"], attrs["beta"]
        before, after = _sides(size)
        d = attrs["bias"] + (alpha / size) * _channel_sum(x * x, size, before, after)
        t = _channel_sum(dy * x * d ** (-beta - 1.0), size, after, before)
        return (dy * d ** -beta - (2.0 * alpha * beta / size) * x * t).astype(x.dtype, copy=False)

    def to_onnx(self, node, e):
        a = node.attrs
        dy, x = (e.value(v) for v in node.inputs)
        size, alpha, beta = a["size"], a["alpha"], a["beta"]
        before, after = _sides(size)
        d = _onnx_channel_sum(e, e.add_node("Mul", [x, x]), size, before, after)
        d = e.add_node("Add", [e.add_node("Mul", [d, e.scalar(alpha / size, "alpha")]), e.scalar(a["bias"], "bias")])
        t = e.add_node("Mul", [e.add_node("Mul", [dy, x]), e.add_node("Pow", [d, e.scalar(-beta - 1.0, "beta_1")])])
        t = _onnx_channel_sum(e, t, size, after, before)
        first = e.add_node("Mul", [dy, e.add_node("Pow", [d, e.scalar(-beta, "neg_beta")])])
        second = e.add_node("Mul", [x, e.add_node("Mul", [t, e.scalar(2.0 * alpha * beta / size, "coef")])])
        e.add_node("Sub", [first, second], e.out(node))
