"""Convolutions: conv2d and conv_transpose2d."""

from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..ir.graph import Init, TensorType
from .schema import (Attr, Bool, InitKind, Int, Ints, OneOf, OpDef, Padding, Pads, ParamSpec, TensorLiteral,
                     Window, expect_rank, register, resolve_padding, sliding_windows, window_out)

# Attributes every parameterized layer shares: how its parameters are made and whether they train.
PARAM_ATTRS = (
    Attr("init", InitKind(), Init("he_normal"), "initializer of the weight"),
    Attr("bias_init", InitKind(), Init("zeros"), "initializer of the bias"),
    Attr("frozen", Bool(), False, "parameters are loaded or initialized but never trained"),
)


def fixed_or_init(name: str, shape: tuple[int, ...], literal: np.ndarray | None, init: Init, op: str) -> ParamSpec:
    """A parameter either written in the spec (`weight=[[...]]`, fixed) or made by an initializer."""
    if literal is None:
        return ParamSpec(name, shape, "trainable", init)
    if literal.shape != shape:
        raise OpError(f"{op}: the {name} written in the spec has shape {list(literal.shape)}, "
                      f"but this layer needs {list(shape)}", attr=name)
    return ParamSpec(name, shape, "trainable", init, data=literal)


def check_groups(op: str, x: TensorType, out_channels: int, groups: int) -> None:
    """Both channel counts of a grouped convolution must split evenly into the groups."""
    c = int(x.shape[1])
    if c % groups:
        raise OpError(f"{op}: input channels ({c}) are not divisible by groups ({groups}); input is {x}",
                      attr="groups")
    if out_channels % groups:
        raise OpError(f"{op}: out_channels ({out_channels}) is not divisible by groups ({groups})",
                      attr="out_channels")


