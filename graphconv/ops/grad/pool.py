"""Gradients of the pools (graphconv/ops/pool.py). Each sends the incoming gradient of every window's output back to
the input positions of that window; where windows overlap the contributions add up.

    max_window_grad(dy, x)     max_pool2d, window_reduce(max), global_max_pool: all to the window's first maximum
    avg_window_grad(dy)        avg_pool2d: dy / divisor to each position of the window
    sum_window_grad(dy)        window_reduce(sum): dy to each position of the window
    lp_window_grad(dy, x, y)   lp_pool2d: dy · y^(1-p) · |x|^(p-1) · sign(x)
    global_avg_grad(dy)        global_avg_pool, reduce_mean: dy / (H·W) everywhere

The windows are the forward op's (`WindowGeometry`), the ceil_mode overhang included, so padding positions and the
overhang receive nothing that reaches the input. None of these names contains "pool": they are not pools.
"""

from __future__ import annotations

import numpy as np

from ...errors import OpError
from ...ir.graph import TensorType
from ..pool import CEIL_MODE, DILATION, KERNEL, WindowGeometry
from ..schema import REGISTRY, Attr, Bool, Float, Ints, OpDef, Pads, expect_rank, register, same_dtype

STRIDE = Attr("stride", Ints(2), doc="the forward op's resolved stride")
PADS = Attr("padding", Pads(), (0, 0, 0, 0), "the forward op's resolved padding [top, left, bottom, right]")
INPUT_SIZE = Attr("input_size", Ints(2), doc="[H, W] of the pooled input: the size of the gradient")


class WindowGrad(WindowGeometry, OpDef):
    """A gradient op over the windows of a pool. `dy` is input 0; the pooled input's size comes from input `x`
    (position `x_arg`) or from the attribute `input_size`."""

    fusion = "opaque"
    x_arg: int | None = None

    def input_hw(self, attrs, in_types) -> tuple[int, int]:
        if self.x_arg is None:
            return attrs["input_size"]
        x = in_types[self.x_arg]
        return int(x.shape[2]), int(x.shape[3])

    def infer(self, attrs, in_types):
        dy = in_types[0]
        expect_rank(self.name, dy, 4, arg=0)
        for i, t in enumerate(in_types[1:], 1):
            expect_rank(self.name, t, 4, arg=i)
        same_dtype(self.name, in_types)
        h, w = self.input_hw(attrs, in_types)
        eh, ew = self._extent(attrs)
        top, left, bottom, right = attrs["padding"]
        if max(top, bottom) > eh // 2 or max(left, right) > ew // 2:
            raise OpError(f"{self.name}: padding {list(attrs['padding'])} is more than half the {eh}×{ew} window",
                          attr="padding")
        oh, ow = self._out_hw(attrs, h, w)
        if oh < 1 or ow < 1:
            raise OpError(f"{self.name}: the {eh}×{ew} window does not fit a padded {h}×{w} input")
        if self.x_arg is not None:
            x = in_types[self.x_arg]
            if tuple(dy.shape[:2]) != tuple(x.shape[:2]):
                raise OpError(f"{self.name}: dy {dy} and x {x} differ in batch or channels", arg=0)
        if tuple(dy.shape[2:]) != (oh, ow):
            raise OpError(f"{self.name}: dy {dy} is not the pooled shape of a {h}×{w} input; its windows give "
                          f"{oh}×{ow}", arg=0)
        return TensorType((dy.shape[0], dy.shape[1], h, w), dy.dtype)

    # -- numpy ---------------------------------------------------------------------------------------------------
    def spread(self, attrs, g: np.ndarray, hw: tuple[int, int], pick: np.ndarray | None = None) -> np.ndarray:
        """The transpose of the window sum: g[n, c, i, j] added to each position of window (i, j), or only to
        tap `pick[n, c, i, j]` (row-major within the window) when given; the padding is cropped off."""
        (h, w), (n, c, oh, ow) = hw, g.shape
        (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], self._dilation(attrs)
        top, left, bottom, right = self.overhang_pads(attrs, h, w)
        out = np.zeros((n, c, h + top + bottom, w + left + right), g.dtype)
        for i in range(kh):
            for j in range(kw):
                # tap (i, j) of every window: a strided grid of distinct positions, so += never collides
                tap = g if pick is None else np.where(pick == i * kw + j, g, 0)
                out[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw] += tap
        return out[:, :, top:top + h, left:left + w]

    # -- ONNX ----------------------------------------------------------------------------------------------------
    def onnx_spread(self, attrs, e, g: str, c: int, hw: tuple[int, int], out: str | None = None) -> str:
        """ONNX `spread` (without pick): a depthwise all-ones ConvTranspose gives the full padded extent, which is
        zero-extended where the floor rule left input rows or columns outside every window, then cropped."""
        h, w = hw
        (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], self._dilation(attrs)
        (eh, ew), (oh, ow) = self._extent(attrs), self._out_hw(attrs, h, w)
        top, left = attrs["padding"][:2]
        full = e.add_node("ConvTranspose", [g, e.const(np.ones((c, 1, kh, kw)), "ones")], kernel_shape=[kh, kw],
                          strides=[sh, sw], dilations=[dh, dw], group=c)
        more_h, more_w = max(top + h - ((oh - 1) * sh + eh), 0), max(left + w - ((ow - 1) * sw + ew), 0)
        if more_h or more_w:
            full = e.add_node("Pad", [full, e.ints([0, 0, more_h, more_w], "pads"), "", e.ints([2, 3], "axes")])
        return e.add_node("Slice", [full, e.ints([top, left], "starts"), e.ints([top + h, left + w], "ends"),
                                    e.ints([2, 3], "axes")], out)


