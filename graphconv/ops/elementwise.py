"""Multi-input elementwise ops with numpy broadcasting (the batch dimension must match exactly)."""

from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..ir.graph import TensorType
from .schema import OpDef, register, same_dtype


def broadcast_shape(op: str, in_types) -> tuple:
    """numpy broadcasting over all inputs; a symbolic dimension only matches itself or 1."""
    rank = max(t.rank for t in in_types)
    out = []
    for axis in range(rank):
        dims = {t.shape[axis - rank + t.rank] for t in in_types if axis - rank + t.rank >= 0}
        dims.discard(1)
        if len(dims) > 1:
            shapes = " and ".join(str(t) for t in in_types)
            raise OpError(f"{op}: shapes {shapes} do not match (dimension {axis}: "
                          f"{' vs '.join(str(d) for d in sorted(dims, key=str))})")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


class Broadcast(OpDef):
    inputs = ("xs",)
    variadic = True
    min_inputs = 2
    fusion = "broadcast"

    def infer(self, attrs, in_types):
        return TensorType(broadcast_shape(self.name, in_types), same_dtype(self.name, in_types))


@register
class Add(Broadcast):
    name = "add"
    doc = "sum of two or more tensors (residual connections), broadcasting"

    def reference(self, attrs, xs, ps, ctx):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
