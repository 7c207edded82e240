"""Fully connected layer."""

from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..ir.graph import TensorType
from .conv import PARAM_ATTRS, fixed_or_init, input_shift_bias, scaled_bias
from .schema import Attr, Bool, Int, OneOf, OpDef, TensorLiteral, expect_rank, register


@register
class Dense(OpDef):
    name = "dense"
    doc = ("fully connected layer x [N, features] -> [N, units]: x·weightᵀ + bias, weight [units, features] as in "
           "PyTorch Linear. A weight written in the spec is fixed (not trained).")
    attrs = (
        Attr("units", Int(min=1), None, "output features (default: from the fixed weight)", optional=True),
        Attr("bias", OneOf(Bool(), TensorLiteral()), True, "true, false, or fixed bias values"),
        Attr("weight", TensorLiteral(), None, "fixed weight values [units, features]", optional=True),
        *PARAM_ATTRS,
    )
    fusion = "out_fusable"

    def check_attr_combination(self, attrs):
        w = attrs["weight"]
        if w is not None and w.ndim != 2:
            raise OpError(f"{self.name}: the weight written in the spec must be 2-d [units, features], "
                          f"got shape {list(w.shape)}", attr="weight")
        if attrs["units"] is None and w is None:
            raise OpError(f"{self.name}: missing required attribute 'units'", attr="units")

    def _check_input(self, x: TensorType) -> None:
        hint = "insert flatten before dense" if x.rank > 2 else None
        expect_rank(self.name, x, 2, hint=hint)

    def resolve(self, attrs, in_types):
        self._check_input(in_types[0])
        a = dict(attrs)
        if a["units"] is None:
            a["units"] = int(a["weight"].shape[0])
        return a

    def params(self, attrs, in_types):
        features, units = int(in_types[0].shape[1]), attrs["units"]
        specs = [fixed_or_init("weight", (units, features), attrs["weight"], attrs["init"], self.name)]
        bias = attrs["bias"]
        if bias is not False:
            specs.append(fixed_or_init("bias", (units,), None if bias is True else bias, attrs["bias_init"],
                                       self.name))
        return specs

    def infer(self, attrs, in_types):
        x = in_types[0]
        self._check_input(x)
        return TensorType((x.shape[0], attrs["units"]), x.dtype)

    def scale_output(self, attrs, ps, scale, shift):
        return {"weight": np.asarray(ps["weight"], np.float64) * scale.reshape(-1, 1),
                "bias": scaled_bias(ps, scale, shift)}

    def scale_input(self, attrs, ps, scale, shift):
        w = np.asarray(ps["weight"], np.float64)
        return {"weight": w * scale.reshape(1, -1), "bias": input_shift_bias(ps, w, shift)}

    def reference(self, attrs, xs, ps, ctx):
        x = xs[0]
        y = x @ ps["weight"].T
        if "bias" in ps:
            y = y + ps["bias"]
        return y.astype(x.dtype, copy=False)

    def gradient(self, node, dy, gb):
        """dx = dy·weight and dweight = dyᵀ·x over the channels (axis 1; channel_matmul sums its positions too),
        dbias = dy summed over all but the channels."""
        x, w = node.inputs[0], node.params["weight"]
        out = {}
        if gb.wants(0):
            out[0] = gb.op("dense_grad_input", [dy, w])
        if gb.wants("weight"):
            out["weight"] = gb.op("dense_grad_weight", [x, dy])
        if gb.wants("bias"):
            out["bias"] = gb.op("reduce_sum", [dy], axes=[0, *range(2, dy.type.rank)])
        return out

    def to_onnx(self, node, e):
        ins = [e.value(node.inputs[0]), e.value(node.params["weight"])]
        if "bias" in node.params:
            ins.append(e.value(node.params["bias"]))
        e.add_node("Gemm", ins, e.out(node), transB=1)

    def macs(self, attrs, in_types, out_type):
        return int(in_types[0].shape[1]) * attrs["units"]


@register
class ChannelMatmul(Dense):
    name = "channel_matmul"
    doc = ("the same matrix over the channels at every position: x [N, C, ...] -> [N, units, ...], "
           "y[n, :, p] = weight·x[n, :, p] + bias, weight [units, C]; a 1×1 convolution as a matrix product "
           "(what the optimizer lowers 1×1 convolutions to at -O3)")

    blocked_layout = True

    def blockable(self, attrs, in_types):
        return in_types[0].rank == 4

    def packed_shape(self, attrs, role, shape, block):
        if role != "weight":
            return tuple(shape)
        o, c = shape
        return (o // block, c // block, block, block)  # [O/b, C/b, b (in), b (out)]

    def pack_param(self, attrs, role, arr, block):
        if role != "weight":
            return arr
        o, c = arr.shape
        return np.ascontiguousarray(arr.reshape(o // block, block, c // block, block).transpose(0, 2, 3, 1))

    def unpack_param(self, attrs, role, arr, block):
        if role != "weight":
            return arr
        ob, cb, bi, bo = arr.shape
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2).reshape(ob * bo, cb * bi))

    def _check_input(self, x: TensorType) -> None:
        if x.rank < 2:
            raise OpError(f"channel_matmul expects an input [N, C, ...] of rank 2 or more, got {x}", arg=0)

    def infer(self, attrs, in_types):
        x = in_types[0]
        self._check_input(x)
        return TensorType((x.shape[0], attrs["units"], *x.shape[2:]), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        x = xs[0]
        n, c = x.shape[:2]
        y = np.matmul(ps["weight"], x.reshape(n, c, -1))  # [units, C] @ [N, C, P] -> [N, units, P]
        if "bias" in ps:
            y = y + ps["bias"].reshape(-1, 1)
        return y.reshape((n, -1) + x.shape[2:]).astype(x.dtype, copy=False)

    def to_onnx(self, node, e):
        x = node.inputs[0]
        if x.type.rank == 2:
            super().to_onnx(node, e)
            return
        w = node.params["weight"]
        kernel = e.add_node("Reshape", [e.value(w), e.ints([*w.type.shape, *[1] * (x.type.rank - 2)], "shape")])
        ins = [e.value(x), kernel] + ([e.value(node.params["bias"])] if "bias" in node.params else [])
        e.add_node("Conv", ins, e.out(node))

    def macs(self, attrs, in_types, out_type):
        x = in_types[0]
        return int(x.shape[1]) * attrs["units"] * int(np.prod([int(d) for d in x.shape[2:]], dtype=np.int64))