@register
class MaxWindowGrad(WindowGrad):
    name = "max_window_grad"
    training_only = True
    doc = ("gradient of max_pool2d (and window_reduce max, global_max_pool) with respect to x: each dy goes to the "
           "first maximum of its window in row-major order, as PyTorch; overlapping windows add up")
    inputs = ("dy", "x")
    attrs = (KERNEL, STRIDE, PADS, DILATION, CEIL_MODE)
    x_arg = 1

    def reference(self, attrs, xs, ps, ctx):
        dy, x = xs
        win = self.padded_windows(attrs, x, -np.inf)  # padding never wins, as in the forward op
        first = win.reshape(*win.shape[:4], -1).argmax(axis=-1)  # argmax takes the first of equal values
        return self.spread(attrs, dy, x.shape[2:], first)

    def to_onnx(self, node, e):
        # MaxPool's Indices output (the first maximum, as a flat index into its input) and a scatter-add of dy
        a = node.attrs
        dy, x = (e.value(v) for v in node.inputs)
        c, h, w = (int(d) for d in node.inputs[1].type.shape[1:])
        (sh, sw), (dh, dw) = a["stride"], a["dilation"]
        top, left, bottom, right = self.overhang_pads(a, h, w)
        src = x
        if top or left or bottom or right:
            # explicit -inf padding (the ceil_mode overhang included): MaxPool's own pads must stay below the
            # kernel size, which a dilated window's padding can exceed
            src = e.add_node("Pad", [x, e.ints([top, left, bottom, right], "pads"), e.scalar(-np.inf, "neg_inf"),
                                     e.ints([2, 3], "axes")])
        idx = e.tmp("indices")
        e.add_node("MaxPool", [src], [e.tmp("max"), idx], kernel_shape=list(a["kernel"]), strides=[sh, sw],
                   dilations=[dh, dw])
        if src != x:  # flat indices into the padded tensor -> into x
            hp, wp = h + top + bottom, w + left + right
            i64 = lambda v, hint: e.const(np.array(v, np.int64), hint)  # noqa: E731
            plane = e.add_node("Div", [idx, i64(hp * wp, "plane")])  # n·C + c
            pos = e.add_node("Mod", [idx, i64(hp * wp, "plane")])
            row = e.add_node("Sub", [e.add_node("Div", [pos, i64(wp, "wp")]), i64(top, "top")])
            col = e.add_node("Sub", [e.add_node("Mod", [pos, i64(wp, "wp")]), i64(left, "left")])
            idx = e.add_node("Add", [e.add_node("Mul", [e.add_node("Add", [e.add_node("Mul", [plane, i64(h, "h")]),
                                                                            row]), i64(w, "w")]), col])
        flat = e.ints([-1], "flat")
        size = e.add_node("Reshape", [e.add_node("Size", [x]), e.ints([1], "one")])
        zeros = e.add_node("ConstantOfShape", [size], value=e.onnx.numpy_helper.from_array(np.zeros(1, e.np_dtype)))
        dx = e.add_node("ScatterElements", [zeros, e.add_node("Reshape", [idx, flat]),
                                            e.add_node("Reshape", [dy, flat])], axis=0, reduction="add")
        e.add_node("Reshape", [dx, e.add_node("Shape", [x])], e.out(node))


@register
class AvgWindowGrad(WindowGrad):
    name = "avg_window_grad"
    training_only = True
    doc = ("gradient of avg_pool2d with respect to x: each dy divided by its window's divisor (as the forward op "
           "counts it) and added to every position of the window")
    inputs = ("dy",)
    attrs = (KERNEL, STRIDE, PADS, CEIL_MODE, Attr("count_include_pad", Bool(), True, "padding counts in the divisor"),
             INPUT_SIZE)

    def divisor(self, attrs) -> np.ndarray:
        """avg_pool2d's divisor of each output position [OH, OW], from the forward op itself."""
        return REGISTRY["avg_pool2d"].divisor(attrs, *attrs["input_size"])

    def reference(self, attrs, xs, ps, ctx):
        dy = xs[0]
        return self.spread(attrs, dy / self.divisor(attrs).astype(dy.dtype), attrs["input_size"])

    def to_onnx(self, node, e):
        a = node.attrs
        g = e.add_node("Div", [e.value(node.inputs[0]), e.const(self.divisor(a).astype(np.float64), "divisor")])
        self.onnx_spread(a, e, g, int(node.inputs[0].type.shape[1]), a["input_size"], e.out(node))


