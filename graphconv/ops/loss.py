"""Losses: the ops a training graph ends with (graphconv.train.autodiff adds them) and their gradients.

A loss reduces to shape [1], already scaled by its `scale` (the weight of the loss) (several weighted losses add up to the total), and is
the mean over the batch, as PyTorch's default `reduction="mean"`. Its gradient rule needs no incoming gradient:
the total's gradient is 1.
"""

from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..ir.graph import TensorType
from .schema import Attr, Float, OpDef, register, same_dtype


def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    s = z - m
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def _smoothed(t: np.ndarray, ls: float) -> np.ndarray:
    return t * (1.0 - ls) + ls / t.shape[1] if ls else t


def _batch_size(e, x: str) -> str:
    """ONNX: the batch size of tensor `x` as a float scalar."""
    n = e.add_node("Gather", [e.add_node("Shape", [x]), e.ints([0], "zero")], axis=0)
    return e.add_node("Cast", [n], to=e.elem_type)


class LossOp(OpDef):
    inputs = ("prediction", "target")
    is_loss = True

    def _check(self, in_types):
        y, t = in_types
        same_dtype(self.name, in_types)
        if tuple(y.shape) != tuple(t.shape):
            raise OpError(f"{self.name}: the target {t} does not have the prediction's shape {y}", arg=1)

    def infer(self, attrs, in_types):
        self._check(in_types)
        return TensorType((1,), in_types[0].dtype)


@register
class SoftmaxCrossEntropy(LossOp):
    name = "softmax_cross_entropy"
    training_only = True
    doc = ("scale · mean over the batch of -Σ t'·log_softmax(logits), logits and targets [N, classes]; targets "
           "are class probabilities (one-hot), smoothed as t' = t·(1 - label_smoothing) + label_smoothing/classes "
           "(PyTorch's CrossEntropyLoss)")
    attrs = (Attr("label_smoothing", Float(min=0.0, max=1.0), 0.0), Attr("scale", Float(), 1.0, "the loss's weight in the total"))

    def infer(self, attrs, in_types):
        if in_types[0].rank != 2:
            raise OpError(f"cross-entropy needs logits [N, classes], got {in_types[0]}")
        return super().infer(attrs, in_types)

    def reference(self, attrs, xs, ps, ctx):
        z, t = xs
        t = _smoothed(t, attrs["label_smoothing"])
        loss = -(t * _log_softmax(z)).sum() / z.shape[0] * attrs["scale"]
        return np.array([loss], dtype=z.dtype)

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        return {0: gb.op("softmax_cross_entropy_grad", node.inputs, **node.attrs)}

    def to_onnx(self, node, e):
        z, t = (e.value(v) for v in node.inputs)
        t = _onnx_smoothed(e, node, z, t)
        per = e.add_node("ReduceSum", [e.add_node("Mul", [t, e.add_node("LogSoftmax", [z], axis=1)]),
                                       e.ints([1], "axes")], keepdims=0)
        mean = e.add_node("ReduceMean", [per, e.ints([0], "axes")], keepdims=1)
        e.add_node("Mul", [mean, e.scalar(-node.attrs["scale"], "scale")], e.out(node))


def _onnx_smoothed(e, node, z: str, t: str) -> str:
    ls = node.attrs["label_smoothing"]
    if not ls:
        return t
    classes = int(node.inputs[0].type.shape[1])
    return e.add_node("Add", [e.add_node("Mul", [t, e.scalar(1.0 - ls)]), e.scalar(ls / classes)])


@register
class SoftmaxCrossEntropyGrad(OpDef):
    name = "softmax_cross_entropy_grad"
    training_only = True
    doc = "gradient of softmax_cross_entropy with respect to the logits: scale·(softmax(z)·Σt' - t')/N"
    inputs = ("logits", "target")
    attrs = SoftmaxCrossEntropy.attrs

    def infer(self, attrs, in_types):
        return in_types[0]

    def reference(self, attrs, xs, ps, ctx):
        z, t = xs
        t = _smoothed(t, attrs["label_smoothing"])
        p = np.exp(_log_softmax(z))
        g = (p * t.sum(axis=1, keepdims=True) - t) * (attrs["scale"] / z.shape[0])
        return g.astype(z.dtype, copy=False)

    def to_onnx(self, node, e):
        z, t = (e.value(v) for v in node.inputs)
        t = _onnx_smoothed(e, node, z, t)
        total = e.add_node("ReduceSum", [t, e.ints([1], "axes")], keepdims=1)
        diff = e.add_node("Sub", [e.add_node("Mul", [e.add_node("Softmax", [z], axis=1), total]), t])
        scaled = e.add_node("Div", [e.add_node("Mul", [diff, e.scalar(node.attrs["scale"], "scale")]),
                                    _batch_size(e, z)])
        e.add_node("Identity", [scaled], e.out(node))


@register
class MseLoss(LossOp):
    name = "mse_loss"
    training_only = True
    doc = "scale · mean of (prediction - target)² over all elements (PyTorch's MSELoss)"
    attrs = (Attr("scale", Float(), 1.0, "the loss's weight in the total"),)

    def reference(self, attrs, xs, ps, ctx):
        d = xs[0] - xs[1]
        return np.array([np.mean(d * d) * attrs["scale"]], dtype=xs[0].dtype)

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        return {0: gb.op("mse_loss_grad", node.inputs, **node.attrs)}

    def to_onnx(self, node, e):
        p, t = (e.value(v) for v in node.inputs)
        d = e.add_node("Sub", [p, t])
        mean = e.add_node("ReduceMean", [e.add_node("Mul", [d, d])], keepdims=0)
        scaled = e.add_node("Mul", [mean, e.scalar(node.attrs["scale"], "scale")])
        e.add_node("Reshape", [scaled, e.ints([1], "shape")], e.out(node))


@register
class MseLossGrad(OpDef):
    name = "mse_loss_grad"
    training_only = True
    doc = "gradient of mse_loss with respect to the prediction: 2·scale·(prediction - target)/numel"
    inputs = ("prediction", "target")
    attrs = MseLoss.attrs

    def infer(self, attrs, in_types):
        return in_types[0]

    def reference(self, attrs, xs, ps, ctx):
        d = xs[0] - xs[1]
        return (d * (2.0 * attrs["scale"] / d.size)).astype(xs[0].dtype, copy=False)

    def to_onnx(self, node, e):
        p, t = (e.value(v) for v in node.inputs)
        size = e.add_node("Cast", [e.add_node("Size", [p])], to=e.elem_type)
        d = e.add_node("Mul", [e.add_node("Sub", [p, t]), e.scalar(2.0 * node.attrs["scale"], "scale")])
        e.add_node("Div", [d, size], e.out(node))
