"""Data movement: flatten, reshape, transpose, slice, pad, identity. The batch dimension is always kept."""

from __future__ import annotations

import math

import numpy as np

from ..errors import OpError
from ..ir.graph import TensorType
from .schema import Attr, Enum, Float, Int, IntList, OpDef, Pads, expect_rank, register


def _per_sample(t: TensorType) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape[1:])


def _reshape_back(node, dy, gb) -> dict:
    """Gradient of an op that only reshapes: dy reshaped to the input's shape."""
    if not gb.wants(0):
        return {}
    x = node.inputs[0]
    if x.type.rank == 1:
        # an [N] input: reshape cannot target an empty per-sample shape, but summing dy's size-1 axes gives [N]
        return {0: gb.op("reduce_sum", [dy], axes=list(range(1, dy.type.rank)))}
    return {0: gb.op("reshape", [dy], shape=list(_per_sample(x.type)))}


def _expect_min_rank(op: str, t: TensorType, rank: int) -> None:
    if t.rank < rank:
        raise OpError(f"{op} expects an input of rank {rank} or more, got {t}", arg=0)


@register
class Identity(OpDef):
    name = "identity"
    passes_through = "always"
    blocked_layout = True
    doc = "returns its input unchanged"
    fusion = "elementwise"

    def infer(self, attrs, in_types):
        return in_types[0]

    def reference(self, attrs, xs, ps, ctx):
        return xs[0].copy()

    def to_onnx(self, node, e):
        e.add_node("Identity", [e.value(node.inputs[0])], e.out(node))

    def gradient(self, node, dy, gb):
        return {0: dy} if gb.wants(0) else {}


