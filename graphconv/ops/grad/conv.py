"""Gradient ops of the conv family: what the `gradient` rules of conv2d, conv_transpose2d, dense and channel_matmul
(ops/conv.py, ops/dense.py) add. Weights arrive as ordinary data inputs; none of these ops owns a parameter.

    conv2d            dx = conv2d_grad_input(dy, weight)             a transposed convolution
                      dw = conv2d_grad_weight(x, dy)                  Σ over the batch and the output positions
    conv_transpose2d  dx = conv_transpose2d_grad_input(dy, weight)    a convolution
                      dw = conv2d_grad_weight(dy, x)                  the same correlation, roles swapped
    dense             dx = dense_grad_input(dy, weight)               dy·weight
                      dw = dense_grad_weight(x, dy)                   dyᵀ·x
    bias (all)        db = reduce_sum(dy) over every axis but the channels (ops/grad/reduce.py)

The numpy references loop over the kernel taps (kh·kw iterations of one einsum each), never over pixels. The ONNX
mappings use ConvTranspose for input gradients and Conv on batch-transposed tensors for weight gradients.
"""

from __future__ import annotations

import numpy as np

from ...errors import OpError
from ...ir.graph import TensorType
from ..schema import Attr, Bool, Int, Ints, OpDef, Pads, expect_rank, register, same_dtype, window_out

# the geometry of the forward convolution each op differentiates (padding already resolved to 4 pads)
STRIDE = Attr("stride", Ints(2), (1, 1))
PADDING = Attr("padding", Pads(), (0, 0, 0, 0), "pads [top, left, bottom, right] of the forward op")
DILATION = Attr("dilation", Ints(2), (1, 1))
GROUPS = Attr("groups", Int(min=1), 1)
FLIP = Attr("flip", Bool(), False, "the forward conv2d flipped its kernel (true convolution)")
SIZE = Attr("size", Ints(2), doc="[H, W] of the forward op's input: the size of the gradient")

_END = -(1 << 62)  # a Slice end meaning "past the first element" when stepping backwards


def _dim(t: TensorType, axis: int, what: str, arg: int, op: str) -> int:
    d = t.shape[axis]
    if not isinstance(d, int):
        raise OpError(f"{op}: the {what} of {t} must be static", arg=arg)
    return d


def _check_batch(op: str, a: TensorType, b: TensorType) -> None:
    if a.shape[0] != b.shape[0]:
        raise OpError(f"{op}: {a} and {b} have different batch sizes", arg=1)


def _extent(kernel: int, dilation: int) -> int:
    return dilation * (kernel - 1) + 1


def _pad(x: np.ndarray, padding) -> np.ndarray:
    top, left, bottom, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def _rows(start: int, count: int, step: int) -> slice:
    """`count` positions from `start`, `step` apart: the input rows one kernel tap meets."""
    return slice(start, start + (count - 1) * step + 1, step)


def _onnx_flip(e, name: str, starts=(-1, -1)) -> str:
    """ONNX: reverse axes 2 and 3 (from `starts` down to index 0)."""
    return e.add_node("Slice", [name, e.ints(list(starts), "starts"), e.ints([_END, _END], "ends"),
                                e.ints([2, 3], "axes"), e.ints([-1, -1], "steps")])


