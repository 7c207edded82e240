"""Gradient ops of the activation family.

    dx = activation_grad(dy, saved; fn, alpha, min, max)   # relu, leaky_relu, elu, selu, sigmoid, tanh, clip
    dx = softmax_grad(dy, y; axis, log)                     # softmax, or log_softmax with log=true

`saved` is what the derivative is cheapest from: the forward output y for sigmoid and tanh (y·(1 - y), 1 - y²),
the forward input x for the others. At a kink (relu's 0, clip's bounds) the derivative is PyTorch's choice: relu,
leaky_relu, elu and selu take the x <= 0 side; clip passes the gradient where min <= x <= max.
"""

from __future__ import annotations

import numpy as np

from ...errors import OpError
from ..activation import SELU_ALPHA, SELU_SCALE
from ..schema import Attr, Bool, Enum, Float, Int, OpDef, register, same_dtype

FNS = ("relu", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "clip")
HAS_ALPHA = ("leaky_relu", "elu")


def _same_shape(op: str, in_types, names: tuple[str, ...]) -> None:
    same_dtype(op, in_types)
    first = in_types[0]
    for i, t in enumerate(in_types[1:], 1):
        if tuple(t.shape) != tuple(first.shape):
            raise OpError(f"{op}: {names[i]} {t} does not have the shape of {names[0]} {first}", arg=i)


@register
class ActivationGrad(OpDef):
    name = "activation_grad"
    training_only = True
    doc = ("gradient of an elementwise activation fn: dy·fn'(saved), saved being the forward output for sigmoid and "
           "tanh, the forward input otherwise")
    inputs = ("dy", "saved")
    attrs = (
        Attr("fn", Enum(*FNS), doc="the forward activation"),
        Attr("alpha", Float(), None, "leaky_relu's negative slope or elu's alpha", optional=True),
        Attr("min", Float(), None, "clip's lower bound", optional=True),
        Attr("max", Float(), None, "clip's upper bound", optional=True),
    )
    fusion = "elementwise"

    def check_attr_combination(self, attrs):
        fn = attrs["fn"]
        if (attrs["alpha"] is None) == (fn in HAS_ALPHA):
            raise OpError(f"activation_grad: alpha is {'required' if fn in HAS_ALPHA else 'not used'} for {fn}",
                          attr="alpha")
        bounds = attrs["min"] is not None or attrs["max"] is not None
        if fn == "clip" and not bounds:
            raise OpError("activation_grad: clip needs min, max or both", attr="min")
        if fn != "clip" and bounds:
            raise OpError(f"activation_grad: min and max are clip's bounds, not {fn}'s", attr="min")
        if None not in (attrs["min"], attrs["max"]) and attrs["min"] > attrs["max"]:
            raise OpError(f"activation_grad: min ({attrs['min']:g}) is above max ({attrs['max']:g})", attr="min")

    def infer(self, attrs, in_types):
        _same_shape(self.name, in_types, self.inputs)
        return in_types[0]

    def reference(self, attrs, xs, ps, ctx):
        dy, s = xs
        fn = attrs["fn"]
        if fn == "sigmoid":
            g = dy * s * (1 - s)
        elif fn == "tanh":
            g = dy * (1 - s * s)
        elif fn == "clip":
            keep = np.ones(s.shape, bool)
            if attrs["min"] is not None:
                keep &= s >= attrs["min"]
            if attrs["max"] is not None:
                keep &= s <= attrs["max"]
            g = np.where(keep, dy, 0)
        elif fn == "relu":
            g = np.where(s > 0, dy, 0)
        elif fn == "leaky_relu":
            g = np.where(s > 0, dy, dy * attrs["alpha"])
        else:  # elu, selu: the exponential of min(x, 0), so a large positive x cannot overflow in the unused branch
            alpha, scale = (attrs["alpha"], 1.0) if fn == "elu" else (SELU_ALPHA, SELU_SCALE)
            g = np.where(s > 0, dy, dy * (alpha * np.exp(np.minimum(s, 0)))) * scale
        return np.asarray(g, dtype=dy.dtype)

    def to_onnx(self, node, e):
        dy, s = (e.value(v) for v in node.inputs)
        a, fn, out = node.attrs, node.attrs["fn"], e.out(node)
        if fn == "sigmoid":
            d = e.add_node("Mul", [s, e.add_node("Sub", [e.scalar(1.0, "one"), s])])
            e.add_node("Mul", [dy, d], out)
        elif fn == "tanh":
            d = e.add_node("Sub", [e.scalar(1.0, "one"), e.add_node("Mul", [s, s])])
            e.add_node("Mul", [dy, d], out)
        elif fn == "clip":
            keep = None
            for bound, cmp in (("min", "GreaterOrEqual"), ("max", "LessOrEqual")):
                if a[bound] is not None:
                    test = e.add_node(cmp, [s, e.scalar(a[bound], bound)])
                    keep = test if keep is None else e.add_node("And", [keep, test])
            e.add_node("Where", [keep, dy, e.scalar(0.0, "zero")], out)
        else:
            zero = e.scalar(0.0, "zero")
            positive = e.add_node("Greater", [s, zero])
            if fn == "relu":
                neg = zero
            elif fn == "leaky_relu":
                neg = e.add_node("Mul", [dy, e.scalar(a["alpha"], "alpha")])
            else:
                alpha = a["alpha"] if fn == "elu" else SELU_ALPHA
                exp = e.add_node("Exp", [e.add_node("Min", [s, zero])])
                neg = e.add_node("Mul", [dy, e.add_node("Mul", [exp, e.scalar(alpha, "alpha")])])
            if fn == "selu":
                g = e.add_node("Where", [positive, dy, neg])
                e.add_node("Mul", [g, e.scalar(SELU_SCALE, "scale")], out)
            else:
                e.add_node("Where", [positive, dy, neg], out)


@register
class SoftmaxGrad(OpDef):
    name = "softmax_grad"
    training_only = True
    doc = ("gradient of softmax along axis from its output y: y·(dy - Σ dy·y); with log=true of log_softmax: "
           "dy - exp(y)·Σ dy")
    inputs = ("dy", "y")
    attrs = (
        Attr("axis", Int(min=1), doc="the (non-negative) axis the forward op normalized over"),
        Attr("log", Bool(), False, "the forward op was log_softmax"),
    )
    fusion = "opaque"

    def infer(self, attrs, in_types):
        _same_shape(self.name, in_types, self.inputs)
        if attrs["axis"] >= in_types[0].rank:
            raise OpError(f"softmax_grad: axis {attrs['axis']} is out of range for {in_types[0]}", attr="axis")
        return in_types[0]

    def reference(self, attrs, xs, ps, ctx):
        dy, y = xs
        axis = attrs["axis"]
        if attrs["log"]:
            g = dy - np.exp(y) * dy.sum(axis=axis, keepdims=True)
        else:
            g = y * (dy - (dy * y).sum(axis=axis, keepdims=True))
        return np.asarray(g, dtype=dy.dtype)

    def to_onnx(self, node, e):
        dy, y = (e.value(v) for v in node.inputs)
        axes = e.ints([node.attrs["axis"]], "axes")
        if node.attrs["log"]:
            total = e.add_node("ReduceSum", [dy, axes], keepdims=1)
            e.add_node("Sub", [dy, e.add_node("Mul", [e.add_node("Exp", [y]), total])], e.out(node))
        else:
            total = e.add_node("ReduceSum", [e.add_node("Mul", [dy, y]), axes], keepdims=1)
            e.add_node("Mul", [y, e.add_node("Sub", [dy, total])], e.out(node))
