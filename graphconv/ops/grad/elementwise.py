"""Gradient ops of the elementwise family. Most of add, mul, sub, div and concat's gradients are forward ops (mul,
div, slice) and `reduce_sum` for operands that were broadcast; what is left is the sign of sub's and div's second
operand: `neg`."""

from __future__ import annotations

import numpy as np

from ..schema import OpDef, register


@register
class Neg(OpDef):
    name = "neg"
    training_only = True
    doc = "-x (the gradient of a subtracted operand)"
    fusion = "elementwise"

    def infer(self, attrs, in_types):
        return in_types[0]

    def reference(self, attrs, xs, ps, ctx):
        return np.negative(xs[0])

    def to_onnx(self, node, e):
        e.add_node("Neg", [e.value(node.inputs[0])], e.out(node))
