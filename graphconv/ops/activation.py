"""Elementwise activations (and dropout). `Unary` is the shared base: shape and dtype pass through, the reference is
one numpy expression. `AxisUnary` adds the `axis` attribute of softmax and log_softmax."""

from __future__ import annotations

import numpy as np

from ..errors import OpError
from .schema import Attr, Float, Int, OpDef, register

# SELU's fixed constants (Klambauer et al. 2017), as PyTorch writes them.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class Unary(OpDef):
    blocked_layout = True
    fusion = "elementwise"
    onnx_op = ""  # the ONNX op of the same name and semantics; onnx_attrs() gives its attributes

    def onnx_attrs(self, attrs: dict) -> dict:
        return {}

    def to_onnx(self, node, e):
        if not self.onnx_op:
            return super().to_onnx(node, e)
        e.add_node(self.onnx_op, [e.value(node.inputs[0])], e.out(node), **self.onnx_attrs(node.attrs))

    def infer(self, attrs, in_types):
        return in_types[0]

    def reference(self, attrs, xs, ps, ctx):
        return np.asarray(self.fn(xs[0], attrs), dtype=xs[0].dtype)

    def fn(self, x: np.ndarray, attrs: dict) -> np.ndarray:
        raise NotImplementedError

    # The gradient rule: dy·f'(saved) by activation_grad (ops/grad/activation.py) with fn = this op's name.
    grad_attrs: tuple[str, ...] | None = None  # attributes it passes on (alpha, min, max); None: no such rule
    grad_from_output = False  # f' is cheapest from the output (sigmoid, tanh); else from the input

    def gradient(self, node, dy, gb):
        if self.grad_attrs is None:
            return super().gradient(node, dy, gb)
        if not gb.wants(0):
            return {}
        saved = node.output if self.grad_from_output else node.inputs[0]
        attrs = {k: node.attrs[k] for k in self.grad_attrs}
        return {0: gb.op("activation_grad", [dy, saved], fn=self.name, **attrs)}


@register
class Relu(Unary):
    name = "relu"
    doc = "max(x, 0)"
    onnx_op = "Relu"
    grad_attrs = ()

    def fn(self, x, attrs):
        return np.maximum(x, 0)


@register
class LeakyRelu(Unary):
    name = "leaky_relu"
    doc = "x for x >= 0, alpha·x below"
    onnx_op = "LeakyRelu"

    def onnx_attrs(self, attrs):
        return {"alpha": attrs["alpha"]}
    attrs = (Attr("alpha", Float(), 0.01, "slope for negative inputs"),)
    grad_attrs = ("alpha",)

    def fn(self, x, attrs):
        return np.where(x >= 0, x, x * attrs["alpha"])


def _elu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


@register
class Elu(Unary):
    name = "elu"
    doc = "x for x > 0, alpha·(exp(x) - 1) below"
    onnx_op = "Elu"

    def onnx_attrs(self, attrs):
        return {"alpha": attrs["alpha"]}
    attrs = (Attr("alpha", Float(), 1.0),)
    grad_attrs = ("alpha",)

    def fn(self, x, attrs):
        return _elu(x, attrs["alpha"])


@register
class Selu(Unary):
    name = "selu"
    doc = "scale·elu(x, alpha) with PyTorch's constants alpha ≈ 1.6733, scale ≈ 1.0507"
    onnx_op = "Selu"
    grad_attrs = ()

    def onnx_attrs(self, attrs):
        return {"alpha": SELU_ALPHA, "gamma": SELU_SCALE}

    def fn(self, x, attrs):
        return SELU_SCALE * _elu(x, SELU_ALPHA)


@register
class Sigmoid(Unary):
    name = "sigmoid"
    doc = "1 / (1 + exp(-x)), computed without overflow"
    onnx_op = "Sigmoid"
    grad_attrs, grad_from_output = (), True

    def fn(self, x, attrs):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@register
class Tanh(Unary):
    name = "tanh"
    doc = "hyperbolic tangent"
    onnx_op = "Tanh"
    grad_attrs, grad_from_output = (), True

    def fn(self, x, attrs):
        return np.tanh(x)


