"""Multi-input ops: elementwise add, mul, sub and div with numpy broadcasting (the batch dimension must match
exactly), and concat."""

from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..ir.graph import TensorType, Value
from .schema import Attr, Int, OpDef, register, same_dtype


def broadcast_shape(op: str, in_types) -> tuple:
    """numpy broadcasting over all inputs; a symbolic dimension only matches itself or 1."""
    rank = max(t.rank for t in in_types)
    out = []
    for axis in range(rank):
        # in input order, so the message lists the sizes in the order it lists the shapes
        dims = list(dict.fromkeys(t.shape[axis - rank + t.rank] for t in in_types if axis - rank + t.rank >= 0))
        dims = [d for d in dims if d != 1]
        if len(dims) > 1:
            shapes = " and ".join(str(t) for t in in_types)
            raise OpError(f"{op}: shapes {shapes} do not match (dimension {axis}: "
                          f"{' vs '.join(str(d) for d in dims)})")
        out.append(dims[0] if dims else 1)
    return tuple(out)


def sum_to(gb, g: Value, like: Value) -> Value:
    """The gradient `g` (of the broadcast result's shape) summed back to the shape of operand `like`: over the
    leading axes `like` lacks, and over the axes where it has size 1 and the result does not."""
    out, want = g.type.shape, like.type.shape
    lead = len(out) - len(want)
    ones = [lead + i for i, d in enumerate(want) if d == 1 and out[lead + i] != 1]
    if ones:
        g = gb.op("reduce_sum", [g], axes=ones, keep=True)
    if lead:
        g = gb.op("reduce_sum", [g], axes=list(range(lead)))
    return g