@register
class Conv2dGradInput(OpDef):
    name = "conv2d_grad_input"
    training_only = True
    doc = ("gradient of conv2d with respect to x: the transposed convolution of dy [N, O, OH, OW] with the weight "
           "[O, C/groups, kh, kw], cropped to the forward input's size [H, W]")
    inputs = ("dy", "weight")
    attrs = (SIZE, STRIDE, PADDING, DILATION, GROUPS, FLIP)
    fusion = "opaque"

    def infer(self, attrs, in_types):
        dy, w = in_types
        same_dtype(self.name, in_types)
        expect_rank(self.name, dy, 4)
        expect_rank(self.name, w, 4, arg=1)
        o, cg, kh, kw = w.shape
        g = attrs["groups"]
        if _dim(dy, 1, "channels", 0, self.name) != o or o % g:
            raise OpError(f"{self.name}: dy {dy} does not fit the weight {w} with {g} groups", arg=1)
        h, wd = attrs["size"]
        top, left, bottom, right = attrs["padding"]
        (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
        want = (window_out(h, kh, sh, top, bottom, dh), window_out(wd, kw, sw, left, right, dw))
        if tuple(dy.shape[2:]) != want:
            raise OpError(f"{self.name}: dy {dy} is not the output of this convolution of a {h}×{wd} input "
                          f"(that is {want[0]}×{want[1]})")
        return TensorType((dy.shape[0], cg * g, h, wd), dy.dtype)

    def reference(self, attrs, xs, ps, ctx):
        dy, w = xs
        n, o, oh, ow = dy.shape
        _, cg, kh, kw = w.shape
        g = attrs["groups"]
        (h, wd), (sh, sw), (dh, dw) = attrs["size"], attrs["stride"], attrs["dilation"]
        top, left, bottom, right = attrs["padding"]
        if attrs["flip"]:
            w = w[:, :, ::-1, ::-1]
        # accumulate in the padded frame, then crop: rows no window reaches (and the pads) stay zero
        dxp = np.zeros((n, cg * g, h + top + bottom, wd + left + right), dtype=dy.dtype)
        dyg = dy.reshape(n, g, o // g, oh, ow)
        wg = w.reshape(g, o // g, cg, kh, kw)
        for i in range(kh):
            for j in range(kw):
                tap = np.einsum("ngohw,goc->ngchw", dyg, wg[..., i, j], optimize=True)
                dxp[:, :, _rows(i * dh, oh, sh), _rows(j * dw, ow, sw)] += tap.reshape(n, cg * g, oh, ow)
        return np.ascontiguousarray(dxp[:, :, top:top + h, left:left + wd]).astype(dy.dtype, copy=False)

    def to_onnx(self, node, e):
        a = node.attrs
        dy, w = (e.value(v) for v in node.inputs)
        kh, kw = (int(d) for d in node.inputs[1].type.shape[2:])
        (h, wd), (sh, sw), (dh, dw) = a["size"], a["stride"], a["dilation"]
        top, left, bottom, right = a["padding"]
        if a["flip"]:
            w = _onnx_flip(e, w)
        # the rows at the end of the padded input that no window reached: ConvTranspose adds them back as
        # output_padding (always < stride), then crops the pads as conv_transpose2d does
        extra = [(h + top + bottom - _extent(kh, dh)) % sh, (wd + left + right - _extent(kw, dw)) % sw]
        e.add_node("ConvTranspose", [dy, w], e.out(node), kernel_shape=[kh, kw], strides=[sh, sw],
                   pads=list(a["padding"]), output_padding=extra, dilations=[dh, dw], group=a["groups"])


@register
class Conv2dGradWeight(OpDef):
    name = "conv2d_grad_weight"
    training_only = True
    doc = ("gradient of conv2d with respect to its weight: Σ over the batch and output positions of dy [N, O, OH, OW] "
           "times the windows of x [N, C, H, W], giving [O, C/groups, kh, kw]; dy may cover fewer windows than fit")
    inputs = ("x", "dy")
    attrs = (Attr("kernel", Ints(2)), STRIDE, PADDING, DILATION, GROUPS, FLIP)
    fusion = "reduction"

    def infer(self, attrs, in_types):
        x, dy = in_types
        same_dtype(self.name, in_types)
        expect_rank(self.name, x, 4)
        expect_rank(self.name, dy, 4, arg=1)
        _check_batch(self.name, x, dy)
        g = attrs["groups"]
        c, o = _dim(x, 1, "channels", 0, self.name), _dim(dy, 1, "channels", 1, self.name)
        if c % g or o % g:
            raise OpError(f"{self.name}: the channels of x {x} and dy {dy} must both divide into {g} groups")
        (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs["dilation"]
        top, left, bottom, right = attrs["padding"]
        fit = (window_out(int(x.shape[2]), kh, sh, top, bottom, dh),
               window_out(int(x.shape[3]), kw, sw, left, right, dw))
        # conv_transpose2d's weight gradient reads fewer windows than fit when output_padding >= stride
        if not all(1 <= int(d) <= f for d, f in zip(dy.shape[2:], fit)):
            raise OpError(f"{self.name}: dy {dy} does not fit the windows of x {x} ({fit[0]}×{fit[1]} fit)", arg=1)
        return TensorType((o, c // g, kh, kw), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        x, dy = xs
        n, c = x.shape[:2]
        _, o, oh, ow = dy.shape
        g = attrs["groups"]
        (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs["dilation"]
        xp = _pad(x, attrs["padding"])
        dyg = dy.reshape(n, g, o // g, oh, ow)
        dw_ = np.empty((g, o // g, c // g, kh, kw), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                xs_ij = xp[:, :, _rows(i * dh, oh, sh), _rows(j * dw, ow, sw)].reshape(n, g, c // g, oh, ow)
                dw_[..., i, j] = np.einsum("ngchw,ngohw->goc", xs_ij, dyg, optimize=True)
        dw_ = dw_.reshape(o, c // g, kh, kw)
        if attrs["flip"]:  # the forward used the flipped kernel: its gradient flips back
            dw_ = dw_[:, :, ::-1, ::-1]
        return np.ascontiguousarray(dw_).astype(x.dtype, copy=False)

    def to_onnx(self, node, e):
        # dw[o, c, i, j] = Σ_n,p,q x[n, c, p·s + i·d, ...]·dy[n, o, p, q] is a convolution over x with the batch as
        # channels, dy as the kernel, and stride and dilation swapped; groups pair x's and dy's channel blocks
        a = node.attrs
        x, dy = (e.value(v) for v in node.inputs)
        xt, dyt = node.inputs[0].type, node.inputs[1].type
        c, h, wd = (int(d) for d in xt.shape[1:])
        oh, ow = (int(d) for d in dyt.shape[2:])
        g = a["groups"]
        (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
        if g == 1:
            xc = e.add_node("Transpose", [x], perm=[1, 0, 2, 3])  # [C, N, H, W]
        else:  # [C/g, g·N, H, W], channels group-major as Conv's groups need
            split = e.add_node("Reshape", [x, e.ints([0, g, c // g, h, wd], "shape")])
            xc = e.add_node("Reshape", [e.add_node("Transpose", [split], perm=[2, 1, 0, 3, 4]),
                                        e.ints([c // g, -1, h, wd], "shape")])
        kernel = e.add_node("Transpose", [dy], perm=[1, 0, 2, 3])  # [O, N, OH, OW]
        full = e.add_node("Conv", [xc, kernel], kernel_shape=[oh, ow], strides=[dh, dw], dilations=[sh, sw],
                          pads=list(a["padding"]), group=g)  # [C/g, O, >= kh, >= kw]
        top, left, bottom, right = a["padding"]
        got = ((h + top + bottom - _extent(oh, sh)) // dh + 1, (wd + left + right - _extent(ow, sw)) // dw + 1)
        if a["flip"]:  # crop and flip in one step
            full = _onnx_flip(e, full, starts=(kh - 1, kw - 1))
        elif got != (kh, kw):
            full = e.add_node("Slice", [full, e.ints([0, 0], "starts"), e.ints([kh, kw], "ends"),
                                        e.ints([2, 3], "axes")])
        e.add_node("Transpose", [full], e.out(node), perm=[1, 0, 2, 3])


@register
class ConvTranspose2dGradInput(OpDef):
    name = "conv_transpose2d_grad_input"
    training_only = True
    doc = ("gradient of conv_transpose2d with respect to x: the convolution of dy [N, O, OH, OW] with the weight "
           "[C, O/groups, kh, kw], its windows limited to the forward input's size [H, W]")
    inputs = ("dy", "weight")
    attrs = (SIZE, STRIDE, PADDING, DILATION, GROUPS)
    fusion = "opaque"

    def infer(self, attrs, in_types):
        dy, w = in_types
        same_dtype(self.name, in_types)
        expect_rank(self.name, dy, 4)
        expect_rank(self.name, w, 4, arg=1)
        c, og, kh, kw = w.shape
        g = attrs["groups"]
        if _dim(dy, 1, "channels", 0, self.name) != og * g or c % g:
            raise OpError(f"{self.name}: dy {dy} does not fit the weight {w} with {g} groups", arg=1)
        (h, wd), (sh, sw), (dh, dw) = attrs["size"], attrs["stride"], attrs["dilation"]
        top, left, bottom, right = attrs["padding"]
        # dy must be the transposed convolution's output for some output_padding below max(stride, dilation)
        for size, out, k, s, d, lo, hi in ((h, dy.shape[2], kh, sh, dh, top, bottom),
                                           (wd, dy.shape[3], kw, sw, dw, left, right)):
            extra = int(out) + lo + hi - ((size - 1) * s + _extent(k, d))
            if not 0 <= extra < max(s, d):
                raise OpError(f"{self.name}: dy {dy} is not the output of this transposed convolution of a "
                              f"{h}×{wd} input")
        return TensorType((dy.shape[0], c, h, wd), dy.dtype)

    def reference(self, attrs, xs, ps, ctx):
        dy, w = xs
        n, o = dy.shape[:2]
        c, og, kh, kw = w.shape
        g = attrs["groups"]
        (h, wd), (sh, sw), (dh, dw) = attrs["size"], attrs["stride"], attrs["dilation"]
        # the forward cropped its padding from the full output: the full output's gradient is dy padded with zeros
        dyp = _pad(dy, attrs["padding"])
        wg = w.reshape(g, c // g, og, kh, kw)
        dx = np.zeros((n, g, c // g, h, wd), dtype=dy.dtype)
        for i in range(kh):
            for j in range(kw):
                tap = dyp[:, :, _rows(i * dh, h, sh), _rows(j * dw, wd, sw)].reshape(n, g, og, h, wd)
                dx += np.einsum("ngohw,gco->ngchw", tap, wg[..., i, j], optimize=True)
        return dx.reshape(n, c, h, wd)

    def to_onnx(self, node, e):
        a = node.attrs
        dy, w = (e.value(v) for v in node.inputs)
        kh, kw = (int(d) for d in node.inputs[1].type.shape[2:])
        (h, wd), (sh, sw), (dh, dw) = a["size"], a["stride"], a["dilation"]
        top, left, bottom, right = a["padding"]
        oh, ow = (int(d) for d in node.inputs[0].type.shape[2:])
        got = (window_out(oh, kh, sh, top, bottom, dh), window_out(ow, kw, sw, left, right, dw))
        out = e.out(node) if got == (h, wd) else None
        y = e.add_node("Conv", [dy, w], out, kernel_shape=[kh, kw], strides=[sh, sw], pads=list(a["padding"]),
                       dilations=[dh, dw], group=a["groups"])
        if out is None:  # output_padding >= stride: more windows fit than the input had rows
            e.add_node("Slice", [y, e.ints([0, 0], "starts"), e.ints([h, wd], "ends"), e.ints([2, 3], "axes")],
                       e.out(node))


def _check_dense(op: str, a: TensorType, b: TensorType, arg: int) -> None:
    """Two activations of dense/channel_matmul: same batch and trailing (spatial) dimensions."""
    if a.rank < 2 or a.rank != b.rank or a.shape[0] != b.shape[0] or tuple(a.shape[2:]) != tuple(b.shape[2:]):
        raise OpError(f"{op}: {a} and {b} do not fit (same rank >= 2, batch and trailing dimensions)", arg=arg)


@register
class DenseGradInput(OpDef):
    name = "dense_grad_input"
    training_only = True
    doc = ("gradient of dense (and channel_matmul) with respect to x: weightᵀ applied over the channels (axis 1) "
           "of dy [N, units, ...], giving [N, features, ...]")
    inputs = ("dy", "weight")
    fusion = "opaque"

    def infer(self, attrs, in_types):
        dy, w = in_types
        same_dtype(self.name, in_types)
        if dy.rank < 2:
            raise OpError(f"{self.name} expects dy [N, units, ...], got {dy}")
        expect_rank(self.name, w, 2, arg=1)
        if dy.shape[1] != w.shape[0]:
            raise OpError(f"{self.name}: dy {dy} does not fit the weight {w} [units, features]", arg=1)
        return TensorType((dy.shape[0], w.shape[1], *dy.shape[2:]), dy.dtype)

    def reference(self, attrs, xs, ps, ctx):
        dy, w = xs
        n, u = dy.shape[:2]
        dx = np.matmul(w.T, dy.reshape(n, u, -1))  # [F, U] @ [N, U, P] -> [N, F, P]
        return dx.reshape((n, w.shape[1]) + dy.shape[2:]).astype(dy.dtype, copy=False)

    def to_onnx(self, node, e):
        dy, w = (e.value(v) for v in node.inputs)
        rank = node.inputs[0].type.rank
        if rank == 2:
            e.add_node("MatMul", [dy, w], e.out(node))
            return
        # a 1×1 convolution with the transposed weight, as channel_matmul itself exports
        u, f = (int(d) for d in node.inputs[1].type.shape)
        kernel = e.add_node("Reshape", [e.add_node("Transpose", [w], perm=[1, 0]),
                                        e.ints([f, u] + [1] * (rank - 2), "shape")])
        e.add_node("Conv", [dy, kernel], e.out(node))


@register
class DenseGradWeight(OpDef):
    name = "dense_grad_weight"
    training_only = True
    doc = ("gradient of dense (and channel_matmul) with respect to its weight: Σ over the batch and positions of "
           "dy [N, units, ...] times x [N, features, ...], giving [units, features]")
    inputs = ("x", "dy")
    fusion = "reduction"

    def infer(self, attrs, in_types):
        x, dy = in_types
        same_dtype(self.name, in_types)
        _check_dense(self.name, x, dy, 1)
        return TensorType((dy.shape[1], x.shape[1]), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        x, dy = xs
        n, f = x.shape[:2]
        u = dy.shape[1]
        dw = np.einsum("nup,nfp->uf", dy.reshape(n, u, -1), x.reshape(n, f, -1), optimize=True)
        return dw.astype(x.dtype, copy=False)

    def to_onnx(self, node, e):
        x, dy = (e.value(v) for v in node.inputs)
        rank = node.inputs[0].type.rank
        if rank == 2:
            e.add_node("Gemm", [dy, x], e.out(node), transA=1)
            return
        # channels first, everything else flattened: [U, N·P] · [F, N·P]ᵀ
        perm = [1, 0, *range(2, rank)]
        rows = [e.add_node("Reshape", [e.add_node("Transpose", [v], perm=perm), e.ints([0, -1], "shape")])
                for v in (dy, x)]
        e.add_node("Gemm", rows, e.out(node), transB=1)
