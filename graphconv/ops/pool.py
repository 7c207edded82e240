"""Pooling over x [N, C, H, W]: the sliding-window pools share `Pool` (stride defaulting to the kernel, `same`
padding, PyTorch's padding limit and ceil_mode rule); the global pools share `GlobalPool`. `window_reduce` and
`reduce_mean` are what the optimizer's pooling lowering turns the pools into (graphconv/passes/lower_pooling.py)."""

from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..ir.graph import Init, TensorType
from .schema import (Attr, Bool, Enum, Float, Ints, OneOf, OpDef, Padding, TensorLiteral, Window, expect_rank,
                     register, resolve_padding, sliding_windows, window_out)

KERNEL = Attr("kernel", Ints(2), doc="window size: k or [kh, kw]")
STRIDE = Attr("stride", Ints(2), None, "step: s or [sh, sw] (default: the kernel)", optional=True)
PADDING = Attr("padding", Padding(), (0, 0, 0, 0), "same, valid, p, [ph, pw] or [top, left, bottom, right]")
CEIL_MODE = Attr("ceil_mode", Bool(), False, "round the output size up; a last window must start inside the input")
DILATION = Attr("dilation", Ints(2), (1, 1))


class WindowGeometry:
    """Where the windows of a sliding-window pool lie, from its resolved attributes (kernel, stride, explicit
    padding, dilation when the op has it, ceil_mode). Shared by the pools and their gradient ops
    (graphconv/ops/grad/pool.py), so both see exactly the same windows."""

    @staticmethod
    def _dilation(attrs) -> tuple[int, int]:
        return attrs.get("dilation", (1, 1))

    def _extent(self, attrs) -> tuple[int, int]:
        (kh, kw), (dh, dw) = attrs["kernel"], self._dilation(attrs)
        return (kh - 1) * dh + 1, (kw - 1) * dw + 1

    def _out_hw(self, attrs, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], self._dilation(attrs)
        top, left, bottom, right = attrs["padding"]
        return (window_out(h, kh, sh, top, bottom, dh, attrs["ceil_mode"]),
                window_out(w, kw, sw, left, right, dw, attrs["ceil_mode"]))

    def overhang_pads(self, attrs, h: int, w: int) -> tuple[int, int, int, int]:
        """The padding (top, left, bottom, right) with bottom and right grown to cover the ceil_mode overhang: a
        convolution with these pads (and no ceil_mode) sees the same windows."""
        oh, ow = self._out_hw(attrs, h, w)
        top, left, bottom, right = attrs["padding"]
        (sh, sw), (eh, ew) = attrs["stride"], self._extent(attrs)
        return top, left, max(bottom, (oh - 1) * sh + eh - h - top), max(right, (ow - 1) * sw + ew - w - left)

    def padded_windows(self, attrs, x: np.ndarray, fill: float) -> np.ndarray:
        """Views [N, C, OH, OW, KH, KW] of x padded with `fill`, including the overhang of ceil_mode windows."""
        oh, ow = self._out_hw(attrs, x.shape[2], x.shape[3])
        top, left, bottom, right = self.overhang_pads(attrs, x.shape[2], x.shape[3])
        xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
        return sliding_windows(xp, attrs["kernel"], attrs["stride"], self._dilation(attrs), (oh, ow))


