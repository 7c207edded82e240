"""Sums that gradients need: `reduce_sum` over chosen axes (bias gradients, operands that were broadcast)."""

from __future__ import annotations

import numpy as np

from ...errors import OpError
from ...ir.graph import TensorType
from ..schema import Attr, Bool, IntList, OpDef, register


@register
class ReduceSum(OpDef):
    name = "reduce_sum"
    training_only = True
    doc = "sum over `axes` (0 is the batch), dropped or kept as size 1 (keep=true)"
    attrs = (Attr("axes", IntList(min_len=1, min=0), doc="axes to sum over"),
             Attr("keep", Bool(), False, "keep the summed axes as size 1"))
    fusion = "reduction"

    def infer(self, attrs, in_types):
        x = in_types[0]
        axes = attrs["axes"]
        if len(set(axes)) != len(axes) or any(a >= x.rank for a in axes):
            raise OpError(f"reduce_sum: axes {list(axes)} do not fit {x}", attr="axes")
        shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if attrs["keep"] else \
            [d for i, d in enumerate(x.shape) if i not in axes]
        return TensorType(tuple(shape), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        return np.asarray(np.sum(xs[0], axis=tuple(attrs["axes"]), keepdims=attrs["keep"]), dtype=xs[0].dtype)

    def to_onnx(self, node, e):
        e.add_node("ReduceSum", [e.value(node.inputs[0]), e.ints(list(node.attrs["axes"]), "axes")], e.out(node),
                   keepdims=int(node.attrs["keep"]))