@register
class SumWindowGrad(WindowGrad):
    name = "sum_window_grad"
    training_only = True
    doc = "gradient of window_reduce(sum) with respect to x: each dy added to every position of its window"
    inputs = ("dy",)
    attrs = (KERNEL, STRIDE, PADS, DILATION, CEIL_MODE, INPUT_SIZE)

    def reference(self, attrs, xs, ps, ctx):
        return self.spread(attrs, xs[0], attrs["input_size"])

    def to_onnx(self, node, e):
        a = node.attrs
        self.onnx_spread(a, e, e.value(node.inputs[0]), int(node.inputs[0].type.shape[1]), a["input_size"],
                         e.out(node))


@register
class LpWindowGrad(WindowGrad):
    name = "lp_window_grad"
    training_only = True
    doc = ("gradient of lp_pool2d with respect to x, given x and the pooled y: spread of dy·y^(1-p) over each "
           "window, times |x|^(p-1)·sign(x) (0 where y or x is 0)")
    inputs = ("dy", "x", "y")
    attrs = (KERNEL, Attr("p", Float(min=0.0, min_exclusive=True), 2.0, "the norm's exponent"), STRIDE, PADS,
             CEIL_MODE)
    x_arg = 1

    def infer(self, attrs, in_types):
        out = super().infer(attrs, in_types)
        if in_types[2] != in_types[0]:
            raise OpError(f"{self.name}: the pooled y {in_types[2]} does not have dy's type {in_types[0]}", arg=2)
        return out

    def reference(self, attrs, xs, ps, ctx):
        dy, x, y = xs
        p = attrs["p"]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # an all-zero window has no direction: its gradient is taken as 0 (PyTorch's would be nan)
            g = np.where(y > 0, dy * y ** (1.0 - p), 0).astype(dy.dtype, copy=False)
            ax = np.abs(x)
            factor = np.where(ax > 0, np.sign(x) * ax ** (p - 1.0), 0).astype(dy.dtype, copy=False)
        return self.spread(attrs, g, x.shape[2:]) * factor

    def to_onnx(self, node, e):
        a, p = node.attrs, node.attrs["p"]
        dy, x, y = (e.value(v) for v in node.inputs)
        c, h, w = (int(d) for d in node.inputs[1].type.shape[1:])
        zero = e.scalar(0.0, "zero")
        # Where, not a product, keeps the inf of 0^(negative) out of the result
        g = e.add_node("Mul", [dy, e.add_node("Where", [e.add_node("Greater", [y, zero]),
                                                         e.add_node("Pow", [y, e.scalar(1.0 - p, "1_p")]), zero])])
        spread = self.onnx_spread(a, e, g, c, (h, w))
        factor = e.add_node("Mul", [e.add_node("Sign", [x]), e.add_node("Pow", [e.add_node("Abs", [x]),
                                                                                 e.scalar(p - 1.0, "p_1")])])
        factor = e.add_node("Where", [e.add_node("Equal", [x, zero]), zero, factor])
        e.add_node("Mul", [spread, factor], e.out(node))


@register
class GlobalAvgGrad(OpDef):
    name = "global_avg_grad"
    training_only = True
    doc = "gradient of a mean over H and W (global_avg_pool, reduce_mean): dy [N, C, 1, 1] / (H·W) at every position"
    inputs = ("dy",)
    attrs = (INPUT_SIZE,)
    fusion = "broadcast"

    def infer(self, attrs, in_types):
        dy = in_types[0]
        expect_rank(self.name, dy, 4)
        if tuple(dy.shape[2:]) != (1, 1):
            raise OpError(f"{self.name}: dy must be [N, C, 1, 1], got {dy}", arg=0)
        return TensorType((dy.shape[0], dy.shape[1], *attrs["input_size"]), dy.dtype)

    def reference(self, attrs, xs, ps, ctx):
        dy, (h, w) = xs[0], attrs["input_size"]
        return np.ascontiguousarray(np.broadcast_to(dy / dy.dtype.type(h * w), (*dy.shape[:2], h, w)))

    def to_onnx(self, node, e):
        h, w = node.attrs["input_size"]
        e.add_node("Div", [e.value(node.inputs[0]), e.const(np.full((1, 1, h, w), float(h * w)), "area")],
                   e.out(node))
