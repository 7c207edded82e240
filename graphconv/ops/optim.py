"""Optimizer updates as ops, so the update runs in the training graph on every backend (graphconv.train.optim
adds them). Each computes one next state from the current one, elementwise; the learning rate `lr` and Adam's step
count `step` (1 for the first update) are [1] graph inputs, so a schedule changes them without a rebuild.

    SGD (PyTorch's rule, dampening 0):  d = g + wd·w;  buf' = momentum·buf + d;
                                        w' = w - lr·(d + momentum·buf')  (Nesterov)  or  w - lr·buf'
    Adam / AdamW:                       g' = g + wd·w (Adam) or g (AdamW);  m' = β1·m + (1-β1)·g';  v' = β2·v + (1-β2)·g'²
                                        w' = w·(1 - lr·wd [AdamW]) - lr/(1-β1^t) · m' / (sqrt(v')/sqrt(1-β2^t) + eps)
"""

from __future__ import annotations

import numpy as np

from ..errors import OpError
from .schema import Attr, Bool, Float, OpDef, register

WD = Attr("weight_decay", Float(min=0.0), 0.0, "L2 penalty (decoupled for AdamW)")
MOMENTUM = Attr("momentum", Float(min=0.0, max=1.0), 0.9)


class Update(OpDef):
    fusion = "elementwise"

    def infer(self, attrs, in_types):
        w = in_types[0]
        for name, t in zip(self.inputs, in_types):
            if name in ("lr", "step"):
                if tuple(t.shape) != (1,):
                    raise OpError(f"{self.name}: '{name}' must be [1], got {t}")
            elif tuple(t.shape) != tuple(w.shape):
                raise OpError(f"{self.name}: '{name}' {t} does not fit {w}")
        return w


def _decayed(e, g: str, w: str, wd: float) -> str:
    return g if not wd else e.add_node("Add", [g, e.add_node("Mul", [w, e.scalar(wd, "wd")])])


@register
class SgdStep(Update):
    name = "sgd_step"
    training_only = True
    doc = "plain SGD: w - lr·(g + weight_decay·w)"
    inputs = ("w", "g", "lr")
    attrs = (WD,)

    def reference(self, attrs, xs, ps, ctx):
        w, g, lr = xs
        return (w - lr * (g + attrs["weight_decay"] * w)).astype(w.dtype, copy=False)

    def to_onnx(self, node, e):
        w, g, lr = (e.value(v) for v in node.inputs)
        e.add_node("Sub", [w, e.add_node("Mul", [lr, _decayed(e, g, w, node.attrs["weight_decay"])])], e.out(node))


@register
class SgdBuffer(Update):
    name = "sgd_buffer"
    training_only = True
    doc = "SGD's momentum buffer: momentum·buf + g + weight_decay·w"
    inputs = ("buf", "g", "w")
    attrs = (MOMENTUM, WD)

    def reference(self, attrs, xs, ps, ctx):
        buf, g, w = xs
        return (attrs["momentum"] * buf + g + attrs["weight_decay"] * w).astype(w.dtype, copy=False)

    def to_onnx(self, node, e):
        buf, g, w = (e.value(v) for v in node.inputs)
        e.add_node("Add", [e.add_node("Mul", [buf, e.scalar(node.attrs["momentum"])]),
                           _decayed(e, g, w, node.attrs["weight_decay"])], e.out(node))


@register
class SgdMomentumStep(Update):
    name = "sgd_momentum_step"
    training_only = True
    doc = "SGD with momentum, given the new buffer: w - lr·buf' (or lr·(g + wd·w + momentum·buf'), Nesterov)"
    inputs = ("w", "g", "buf", "lr")
    attrs = (MOMENTUM, WD, Attr("nesterov", Bool(), False))

    def reference(self, attrs, xs, ps, ctx):
        w, g, buf, lr = xs
        d = g + attrs["weight_decay"] * w + attrs["momentum"] * buf if attrs["nesterov"] else buf
        return (w - lr * d).astype(w.dtype, copy=False)

    def to_onnx(self, node, e):
        w, g, buf, lr = (e.value(v) for v in node.inputs)
        d = buf
        if node.attrs["nesterov"]:
            d = e.add_node("Add", [_decayed(e, g, w, node.attrs["weight_decay"]),
                                   e.add_node("Mul", [buf, e.scalar(node.attrs["momentum"])])])
        e.add_node("Sub", [w, e.add_node("Mul", [lr, d])], e.out(node))


@register
class AdamMoment(Update):
    name = "adam_moment"
    training_only = True
    doc = "an Adam moment: beta·m + (1 - beta)·g' (g'² with square=true), g' = g + weight_decay·w"
    inputs = ("m", "g", "w")
    attrs = (Attr("beta", Float(min=0.0, max=1.0)), Attr("square", Bool(), False), WD)

    def reference(self, attrs, xs, ps, ctx):
        m, g, w = xs
        g = g + attrs["weight_decay"] * w
        if attrs["square"]:
            g = g * g
        return (attrs["beta"] * m + (1.0 - attrs["beta"]) * g).astype(m.dtype, copy=False)

    def to_onnx(self, node, e):
        m, g, w = (e.value(v) for v in node.inputs)
        g = _decayed(e, g, w, node.attrs["weight_decay"])
        if node.attrs["square"]:
            g = e.add_node("Mul", [g, g])
        b = node.attrs["beta"]
        e.add_node("Add", [e.add_node("Mul", [m, e.scalar(b)]), e.add_node("Mul", [g, e.scalar(1.0 - b)])],
                   e.out(node))


@register
class AdamStep(Update):
    name = "adam_step"
    training_only = True
    doc = ("Adam's update from the new moments: w·(1 - lr·wd) - lr/(1-β1^t)·m/(sqrt(v)/sqrt(1-β2^t) + eps), the "
           "decay term only for AdamW (decoupled=true)")
    inputs = ("w", "m", "v", "lr", "step")
    attrs = (Attr("beta1", Float(min=0.0, max=1.0), 0.9), Attr("beta2", Float(min=0.0, max=1.0), 0.999),
             Attr("eps", Float(min=0.0), 1e-8), WD, Attr("decoupled", Bool(), False))

    def reference(self, attrs, xs, ps, ctx):
        w, m, v, lr, t = xs
        a = attrs
        bc1 = 1.0 - a["beta1"] ** t
        bc2 = 1.0 - a["beta2"] ** t
        if a["decoupled"]:
            w = w * (1.0 - lr * a["weight_decay"])
        return (w - (lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + a["eps"])).astype(m.dtype, copy=False)

    def to_onnx(self, node, e):
        w, m, v, lr, t = (e.value(x) for x in node.inputs)
        a = node.attrs
        bc1 = e.add_node("Sub", [e.scalar(1.0), e.add_node("Pow", [e.scalar(a["beta1"]), t])])
        bc2 = e.add_node("Sub", [e.scalar(1.0), e.add_node("Pow", [e.scalar(a["beta2"]), t])])
        if a["decoupled"] and a["weight_decay"]:
            w = e.add_node("Mul", [w, e.add_node("Sub", [e.scalar(1.0),
                                                         e.add_node("Mul", [lr, e.scalar(a["weight_decay"])])])])
        denom = e.add_node("Add", [e.add_node("Div", [e.add_node("Sqrt", [v]), e.add_node("Sqrt", [bc2])]),
                                   e.scalar(a["eps"])])
        step = e.add_node("Mul", [e.add_node("Div", [lr, bc1]), e.add_node("Div", [m, denom])])
        e.add_node("Sub", [w, step], e.out(node))