@register
class Flatten(OpDef):
    name = "flatten"
    doc = "[N, d1, d2, ...] -> [N, d1·d2·...] (C-order, as PyTorch flatten(1) and ONNX Flatten(axis=1))"
    fusion = "injective"

    def infer(self, attrs, in_types):
        x = in_types[0]
        _expect_min_rank(self.name, x, 2)
        return TensorType((x.shape[0], math.prod(_per_sample(x))), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        return xs[0].reshape(xs[0].shape[0], -1)

    def to_onnx(self, node, e):
        e.add_node("Flatten", [e.value(node.inputs[0])], e.out(node), axis=1)

    def gradient(self, node, dy, gb):
        return _reshape_back(node, dy, gb)


@register
class Reshape(OpDef):
    name = "reshape"
    doc = ("reshape each sample to `shape` (the batch dimension is kept and not written); one entry may be -1 "
           "(inferred); C-order")
    attrs = (Attr("shape", IntList(min_len=1, min=-1), doc="per-sample target shape, e.g. [64, 7, 7]"),)
    fusion = "injective"

    def check_attr_combination(self, attrs):
        shape = attrs["shape"]
        if 0 in shape:
            raise OpError(f"reshape: target shape {list(shape)} has a 0 dimension", attr="shape")
        if shape.count(-1) > 1:
            raise OpError(f"reshape: target shape {list(shape)} has more than one -1", attr="shape")

    def _target(self, attrs, x: TensorType) -> tuple[int, ...]:
        shape = attrs["shape"]
        have = math.prod(_per_sample(x))
        known = math.prod(d for d in shape if d != -1)
        target = "[N, " + ", ".join(str(d) for d in shape) + "]"
        if -1 in shape:
            if have % known:
                raise OpError(f"reshape: cannot reshape {x} ({have} elements per sample) to {target}: {have} is "
                              f"not divisible by {known}", attr="shape")
            shape = tuple(have // known if d == -1 else d for d in shape)
        elif known != have:
            raise OpError(f"reshape: cannot reshape {x} ({have} elements per sample) to {target} ({known} "
                          f"elements)", attr="shape")
        return shape

    def resolve(self, attrs, in_types):
        return {**attrs, "shape": self._target(attrs, in_types[0])}

    def infer(self, attrs, in_types):
        x = in_types[0]
        return TensorType((x.shape[0], *self._target(attrs, x)), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        return xs[0].reshape(xs[0].shape[0], *attrs["shape"])

    def to_onnx(self, node, e):
        shape = e.ints([0, *node.attrs["shape"]], "shape")  # 0 keeps the batch dimension
        e.add_node("Reshape", [e.value(node.inputs[0]), shape], e.out(node))

    def gradient(self, node, dy, gb):
        return _reshape_back(node, dy, gb)


@register
class Transpose(OpDef):
    name = "transpose"
    doc = ("permute the axes of x: output axis i is input axis perm[i] (as numpy.transpose and ONNX Transpose); "
           "perm lists every axis including the batch, and perm[0] must be 0 (the batch dimension stays first)")
    attrs = (Attr("perm", IntList(min_len=1), doc="a permutation of all axes, batch first, e.g. [0, 2, 1, 3, 4]"),)
    fusion = "injective"

    def check_attr_combination(self, attrs):
        perm = list(attrs["perm"])
        if sorted(perm) != list(range(len(perm))):
            raise OpError(f"transpose: perm {perm} is not a permutation of the axes 0..{len(perm) - 1} (each "
                          "exactly once)", attr="perm")
        if perm[0] != 0:
            raise OpError(f"transpose: perm {perm} moves the batch dimension; perm[0] must be 0 because the batch "
                          "dimension stays first", attr="perm",
                          hint="permute only the axes after the batch, e.g. [0, 2, 1, 3, 4]")

    def infer(self, attrs, in_types):
        x = in_types[0]
        perm = attrs["perm"]
        if len(perm) != x.rank:
            raise OpError(f"transpose: perm {list(perm)} has {len(perm)} axes, but the input {x} has rank {x.rank}",
                          attr="perm")
        return TensorType(tuple(x.shape[p] for p in perm), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        return np.ascontiguousarray(np.transpose(xs[0], attrs["perm"]))

    def to_onnx(self, node, e):
        e.add_node("Transpose", [e.value(node.inputs[0])], e.out(node), perm=list(node.attrs["perm"]))

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        inverse = [0] * len(node.attrs["perm"])
        for i, p in enumerate(node.attrs["perm"]):
            inverse[p] = i
        return {0: gb.op("transpose", [dy], perm=inverse)}


INT64_MIN = -(1 << 63)


@register
class Slice(OpDef):
    name = "slice"
    doc = ("the elements start, start+step, ... before end of one axis (default 1, the channels), as Python's "
           "x[:, start:end:step] and ONNX Slice: negative start/end count from the end, out-of-range bounds are "
           "clamped, a negative step walks backwards; the result must not be empty. Two slices split the channels, "
           "as torch.chunk does")
    attrs = (
        Attr("start", Int(), None, "first index (default: the first element in the step's direction)",
             optional=True),
        Attr("end", Int(), None, "index the slice stops before (default: past the last element)", optional=True),
        Attr("axis", Int(), 1, "the axis to slice (negative counts from the end; not 0, the batch)"),
        Attr("step", Int(), 1, "stride between taken elements; not 0"),
    )
    fusion = "injective"

    def check_attr_combination(self, attrs):
        if attrs["step"] == 0:
            raise OpError("slice: step must not be 0", attr="step")

    def _bounds(self, attrs, x: TensorType) -> tuple[int, int, int | None, int]:
        """(axis, start, end, length) with start and end normalized to 0..size; end is None when a backward slice
        runs past index 0. Normalized attributes resolve to themselves."""
        axis = attrs["axis"]
        if not -x.rank <= axis < x.rank:
            raise OpError(f"slice: axis {axis} is out of range for the input {x} (rank {x.rank})", attr="axis")
        axis %= x.rank
        if axis == 0:
            raise OpError(f"slice: axis {attrs['axis']} is the batch dimension", attr="axis",
                          hint="samples must stay independent; slice axis=1 (channels) or a later axis")
        size, step = int(x.shape[axis]), attrs["step"]
        start, end, _ = slice(attrs["start"], attrs["end"], step).indices(size)
        length = len(range(start, end, step))
        if length == 0:
            given = ":".join("" if attrs[k] is None else str(attrs[k]) for k in ("start", "end", "step"))
            raise OpError(f"slice: [{given}] of axis {axis} (size {size}) of {x} is empty", attr="start")
        return axis, start, (None if end < 0 else end), length

    def resolve(self, attrs, in_types):
        axis, start, end, _ = self._bounds(attrs, in_types[0])
        return {**attrs, "axis": axis, "start": start, "end": end}

    def infer(self, attrs, in_types):
        x = in_types[0]
        axis, _, _, length = self._bounds(attrs, x)
        return TensorType(x.shape[:axis] + (length,) + x.shape[axis + 1:], x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        index = [slice(None)] * xs[0].ndim
        index[attrs["axis"]] = slice(attrs["start"], attrs["end"], attrs["step"])
        return np.ascontiguousarray(xs[0][tuple(index)])

    def to_onnx(self, node, e):
        a = node.attrs
        end = INT64_MIN if a["end"] is None else a["end"]  # ONNX clamps it to "before index 0"
        e.add_node("Slice", [e.value(node.inputs[0]), e.ints([a["start"]], "starts"), e.ints([end], "ends"),
                             e.ints([a["axis"]], "axes"), e.ints([a["step"]], "steps")], e.out(node))

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        a = node.attrs
        size = int(node.inputs[0].type.shape[a["axis"]])
        return {0: gb.op("slice_grad", [dy], axis=a["axis"], size=size, start=a["start"], end=a["end"],
                         step=a["step"])}


@register
class Pad(OpDef):
    name = "pad"
    doc = ("pad the spatial dimensions of x [N, C, H, W]: constant (`value`), reflect (mirror without repeating "
           "the edge, needs pad < size) or edge (repeat the edge), as numpy/ONNX Pad and PyTorch "
           "constant/reflect/replicate")
    attrs = (
        Attr("pads", Pads(), doc="an integer, [pad_h, pad_w] or [top, left, bottom, right]"),
        Attr("mode", Enum("constant", "reflect", "edge"), "constant"),
        Attr("value", Float(), 0.0, "fill value of mode=constant"),
    )
    fusion = "injective"

    def check_attr_combination(self, attrs):
        if attrs["mode"] != "constant" and attrs["value"] != 0.0:
            raise OpError(f"pad: 'value' only applies to mode=constant, not mode={attrs['mode']}", attr="value")

    def infer(self, attrs, in_types):
        x = in_types[0]
        expect_rank(self.name, x, 4)
        top, left, bottom, right = attrs["pads"]
        h, w = int(x.shape[2]), int(x.shape[3])
        if attrs["mode"] == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
            raise OpError(f"pad: reflect padding {list(attrs['pads'])} must be smaller than the padded dimension; "
                          f"input is {x}", attr="pads")
        return TensorType((x.shape[0], x.shape[1], h + top + bottom, w + left + right), x.dtype)

    def reference(self, attrs, xs, ps, ctx):
        top, left, bottom, right = attrs["pads"]
        width = ((0, 0), (0, 0), (top, bottom), (left, right))
        if attrs["mode"] == "constant":
            return np.pad(xs[0], width, mode="constant", constant_values=attrs["value"])
        return np.pad(xs[0], width, mode=attrs["mode"])

    def to_onnx(self, node, e):
        top, left, bottom, right = node.attrs["pads"]
        mode = node.attrs["mode"]
        ins = [e.value(node.inputs[0]), e.ints([top, left, bottom, right], "pads")]
        if mode == "constant":
            ins.append(e.scalar(node.attrs["value"], "value"))
        else:
            ins.append("")
        ins.append(e.ints([2, 3], "axes"))
        e.add_node("Pad", ins, e.out(node), mode=mode)

    def gradient(self, node, dy, gb):
        if not gb.wants(0):
            return {}
        return {0: gb.op("pad_grad", [dy], pads=list(node.attrs["pads"]), mode=node.attrs["mode"])}