class Pool(WindowGeometry, OpDef):
    """A sliding-window pool. Subclasses give `fill` (the value the padding and the ceil_mode overhang read) and
    `reduce` (windows [N, C, OH, OW, KH, KW] -> [N, C, OH, OW])."""

    blocked_layout = True
    fusion = "out_fusable"
    fill = 0.0

    def fill_value(self, attrs) -> float:
        """What the padding and the ceil_mode overhang read."""
        return self.fill

    def resolve(self, attrs, in_types):
        x = in_types[0]
        expect_rank(self.name, x, 4)
        a = dict(attrs)
        if a["stride"] is None:
            a["stride"] = a["kernel"]
        a["padding"] = resolve_padding(a, x, a["kernel"], a["stride"], self._dilation(a))
        eh, ew = self._extent(a)
        top, left, bottom, right = a["padding"]
        if max(top, bottom) > eh // 2 or max(left, right) > ew // 2:
            raise OpError(f"{self.name}: padding {list(a['padding'])} is more than half the {eh}×{ew} window "
                          f"(at most {eh // 2} rows and {ew // 2} columns per side)", attr="padding")
        return a

    def infer(self, attrs, in_types):
        x = in_types[0]
        expect_rank(self.name, x, 4)
        h, w = int(x.shape[2]), int(x.shape[3])
        oh, ow = self._out_hw(attrs, h, w)
        if oh < 1 or ow < 1:
            top, left, bottom, right = attrs["padding"]
            eh, ew = self._extent(attrs)
            raise OpError(f"{self.name}: the {eh}×{ew} window does not fit the padded "
                          f"{h + top + bottom}×{w + left + right} input {x}")
        return TensorType((x.shape[0], x.shape[1], oh, ow), x.dtype)

    def windows(self, attrs, x: np.ndarray) -> np.ndarray:
        """Views [N, C, OH, OW, KH, KW] of x padded with `fill_value`, including the overhang of ceil_mode
        windows."""
        return self.padded_windows(attrs, x, self.fill_value(attrs))

    def reference(self, attrs, xs, ps, ctx):
        x = xs[0]
        return np.asarray(self.reduce(attrs, self.windows(attrs, x), x.shape), dtype=x.dtype)

    def reduce(self, attrs, win: np.ndarray, in_shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def onnx_pool_attrs(self, attrs) -> dict:
        return dict(kernel_shape=list(attrs["kernel"]), strides=list(attrs["stride"]), pads=list(attrs["padding"]),
                    ceil_mode=int(attrs["ceil_mode"]))

    def onnx_pool(self, node, e, op_type: str, out: str | None, **attrs) -> str:
        """An ONNX pool (MaxPool, AveragePool, LpPool) on the node's input. ONNX's ceil_mode size rule keeps a window
        that starts in the right padding, which PyTorch, graphconv and onnxruntime's kernels drop; its declared size
        would then differ from the size computed at run time (and onnxruntime plans buffers by declared sizes, which
        breaks training graphs that reuse them). Such a pool is exported without ceil_mode, its bottom and right
        padding grown to cover the overhang: the same windows, and sizes that agree."""
        a, x = node.attrs, node.inputs[0]
        h, w = int(x.type.shape[2]), int(x.type.shape[3])
        if not a["ceil_mode"] or self._out_hw(a, h, w) == self._onnx_ceil_out_hw(a, h, w):
            return e.add_node(op_type, [e.value(x)], out, **attrs)
        attrs = {**attrs, "ceil_mode": 0, "pads": list(self.overhang_pads(a, h, w))}
        if op_type == "AveragePool" and attrs.get("count_include_pad"):
            # the grown padding must not count: window sums over the divisor the reference uses
            sums = _window_sum_conv(self, a, x, e.value(x), e)
            return e.add_node("Div", [sums, e.const(self.divisor(a, h, w).astype(np.float64), "divisor")], out)
        return e.add_node(op_type, [e.value(x)], out, **attrs)

    def _onnx_ceil_out_hw(self, attrs, h: int, w: int) -> tuple[int, int]:
        """The ONNX specification's ceil_mode output size: ceil((size + pads - extent) / stride) + 1."""
        (sh, sw), (eh, ew) = attrs["stride"], self._extent(attrs)
        top, left, bottom, right = attrs["padding"]
        return -(-(h + top + bottom - eh) // sh) + 1, -(-(w + left + right - ew) // sw) + 1

    def window(self, attrs):
        return Window(self._extent(attrs), attrs["stride"])


# -- helpers of the gradient rules (the backward ops are in graphconv/ops/grad/pool.py) -----------------------------

def _pick(attrs, *names: str) -> dict:
    """The resolved attributes a gradient op repeats from its forward node."""
    return {n: attrs[n] for n in names}


def _hw(v) -> tuple[int, int]:
    return int(v.type.shape[2]), int(v.type.shape[3])


def _mean_gradient(self, node, dy, gb):
    """global_avg_pool and reduce_mean: dy / (H·W) everywhere."""
    if not gb.wants(0):
        return {}
    return {0: gb.op("global_avg_grad", [dy], input_size=_hw(node.inputs[0]))}


@register
class MaxPool2d(Pool):
    name = "max_pool2d"
    window_step = True
    doc = "maximum over each window; padding never wins (it reads -inf)"
    attrs = (KERNEL, STRIDE, PADDING, DILATION, CEIL_MODE)
    fill = -np.inf

    def reduce(self, attrs, win, in_shape):
        return win.max(axis=(-2, -1))

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        window = _pick(node.attrs, "kernel", "stride", "padding", "dilation", "ceil_mode")
        return {0: gb.op("max_window_grad", [dy, node.inputs[0]], **window)}

    def to_onnx(self, node, e):
        self.onnx_pool(node, e, "MaxPool", e.out(node), dilations=list(node.attrs["dilation"]),
                       **self.onnx_pool_attrs(node.attrs))


def _window_counts(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, out: int,
                   include_pad: bool) -> np.ndarray:
    """How many positions each window covers along one axis: the padded input (clipped at its far end, so a ceil_mode
    window running past the padding is not charged for the overhang) or the real input only."""
    start = np.arange(out) * stride - pad_lo
    end = np.minimum(start + kernel, size + pad_hi)
    if include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


@register
class AvgPool2d(Pool):
    name = "avg_pool2d"
    doc = ("mean over each window, PyTorch semantics: count_include_pad counts the zero padding in the divisor, but "
           "never the part of a ceil_mode window beyond the padded input")
    attrs = (KERNEL, STRIDE, PADDING, CEIL_MODE,
             Attr("count_include_pad", Bool(), True, "padding counts in the divisor"))

    def divisor(self, attrs, h: int, w: int) -> np.ndarray:
        """The divisor of each output position [OH, OW] (integers) for an H×W input: what the reference divides
        each window's sum by (the pooling lowering turns it into a per-position scale)."""
        oh, ow = self._out_hw(attrs, h, w)
        (kh, kw), (sh, sw), (top, left, bottom, right) = attrs["kernel"], attrs["stride"], attrs["padding"]
        inc = attrs["count_include_pad"]
        rows = _window_counts(h, kh, sh, top, bottom, oh, inc)
        cols = _window_counts(w, kw, sw, left, right, ow, inc)
        return np.outer(rows, cols)

    def reduce(self, attrs, win, in_shape):
        return win.sum(axis=(-2, -1)) / self.divisor(attrs, in_shape[2], in_shape[3])

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        a = _pick(node.attrs, "kernel", "stride", "padding", "ceil_mode", "count_include_pad")
        return {0: gb.op("avg_window_grad", [dy], input_size=_hw(node.inputs[0]), **a)}

    def to_onnx(self, node, e):
        self.onnx_pool(node, e, "AveragePool", e.out(node), count_include_pad=int(node.attrs["count_include_pad"]),
                       **self.onnx_pool_attrs(node.attrs))


@register
class LpPool2d(Pool):
    name = "lp_pool2d"
    doc = ("p-norm of each window, (sum |x|^p)^(1/p), as ONNX LpPool; padding and the ceil_mode overhang add "
           "nothing (PyTorch instead rescales partial ceil_mode windows to the full kernel and uses x^p, not |x|^p)")
    attrs = (KERNEL, Attr("p", Float(min=0.0, min_exclusive=True), 2.0, "the norm's exponent"),
             STRIDE, PADDING, CEIL_MODE)

    def reduce(self, attrs, win, in_shape):
        p = attrs["p"]
        return (np.abs(win) ** p).sum(axis=(-2, -1)) ** (1.0 / p)

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        a = _pick(node.attrs, "kernel", "p", "stride", "padding", "ceil_mode")
        return {0: gb.op("lp_window_grad", [dy, node.inputs[0], node.output], **a)}

    def to_onnx(self, node, e):
        a = node.attrs
        p = a["p"]
        if float(p).is_integer():
            self.onnx_pool(node, e, "LpPool", e.out(node), p=int(p), **self.onnx_pool_attrs(a))
            return
        # ONNX LpPool takes an integer p: (Σ|x|^p)^(1/p) as Abs, Pow, a depthwise all-ones Conv (zero padding and
        # the ceil_mode overhang add nothing), Pow.
        x = node.inputs[0]
        y = e.add_node("Abs", [e.value(x)])
        y = e.add_node("Pow", [y, e.scalar(p, "p")])
        y = _window_sum_conv(self, a, x, y, e)
        e.add_node("Pow", [y, e.scalar(1.0 / p, "inv_p")], e.out(node))


def _window_sum_conv(op: Pool, a, x, src: str, e, out: str | None = None) -> str:
    """ONNX: the window sums of `src` (shaped like the IR value x) as a depthwise all-ones Conv. Zero padding and
    the ceil_mode overhang (grown into the bottom/right pads) add nothing."""
    c, h, w = (int(d) for d in x.type.shape[1:])
    (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], op._dilation(a)
    return e.add_node("Conv", [src, e.const(np.ones((c, 1, kh, kw)), "ones")], out, kernel_shape=[kh, kw],
                      strides=[sh, sw], pads=list(op.overhang_pads(a, h, w)), dilations=[dh, dw], group=c)


@register
class WindowReduce(Pool):
    name = "window_reduce"
    window_step = True
    doc = ("sum or maximum over each window, times an optional fixed per-position scale [OH, OW]: what the pooling "
           "lowering makes of avg_pool2d (sum, scale = 1/divisor) and max_pool2d (max); padding and the ceil_mode "
           "overhang add zeros to a sum and never win a max")
    attrs = (Attr("reduce", Enum("sum", "max"), doc="sum or max"), KERNEL, STRIDE, PADDING, DILATION, CEIL_MODE,
             Attr("scale", OneOf(Bool(), TensorLiteral()), False,
                  "false, true (a trained [OH, OW] scale, initialized to ones) or fixed values [OH, OW] multiplying "
                  "each output position"))

    def fill_value(self, attrs):
        return -np.inf if attrs["reduce"] == "max" else 0.0

    def ir_attrs(self, attrs):
        out = super().ir_attrs(attrs)
        if isinstance(out.get("scale"), np.ndarray):  # fixed values live in the parameter
            out["scale"] = True
        return out

    def params(self, attrs, in_types):
        scale = attrs["scale"]
        if scale is False:
            return []
        from .conv import fixed_or_init

        x = in_types[0]
        oh, ow = self._out_hw(attrs, int(x.shape[2]), int(x.shape[3]))
        return [fixed_or_init("scale", (oh, ow), None if scale is True else scale, Init("ones"), self.name)]

    def reduce(self, attrs, win, in_shape):
        return win.max(axis=(-2, -1)) if attrs["reduce"] == "max" else win.sum(axis=(-2, -1))

    def reference(self, attrs, xs, ps, ctx):
        y = super().reference(attrs, xs, ps, ctx)
        if attrs["scale"] is not False:
            y = np.asarray(y * ps["scale"], dtype=y.dtype)
        return y

    def gradient(self, node, dy, gb):
        a, x = node.attrs, node.inputs[0]
        window = _pick(a, "kernel", "stride", "padding", "dilation", "ceil_mode")
        scale = node.params.get("scale")
        out = {}
        if gb.wants(0):
            g = dy if scale is None else gb.op("mul", [dy, scale])  # the scale [OH, OW] broadcasts
            out[0] = (gb.op("max_window_grad", [g, x], **window) if a["reduce"] == "max" else
                      gb.op("sum_window_grad", [g], input_size=_hw(x), **window))
        if gb.wants("scale"):  # Σ over batch and channels of dy · the unscaled window reduction
            plain = gb.op("window_reduce", [x], reduce=a["reduce"], scale=False, **window)
            out["scale"] = gb.op("reduce_sum", [gb.op("mul", [dy, plain])], axes=[0, 1])
        return out

    def to_onnx(self, node, e):
        a, x = node.attrs, node.inputs[0]
        scaled = a["scale"] is not False
        out = None if scaled else e.out(node)
        if a["reduce"] == "max":
            y = self.onnx_pool(node, e, "MaxPool", out, dilations=list(a["dilation"]), **self.onnx_pool_attrs(a))
        elif a["dilation"] != (1, 1) or a["ceil_mode"]:
            # an all-ones depthwise convolution with the overhang as explicit padding: AveragePool has no dilations
            # before opset 19, and ONNX shape inference keeps a ceil_mode window that starts in the right padding,
            # which PyTorch (and graphconv) drop, so AveragePool's output could be a row too large
            y = _window_sum_conv(self, a, x, e.value(x), e, out)
        else:
            # the mean counting the padding, times the kernel area (every window lies inside the padded input)
            (kh, kw) = a["kernel"]
            y = e.add_node("AveragePool", [e.value(x)], count_include_pad=1, **self.onnx_pool_attrs(a))
            y = e.add_node("Mul", [y, e.scalar(kh * kw, "area")], out)
        if scaled:
            e.add_node("Mul", [y, e.value(node.params["scale"])], e.out(node))


class GlobalPool(OpDef):
    """Pool over all of H and W: [N, C, H, W] -> [N, C, 1, 1]."""

    blocked_layout = True

    fusion = "reduction"

    def infer(self, attrs, in_types):
        x = in_types[0]
        expect_rank(self.name, x, 4)
        return TensorType((x.shape[0], x.shape[1], 1, 1), x.dtype)

    def window(self, attrs):
        return Window(global_=True)


@register
class GlobalAvgPool(GlobalPool):
    name = "global_avg_pool"
    doc = "mean over H and W: [N, C, H, W] -> [N, C, 1, 1]"

    def reference(self, attrs, xs, ps, ctx):
        return xs[0].mean(axis=(2, 3), keepdims=True)

    gradient = _mean_gradient

    def to_onnx(self, node, e):
        e.add_node("GlobalAveragePool", [e.value(node.inputs[0])], e.out(node))


@register
class GlobalMaxPool(GlobalPool):
    name = "global_max_pool"
    doc = "maximum over H and W: [N, C, H, W] -> [N, C, 1, 1]"

    def reference(self, attrs, xs, ps, ctx):
        return xs[0].max(axis=(2, 3), keepdims=True)

    def gradient(self, node, dy, gb):
        # one window covering the whole plane
        if not gb.wants(0):
            return {}
        x = node.inputs[0]
        return {0: gb.op("max_window_grad", [dy, x], kernel=_hw(x), stride=(1, 1), padding=(0, 0, 0, 0),
                         dilation=(1, 1), ceil_mode=False)}

    def to_onnx(self, node, e):
        e.add_node("GlobalMaxPool", [e.value(node.inputs[0])], e.out(node))


@register
class ReduceMean(GlobalPool):
    name = "reduce_mean"
    doc = ("mean over the spatial axes H and W, kept as size 1: [N, C, H, W] -> [N, C, 1, 1] (ONNX ReduceMean); "
           "what the pooling lowering makes of global_avg_pool")

    def reference(self, attrs, xs, ps, ctx):
        return xs[0].mean(axis=(2, 3), keepdims=True)

    gradient = _mean_gradient

    def to_onnx(self, node, e):
        # axes as an input: opset 18 and later (the exporter's minimum)
        e.add_node("ReduceMean", [e.value(node.inputs[0]), e.ints([2, 3], "axes")], e.out(node), keepdims=1)