@register
class Conv2d(OpDef):
    name = "conv2d"
    doc = ("2-d convolution of x [N, C, H, W] (cross-correlation, as in every framework; flip=true for true "
           "convolution with the kernel flipped). groups splits channels; depthwise=true means groups = C and "
           "out_channels defaults to C. A weight written in the spec is fixed (not trained).")
    attrs = (
        Attr("out_channels", Int(min=1), None, "output channels (default with depthwise: the input channels)",
             optional=True),
        Attr("kernel", Ints(2), None, "kernel size: k or [kh, kw] (default: the fixed weight's)", optional=True),
        Attr("stride", Ints(2), (1, 1)),
        Attr("padding", Padding(), (0, 0, 0, 0)),
        Attr("dilation", Ints(2), (1, 1)),
        Attr("groups", Int(min=1), 1),
        Attr("depthwise", Bool(), False, "groups = input channels"),
        Attr("bias", OneOf(Bool(), TensorLiteral()), True, "true, false, or fixed bias values"),
        Attr("weight", TensorLiteral(), None, "fixed weight values [out, in/groups, kh, kw]", optional=True),
        Attr("flip", Bool(), False, "true convolution: flip the kernel spatially"),
        *PARAM_ATTRS,
    )
    fusion = "out_fusable"

    def check_attr_combination(self, attrs):
        if attrs["out_channels"] is None and not attrs["depthwise"] and attrs["weight"] is None:
            raise OpError("conv2d: missing required attribute 'out_channels'", attr="out_channels")
        if attrs["kernel"] is None:
            w = attrs["weight"]
            if w is None or w.ndim != 4:
                raise OpError("conv2d: missing required attribute 'kernel'", attr="kernel")
        if attrs["depthwise"] and attrs["groups"] != 1:
            raise OpError("conv2d: give either depthwise=true or groups, not both", attr="groups")

    def resolve(self, attrs, in_types):
        (x,) = in_types
        expect_rank(self.name, x, 4)
        a = dict(attrs)
        c = int(x.shape[1])
        w = a["weight"]
        if a["kernel"] is None:
            a["kernel"] = (int(w.shape[2]), int(w.shape[3]))
        if a["depthwise"]:
            a["groups"] = c
            a["out_channels"] = a["out_channels"] or c
        if a["out_channels"] is None:
            a["out_channels"] = int(w.shape[0])
        del a["depthwise"]
        check_groups(self.name, x, a["out_channels"], a["groups"])
        a["padding"] = resolve_padding(a, x, a["kernel"], a["stride"], a["dilation"])
        return a

    def params(self, attrs, in_types):
        x = in_types[0]
        o, g, (kh, kw) = attrs["out_channels"], attrs["groups"], attrs["kernel"]
        specs = [fixed_or_init("weight", (o, int(x.shape[1]) // g, kh, kw), attrs["weight"], attrs["init"],
                               self.name)]
        bias = attrs["bias"]
        if bias is not False:
            specs.append(fixed_or_init("bias", (o,), None if bias is True else bias, attrs["bias_init"], self.name))
        return specs

    def infer(self, attrs, in_types):
        x = in_types[0]
        (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs["dilation"]
        top, left, bottom, right = attrs["padding"]
        h, w = int(x.shape[2]), int(x.shape[3])
        oh = window_out(h, kh, sh, top, bottom, dh)
        ow = window_out(w, kw, sw, left, right, dw)
        if oh < 1 or ow < 1:
            raise OpError(f"conv2d: the {kh}×{kw} kernel (dilation {dh}×{dw}) does not fit the padded "
                          f"{h + top + bottom}×{w + left + right} input {x}")
        return TensorType((x.shape[0], attrs["out_channels"], oh, ow), x.dtype)

    blocked_layout = True

    def channel_affine(self, attrs, ps):
        # a depthwise 1×1 convolution (stride 1, no padding) is x·w + b per channel: what ONNX importers make of a
        # per-channel Mul/Add, and foldable into the layer before it like batchnorm
        o = attrs["out_channels"]
        if (tuple(attrs["kernel"]) != (1, 1) or tuple(attrs["stride"]) != (1, 1) or any(attrs["padding"])
                or attrs["groups"] != o or attrs.get("epilogue")):
            return None
        scale = np.asarray(ps["weight"], np.float64).reshape(o)
        shift = np.asarray(ps["bias"], np.float64) if "bias" in ps else np.zeros(o)
        return scale, shift

    def blockable(self, attrs, in_types):
        c = int(in_types[0].shape[1])
        return attrs["groups"] == 1 or attrs["groups"] == c == attrs["out_channels"]

    def packed_shape(self, attrs, role, shape, block):
        if role != "weight":
            return tuple(shape)
        o, ci, kh, kw = shape
        if attrs["groups"] == 1:  # OIHW{b}i{b}o: a block of input channels times a block of output channels
            return (o // block, ci // block, kh, kw, block, block)
        return (o // block, kh, kw, block)  # depthwise: one filter per channel, a block of channels side by side

    def pack_param(self, attrs, role, arr, block):
        if role != "weight":
            return arr
        o, ci, kh, kw = arr.shape
        if attrs["groups"] == 1:
            return np.ascontiguousarray(arr.reshape(o // block, block, ci // block, block, kh, kw)
                                        .transpose(0, 2, 4, 5, 3, 1))
        return np.ascontiguousarray(arr.reshape(o // block, block, kh, kw).transpose(0, 2, 3, 1))

    def unpack_param(self, attrs, role, arr, block):
        if role != "weight":
            return arr
        if attrs["groups"] == 1:
            ob, cb, kh, kw, bi, bo = arr.shape
            return np.ascontiguousarray(arr.transpose(0, 5, 1, 4, 2, 3).reshape(ob * bo, cb * bi, kh, kw))
        ob, kh, kw, b = arr.shape
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2).reshape(ob * b, 1, kh, kw))

    def scale_output(self, attrs, ps, scale, shift):
        w = np.asarray(ps["weight"], np.float64) * scale.reshape(-1, 1, 1, 1)
        return {"weight": w, "bias": scaled_bias(ps, scale, shift)}

    def scale_input(self, attrs, ps, scale, shift):
        if attrs["groups"] != 1 or any(attrs["padding"]):  # padding zeros would be shifted too
            return None
        w = np.asarray(ps["weight"], np.float64)
        return {"weight": w * scale.reshape(1, -1, 1, 1), "bias": input_shift_bias(ps, w.sum(axis=(2, 3)), shift)}

    def reference(self, attrs, xs, ps, ctx):
        x, w = xs[0], ps["weight"]
        n, c = x.shape[:2]
        o, g = attrs["out_channels"], attrs["groups"]
        top, left, bottom, right = attrs["padding"]
        if attrs["flip"]:
            w = w[:, :, ::-1, ::-1]
        xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        oh = window_out(x.shape[2], attrs["kernel"][0], attrs["stride"][0], top, bottom, attrs["dilation"][0])
        ow = window_out(x.shape[3], attrs["kernel"][1], attrs["stride"][1], left, right, attrs["dilation"][1])
        win = sliding_windows(xp, attrs["kernel"], attrs["stride"], attrs["dilation"], (oh, ow))
        win = win.reshape(n, g, c // g, oh, ow, *attrs["kernel"])
        wg = w.reshape(g, o // g, c // g, *attrs["kernel"])
        y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, o, oh, ow)
        if "bias" in ps:
            y = y + ps["bias"].reshape(1, o, 1, 1)
        return y.astype(x.dtype, copy=False)

    def gradient(self, node, dy, gb):
        """dx is a transposed convolution of dy, the weight's gradient correlates x with dy (both undo `flip`), the
        bias's sums dy over all but the channels."""
        a = node.attrs
        x, w = node.inputs[0], node.params["weight"]
        geometry = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"], groups=a["groups"],
                        flip=a["flip"])
        out = {}
        if gb.wants(0):
            out[0] = gb.op("conv2d_grad_input", [dy, w], size=x.type.shape[2:], **geometry)
        if gb.wants("weight"):
            out["weight"] = gb.op("conv2d_grad_weight", [x, dy], kernel=a["kernel"], **geometry)
        if gb.wants("bias"):
            out["bias"] = gb.op("reduce_sum", [dy], axes=[0, 2, 3])
        return out

    def to_onnx(self, node, e):
        a = node.attrs
        w = node.params["weight"]
        if a["flip"]:
            if e.graph.params[w.name].data is not None:  # fixed: flip the constant
                weight = e.const(e.param_array(w)[:, :, ::-1, ::-1], "weight_flipped")
            else:
                weight = e.add_node("Slice", [e.value(w), e.ints([-1, -1], "starts"),
                                              e.ints([-(1 << 62), -(1 << 62)], "ends"), e.ints([2, 3], "axes"),
                                              e.ints([-1, -1], "steps")], e.tmp("weight_flipped"))
        else:
            weight = e.value(w)
        ins = [e.value(node.inputs[0]), weight] + ([e.value(node.params["bias"])] if "bias" in node.params else [])
        e.add_node("Conv", ins, e.out(node), kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                   pads=list(a["padding"]), dilations=list(a["dilation"]), group=a["groups"])

    def macs(self, attrs, in_types, out_type):
        _, o, oh, ow = out_type.shape
        kh, kw = attrs["kernel"]
        return int(o) * int(oh) * int(ow) * (int(in_types[0].shape[1]) // attrs["groups"]) * kh * kw

    def window(self, attrs):
        (kh, kw), (dh, dw) = attrs["kernel"], attrs["dilation"]
        return Window(((kh - 1) * dh + 1, (kw - 1) * dw + 1), attrs["stride"])


@register
class ConvTranspose2d(OpDef):
    name = "conv_transpose2d"
    doc = ("2-d transposed convolution of x [N, C, H, W] (the input-gradient of conv2d, as PyTorch ConvTranspose2d "
           "and ONNX ConvTranspose): weight [C, out_channels/groups, kh, kw]; padding is cropped from the output, "
           "output_padding extends it at the bottom/right. A weight written in the spec is fixed (not trained).")
    attrs = (
        Attr("out_channels", Int(min=1), None, "output channels (default: from the fixed weight)", optional=True),
        Attr("kernel", Ints(2), None, "kernel size: k or [kh, kw] (default: the fixed weight's)", optional=True),
        Attr("stride", Ints(2), (1, 1)),
        Attr("padding", Pads(), (0, 0, 0, 0), "rows/columns cropped from each side of the full output"),
        Attr("output_padding", Ints(2, min=0), (0, 0), "extra rows/columns at the bottom/right of the output"),
        Attr("dilation", Ints(2), (1, 1)),
        Attr("groups", Int(min=1), 1),
        Attr("bias", OneOf(Bool(), TensorLiteral()), True, "true, false, or fixed bias values"),
        Attr("weight", TensorLiteral(), None, "fixed weight values [in, out/groups, kh, kw]", optional=True),
        *PARAM_ATTRS,
    )
    fusion = "out_fusable"

    def check_attr_combination(self, attrs):
        w = attrs["weight"]
        if w is not None and w.ndim != 4:
            raise OpError(f"conv_transpose2d: the weight written in the spec must be 4-d [in, out/groups, kh, kw], "
                          f"got shape {list(w.shape)}", attr="weight")
        if attrs["out_channels"] is None and w is None:
            raise OpError("conv_transpose2d: missing required attribute 'out_channels'", attr="out_channels")
        if attrs["kernel"] is None and w is None:
            raise OpError("conv_transpose2d: missing required attribute 'kernel'", attr="kernel")
        op, s, d = attrs["output_padding"], attrs["stride"], attrs["dilation"]
        if any(p >= max(si, di) for p, si, di in zip(op, s, d)):
            raise OpError(f"conv_transpose2d: output_padding {list(op)} must be smaller than the stride {list(s)} "
                          f"or the dilation {list(d)} in each dimension", attr="output_padding")

    def resolve(self, attrs, in_types):
        (x,) = in_types
        expect_rank(self.name, x, 4)
        a = dict(attrs)
        g, w = a["groups"], a["weight"]
        if a["kernel"] is None:
            a["kernel"] = (int(w.shape[2]), int(w.shape[3]))
        if a["out_channels"] is None:
            a["out_channels"] = int(w.shape[1]) * g
        check_groups(self.name, x, a["out_channels"], g)
        return a

    def params(self, attrs, in_types):
        c = int(in_types[0].shape[1])
        o, g, (kh, kw) = attrs["out_channels"], attrs["groups"], attrs["kernel"]
        specs = [fixed_or_init("weight", (c, o // g, kh, kw), attrs["weight"], attrs["init"], self.name)]
        bias = attrs["bias"]
        if bias is not False:
            specs.append(fixed_or_init("bias", (o,), None if bias is True else bias, attrs["bias_init"], self.name))
        return specs

    @staticmethod
    def _full(size: int, kernel: int, stride: int, dilation: int, out_pad: int) -> int:
        """Length of the uncropped output (before padding is removed), output_padding included."""
        return (size - 1) * stride + dilation * (kernel - 1) + 1 + out_pad

    def _out_hw(self, attrs, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw), (oph, opw) = (attrs["kernel"], attrs["stride"], attrs["dilation"],
                                                    attrs["output_padding"])
        top, left, bottom, right = attrs["padding"]
        return (self._full(h, kh, sh, dh, oph) - top - bottom, self._full(w, kw, sw, dw, opw) - left - right)

    def infer(self, attrs, in_types):
        x = in_types[0]
        expect_rank(self.name, x, 4)
        oh, ow = self._out_hw(attrs, int(x.shape[2]), int(x.shape[3]))
        if oh < 1 or ow < 1:
            raise OpError(f"conv_transpose2d: padding {list(attrs['padding'])} crops the whole output of input {x} "
                          f"(output would be {oh}×{ow})", attr="padding")
        return TensorType((x.shape[0], attrs["out_channels"], oh, ow), x.dtype)

    def scale_output(self, attrs, ps, scale, shift):
        w = np.asarray(ps["weight"], np.float64)  # [in, out / groups, kh, kw]
        g = attrs["groups"]
        c, og, kh, kw = w.shape
        w = (w.reshape(g, c // g, og, kh, kw) * scale.reshape(g, 1, og, 1, 1)).reshape(c, og, kh, kw)
        return {"weight": w, "bias": scaled_bias(ps, scale, shift)}

    def reference(self, attrs, xs, ps, ctx):
        x, w = xs[0], ps["weight"]
        n, c, h, wd = x.shape
        o, g = attrs["out_channels"], attrs["groups"]
        (kh, kw), (sh, sw), (dh, dw), (oph, opw) = (attrs["kernel"], attrs["stride"], attrs["dilation"],
                                                    attrs["output_padding"])
        top, left, bottom, right = attrs["padding"]
        fh, fw = self._full(h, kh, sh, dh, oph), self._full(wd, kw, sw, dw, opw)
        y = np.zeros((n, o, fh, fw), dtype=np.result_type(x, w))
        xg = x.reshape(n, g, c // g, h, wd)
        wg = w.reshape(g, c // g, o // g, kh, kw)
        for i in range(kh):  # scatter every kernel tap: input (r, s) lands on output (r*stride + i*dilation, ...)
            for j in range(kw):
                tap = np.einsum("ngchw,gco->ngohw", xg, wg[..., i, j], optimize=True).reshape(n, o, h, wd)
                y[:, :, i * dh:i * dh + (h - 1) * sh + 1:sh, j * dw:j * dw + (wd - 1) * sw + 1:sw] += tap
        y = y[:, :, top:fh - bottom, left:fw - right]
        if "bias" in ps:
            y = y + ps["bias"].reshape(1, o, 1, 1)
        return y.astype(x.dtype, copy=False)

    def gradient(self, node, dy, gb):
        """conv_transpose2d is the adjoint of a conv2d with the same weight and geometry, so its input's gradient is
        that conv2d of dy, and its weight's gradient is conv2d's weight gradient with the roles of x and dy swapped."""
        a = node.attrs
        x, w = node.inputs[0], node.params["weight"]
        geometry = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"], groups=a["groups"])
        out = {}
        if gb.wants(0):
            out[0] = gb.op("conv_transpose2d_grad_input", [dy, w], size=x.type.shape[2:], **geometry)
        if gb.wants("weight"):
            out["weight"] = gb.op("conv2d_grad_weight", [dy, x], kernel=a["kernel"], **geometry)
        if gb.wants("bias"):
            out["bias"] = gb.op("reduce_sum", [dy], axes=[0, 2, 3])
        return out

    def to_onnx(self, node, e):
        a = node.attrs
        ins = [e.value(node.inputs[0]), e.value(node.params["weight"])]
        if "bias" in node.params:
            ins.append(e.value(node.params["bias"]))
        geometry = dict(kernel_shape=list(a["kernel"]), strides=list(a["stride"]), dilations=list(a["dilation"]),
                        group=a["groups"])
        out_pad = a["output_padding"]
        if all(p < s for p, s in zip(out_pad, a["stride"])):
            e.add_node("ConvTranspose", ins, e.out(node), pads=list(a["padding"]), output_padding=list(out_pad),
                       **geometry)
            return
        # onnxruntime rejects output_padding >= stride (allowed below the dilation): the zeros output_padding appends
        # are cropped first by the bottom/right padding, and what remains of them is appended with Pad; the bias
        # comes last, as it covers those rows too
        top, left, bottom, right = a["padding"]
        y = e.add_node("ConvTranspose", ins[:2], pads=[top, left, max(bottom - out_pad[0], 0),
                                                       max(right - out_pad[1], 0)], **geometry)
        pads = e.ints([0, 0, 0, 0, 0, 0, max(out_pad[0] - bottom, 0), max(out_pad[1] - right, 0)], "pads")
        if len(ins) == 2:
            e.add_node("Pad", [y, pads], e.out(node), mode="constant")
            return
        bias = e.add_node("Reshape", [ins[2], e.ints([-1, 1, 1], "shape")])
        e.add_node("Add", [e.add_node("Pad", [y, pads], mode="constant"), bias], e.out(node))

    def macs(self, attrs, in_types, out_type):
        _, c, h, w = in_types[0].shape
        kh, kw = attrs["kernel"]
        return int(c) * int(h) * int(w) * (attrs["out_channels"] // attrs["groups"]) * kh * kw

    def window(self, attrs):
        """Seen from the output, one pixel depends on ceil(extent / stride) input pixels per axis, and the output
        grid is `stride` times finer (scale)."""
        (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs["dilation"]
        eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        return Window((-(-eh // sh), -(-ew // sw)), (1, 1), scale=(float(sh), float(sw)))


def scaled_bias(ps, scale, shift):
    b = ps.get("bias")
    return shift if b is None else np.asarray(b, np.float64) * scale + shift


def input_shift_bias(ps, w_matrix, shift):
    """The bias of a layer reading x + shift: its own plus weight·shift."""
    b = ps.get("bias")
    extra = w_matrix @ shift
    return extra if b is None else np.asarray(b, np.float64) + extra