class Broadcast(OpDef):
    blocked_layout = True
    inputs = ("xs",)
    variadic = True
    min_inputs = 2
    fusion = "broadcast"

    def infer(self, attrs, in_types):
        _expect_inputs(self.name, in_types)
        return TensorType(broadcast_shape(self.name, in_types), same_dtype(self.name, in_types))

    def blockable(self, attrs, in_types):
        return all(t == in_types[0] for t in in_types)  # broadcasting over channels does not survive blocking

    def reference(self, attrs, xs, ps, ctx):
        out = xs[0]
        for x in xs[1:]:
            out = self.combine(out, x)
        return out

    onnx_op = ""  # the binary ONNX op; several inputs are chained left to right (add uses Sum instead)

    def to_onnx(self, node, e):
        xs = [e.value(v) for v in node.inputs]
        if len(xs) > 2 and self.onnx_op == "Add":
            e.add_node("Sum", xs, e.out(node))
            return
        acc = xs[0]
        for i, x in enumerate(xs[1:], 2):
            acc = e.add_node(self.onnx_op, [acc, x], e.out(node) if i == len(xs) else None)

    def combine(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Binary(Broadcast):
    """A two-input broadcasting op (sub, div): not associative, so exactly two inputs."""

    inputs = ("a", "b")
    variadic = False
    min_inputs = 2


def _expect_inputs(op: str, in_types, n: int = 2) -> None:
    if len(in_types) < n:
        raise OpError(f"{op} needs at least {n} inputs, got {len(in_types)}")


@register
class Add(Broadcast):
    name = "add"
    doc = "sum of two or more tensors (residual connections), broadcasting"
    onnx_op = "Add"
    commutative = True

    def combine(self, a, b):
        return a + b

    def gradient(self, node, dy, gb):
        return {i: sum_to(gb, dy, x) for i, x in enumerate(node.inputs) if gb.wants(i)}


@register
class Mul(Broadcast):
    name = "mul"
    doc = "product of two or more tensors (gating, attention scales), broadcasting"
    onnx_op = "Mul"
    commutative = True

    def combine(self, a, b):
        return a * b

    def gradient(self, node, dy, gb):
        # dy times every other operand; dy has the result's full shape, so the product does too
        return {i: sum_to(gb, gb.op("mul", [dy, *node.inputs[:i], *node.inputs[i + 1:]]), x)
                for i, x in enumerate(node.inputs) if gb.wants(i)}


@register
class Sub(Binary):
    name = "sub"
    doc = "difference a - b of two tensors, broadcasting"
    onnx_op = "Sub"

    def combine(self, a, b):
        return a - b

    def gradient(self, node, dy, gb):
        a, b = node.inputs
        out = {}
        if gb.wants(0):
            out[0] = sum_to(gb, dy, a)
        if gb.wants(1):
            out[1] = gb.op("neg", [sum_to(gb, dy, b)])  # negated after the sum: fewer elements
        return out


@register
class Div(Binary):
    name = "div"
    doc = "quotient a / b of two tensors, broadcasting (IEEE: x / 0 is ±inf, 0 / 0 is NaN)"
    onnx_op = "Div"

    def combine(self, a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return a / b

    def gradient(self, node, dy, gb):
        # d(a/b)/da = 1/b and d(a/b)/db = -a/b² = -(1/b)·y: both start from dy/b
        a, b = node.inputs
        if not (gb.wants(0) or gb.wants(1)):
            return {}
        da = gb.op("div", [dy, b])
        out = {0: sum_to(gb, da, a)} if gb.wants(0) else {}
        if gb.wants(1):
            out[1] = gb.op("neg", [sum_to(gb, gb.op("mul", [da, node.output]), b)])
        return out


@register
class Concat(OpDef):
    name = "concat"
    doc = "join two or more tensors along axis (default 1, the channels); every other dimension must match"
    inputs = ("xs",)
    variadic = True
    min_inputs = 2
    attrs = (Attr("axis", Int(), 1, "the axis to join along (negative counts from the end; 0 is the batch)"),)
    fusion = "injective"
    blocked_layout = True

    def blockable(self, attrs, in_types):
        return attrs["axis"] == 1  # whole blocks of channels follow each other

    def _axis(self, attrs, in_types) -> int:
        _expect_inputs(self.name, in_types)
        first = in_types[0]
        for i, t in enumerate(in_types[1:], 1):
            if t.rank != first.rank:
                raise OpError(f"concat: inputs have different ranks: {_listing(in_types)}", arg=i)
        axis = attrs["axis"]
        if not -first.rank <= axis < first.rank:
            raise OpError(f"concat: axis {axis} is out of range for rank-{first.rank} inputs {_listing(in_types)}",
                          attr="axis")
        if axis % first.rank == 0:
            raise OpError(f"concat: axis {axis} is the batch dimension", attr="axis",
                          hint="samples must stay independent; use axis=1 (channels) or a later axis")
        return axis % first.rank

    def resolve(self, attrs, in_types):
        return {**attrs, "axis": self._axis(attrs, in_types)}

    def infer(self, attrs, in_types):
        axis = self._axis(attrs, in_types)
        dtype = same_dtype(self.name, in_types)
        first = in_types[0]
        for i, t in enumerate(in_types[1:], 1):
            if any(a != b for k, (a, b) in enumerate(zip(first.shape, t.shape)) if k != axis):
                raise OpError(f"concat: along axis {axis} every other dimension must match; got "
                              f"{_listing(in_types)}", arg=i)
        size = sum(int(t.shape[axis]) for t in in_types)
        return TensorType(first.shape[:axis] + (size,) + first.shape[axis + 1:], dtype)

    def reference(self, attrs, xs, ps, ctx):
        return np.concatenate(xs, axis=attrs["axis"])

    def to_onnx(self, node, e):
        e.add_node("Concat", [e.value(v) for v in node.inputs], e.out(node), axis=node.attrs["axis"])

    def gradient(self, node, dy, gb):
        """Each input's part of dy: a slice along the axis."""
        axis, start, out = node.attrs["axis"], 0, {}
        for i, x in enumerate(node.inputs):
            size = int(x.type.shape[axis])
            if gb.wants(i):
                out[i] = gb.op("slice", [dy], start=start, end=start + size, axis=axis)
            start += size
        return out


def _listing(in_types) -> str:
    return ", ".join(str(t) for t in in_types[:-1]) + " and " + str(in_types[-1])