@register
class Clip(Unary):
    name = "clip"
    doc = "clamp to [min, max]; either bound may be left out (relu6 is clip(min=0, max=6))"
    attrs = (
        Attr("min", Float(), None, "lower bound", optional=True),
        Attr("max", Float(), None, "upper bound", optional=True),
    )
    grad_attrs = ("min", "max")

    def check_attr_combination(self, attrs):
        lo, hi = attrs["min"], attrs["max"]
        if lo is None and hi is None:
            raise OpError("clip: give min, max or both", attr="min")
        if lo is not None and hi is not None and lo > hi:
            raise OpError(f"clip: min ({lo:g}) is above max ({hi:g})", attr="min")

    def to_onnx(self, node, e):
        a = node.attrs
        lo = "" if a["min"] is None else e.scalar(a["min"], "min")
        hi = "" if a["max"] is None else e.scalar(a["max"], "max")
        ins = [e.value(node.inputs[0]), lo] + ([hi] if hi else [])
        e.add_node("Clip", ins, e.out(node))

    def fn(self, x, attrs):
        if attrs["min"] is not None:
            x = np.maximum(x, attrs["min"])
        if attrs["max"] is not None:
            x = np.minimum(x, attrs["max"])
        return x


class AxisUnary(Unary):
    blocked_layout = False  # along an axis: the channel axis is split in the blocked layout
    """A shape-preserving op along one non-batch axis; `axis` may be negative and is stored non-negative."""

    attrs = (Attr("axis", Int(), 1, "the axis to normalize over (negative counts from the end; 0 is the batch)"),)
    fusion = "opaque"

    def resolve(self, attrs, in_types):
        x, axis = in_types[0], attrs["axis"]
        if not -x.rank <= axis < x.rank:
            raise OpError(f"{self.name}: axis {axis} is out of range for {x}", attr="axis")
        axis %= x.rank
        if axis == 0:
            raise OpError(f"{self.name}: axis {attrs['axis']} is the batch dimension of {x}", attr="axis",
                          hint="samples must stay independent; use axis=1 (channels) or a later axis")
        return {**attrs, "axis": axis}

    def onnx_attrs(self, attrs):
        return {"axis": attrs["axis"]}

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        return {0: gb.op("softmax_grad", [dy, node.output], axis=node.attrs["axis"],
                         log=self.name == "log_softmax")}


@register
class Softmax(AxisUnary):
    name = "softmax"
    doc = "exp(x) / sum(exp(x)) along axis (max-subtracted for stability)"
    onnx_op = "Softmax"

    def fn(self, x, attrs):
        e = np.exp(x - x.max(axis=attrs["axis"], keepdims=True))
        return e / e.sum(axis=attrs["axis"], keepdims=True)


@register
class LogSoftmax(AxisUnary):
    name = "log_softmax"
    doc = "x - log(sum(exp(x))) along axis (max-subtracted for stability)"
    onnx_op = "LogSoftmax"

    def fn(self, x, attrs):
        shifted = x - x.max(axis=attrs["axis"], keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=attrs["axis"], keepdims=True))


@register
class Dropout(Unary):
    name = "dropout"
    stochastic = True
    passes_through = "inference"
    doc = ("identity at inference; in training zeroes each element with probability rate (mask from ctx.rng) and "
           "scales the rest by 1/(1 - rate)")
    attrs = (Attr("rate", Float(min=0.0, max=1.0), 0.5, "probability of dropping an element, 0 <= rate < 1"),)

    def check_attr_combination(self, attrs):
        if attrs["rate"] >= 1.0:
            raise OpError(f"dropout: rate must be below 1, got {attrs['rate']:g}", attr="rate")

    def reference(self, attrs, xs, ps, ctx):
        x, rate = xs[0], attrs["rate"]
        if not ctx.training or rate == 0.0:
            return x.copy()
        keep = ctx.rng.random(x.shape) >= rate
        return np.where(keep, x * (1.0 / (1.0 - rate)), 0).astype(x.dtype, copy=False)

    def gradient(self, node, dy, gb):
        """The identity's gradient when rate is 0. Training graphs never get here with a rate: the autodiff pass
        has made such a dropout a product with a mask input (mul's rule)."""
        if node.attrs["rate"] != 0.0:
            from ..errors import TrainingError
            raise TrainingError(f"dropout '{node.name}' (rate {node.attrs['rate']:g}) has no fixed mask; "
                                "differentiate() puts the graph in training mode, which gives it one")
        return {0: dy} if gb.wants(0) else {}

    def to_onnx(self, node, e):
        # inference: Dropout with training_mode off is the identity (kept as Dropout to preserve the rate)
        e.add_node("Dropout", [e.value(node.inputs[0]), e.scalar(node.attrs["rate"], "ratio")], e.out(node))
