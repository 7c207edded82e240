"""Fused epilogues: elementwise work applied to an op's output as it is produced.

The optimizer's fusion pass moves the activation (and a residual add) that follows a convolution or dense layer into
that node, so a backend applies it while the output is still in registers. A node of an op whose fusion kind is
`out_fusable` may carry `attrs["epilogue"]`, a tuple of steps applied in order to the op's result:

    (op, attrs, operand)

- `op`: a registered op of fusion kind `elementwise` (one input: relu, clip, sigmoid, ...) or `broadcast` and
  `commutative` (two inputs: add, mul), or at most one `window_step` op (max pooling: the producer writes the
  pooled result; steps after it see the pooled shape);
- `attrs`: that op's IR attributes, as a tuple of (name, value) pairs (hashable, serializable);
- `operand`: None for a one-input step; for a two-input step, the index in `node.inputs` of the other operand.
  Those operands come after the op's own inputs, in step order. Only a window step may change the shape (its
  spatial size).

A node may also carry `attrs["layout"]` = b: it reads its rank-5 data inputs and writes its output in the blocked
channel layout NCHW{b}c ([N, C/b, H, W, b], graphconv/ops/layout.py), and its weights are packed by the op's
`pack_param`. The semantics stay the op's: this module unblocks, computes and blocks again for the reference and the
ONNX exporter, while a backend runs its blocked kernel.

Every consumer goes through this module: shape inference (`infer`), parameter shapes (`param_shapes`), the
reference executor (`run`), MAC counts (`macs`), receptive fields (`windows`), the ONNX exporter (`to_onnx`, which
writes the op and then each step as its own standard ONNX node).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import OpError
from ..ir.graph import Node, TensorType, Value
from .layout import FromBlocked, ToBlocked, block, blocked_type, plain_type, unblock
from .schema import REGISTRY

Step = tuple[str, tuple[tuple[str, Any], ...], int | None]


def steps(attrs: dict[str, Any]) -> tuple[Step, ...]:
    return tuple(attrs.get("epilogue") or ())


def own_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The op's attributes without the epilogue and layout."""
    return {k: v for k, v in attrs.items() if k not in ("epilogue", "layout")}


def block_size(attrs: dict[str, Any]) -> int | None:
    return attrs.get("layout")


def _plain_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The node's attributes as in the plain layout (epilogue kept)."""
    return {k: v for k, v in attrs.items() if k != "layout"}


def logical_types(attrs: dict[str, Any], in_types: Sequence[TensorType]) -> list[TensorType]:
    """The data inputs' types as the op sees them (a blocked layout undone)."""
    if not block_size(attrs):
        return list(in_types)
    return [plain_type(t) if t.rank == 5 else t for t in in_types]


def param_shapes(op: Any, attrs: dict[str, Any], in_types: Sequence[TensorType], own: dict[str, Any]) -> dict:
    """role -> (shape, ParamSpec) of the parameters a node must have (packed when the node is blocked). `own` are
    the attributes to list parameters with (the verifier fills the construction attributes in)."""
    b = block_size(attrs)
    types = logical_types(attrs, in_types)[:own_input_count(attrs, len(in_types))]
    out = {}
    for s in op.params(own, types):
        out[s.name] = (op.packed_shape(own, s.name, tuple(s.shape), b) if b else tuple(s.shape), s)
    return out


def own_input_count(attrs: dict[str, Any], n_inputs: int) -> int:
    """How many of a node's inputs are the op's own (the rest are epilogue operands). Raises OpError when the
    operand indices do not name the extra inputs."""
    operands = [step[2] for step in steps(attrs) if isinstance(step, tuple) and len(step) == 3 and step[2] is not None]
    n_own = n_inputs - len(operands)
    if n_own < 0 or any(not isinstance(k, int) or not n_own <= k < n_inputs for k in operands):
        raise OpError(f"epilogue operands {operands} do not name the node's extra inputs {n_own}..{n_inputs - 1}")
    return n_own


def can_absorb(step_op: Any) -> bool:
    """Whether an op may become an elementwise epilogue step (decided by its fusion kind, not its name)."""
    return step_op.fusion == "elementwise" or (step_op.fusion == "broadcast" and step_op.commutative)


def _check_step(op_name: str, step: Any) -> tuple[Any, dict, int | None]:
    """The step's op, attributes and operand; its operand index was checked by own_input_count."""
    if not (isinstance(step, tuple) and len(step) == 3):
        raise OpError(f"{op_name}: epilogue step {step!r} is not (op, attrs, operand)")
    name, attrs, operand = step
    sop = REGISTRY.get(name)
    if sop is None or not (can_absorb(sop) or sop.window_step):
        raise OpError(f"{op_name}: epilogue step '{name}' is not an elementwise or commutative broadcast op, nor a "
                      "window step")
    if (operand is None) != (sop.fusion == "elementwise" or sop.window_step):
        raise OpError(f"{op_name}: epilogue step '{name}' takes {'no' if operand is None else 'an'} operand wrongly")
    return sop, dict(attrs), operand


def step_types(op: Any, attrs: dict[str, Any], in_types: Sequence[TensorType]) -> list[TensorType]:
    """The type of the op's own result, then of the result after each step (the last is the node's output), in the
    plain layout."""
    in_types = logical_types(attrs, in_types)
    seq = steps(attrs)
    if not seq:
        return [op.infer(own_attrs(attrs), in_types)]
    if op.fusion != "out_fusable":
        raise OpError(f"{op.name} cannot carry an epilogue (its fusion kind is {op.fusion})")
    n_own = own_input_count(attrs, len(in_types))
    types = [op.infer(own_attrs(attrs), in_types[:n_own])]
    windows = 0
    for step in seq:
        sop, sattrs, operand = _check_step(op.name, step)
        out = types[-1]
        ins = [out] if operand is None else [out, in_types[operand]]
        t = sop.infer(sattrs, ins)
        if sop.window_step:
            windows += 1
            if windows > 1:
                raise OpError(f"{op.name}: an epilogue takes at most one window step")
            if t.shape[:2] != out.shape[:2] or t.dtype != out.dtype:
                raise OpError(f"{op.name}: window step '{sop.name}' changes more than the spatial size ({out} to {t})")
        elif t != out:
            raise OpError(f"{op.name}: epilogue step '{sop.name}' changes the output from {out} to {t}")
        types.append(t)
    return types


def infer(op: Any, attrs: dict[str, Any], in_types: Sequence[TensorType]) -> TensorType:
    """The node's output type: the op's own inference, then each step's (only a window step may change it); blocked
    when the node is."""
    t = step_types(op, attrs, in_types)[-1]
    b = block_size(attrs)
    if not b:
        return t
    if not op.blockable(own_attrs(attrs), logical_types(attrs, in_types)):
        raise OpError(f"{op.name} cannot run in the blocked layout with these attributes and inputs")
    if t.rank != 4 or int(t.shape[1]) % b:
        raise OpError(f"{op.name}: a blocked node's output must be [N, C, H, W] with C a multiple of {b}, got {t}")
    return blocked_type(t, b)


def macs(op: Any, attrs: dict[str, Any], in_types: Sequence[TensorType]) -> int:
    """Multiply-accumulates per sample of a node: the op's own, at its own output size, plus its steps'."""
    types = step_types(op, attrs, in_types)
    in_types = logical_types(attrs, in_types)
    n_own = own_input_count(attrs, len(in_types))
    total = int(op.macs(own_attrs(attrs), list(in_types[:n_own]), types[0]))
    for (name, sattrs, operand), t_in, t_out in zip(steps(attrs), types, types[1:]):
        ins = [t_in] if operand is None else [t_in, in_types[operand]]
        total += int(REGISTRY[name].macs(dict(sattrs), ins, t_out))
    return total


def windows(op: Any, attrs: dict[str, Any]) -> list:
    """The sliding windows a node applies in order (receptive-field analysis): the op's, then a window step's."""
    out = [op.window(own_attrs(attrs))]
    for name, sattrs, _ in steps(attrs):
        sop = REGISTRY[name]
        if sop.window_step:
            out.append(sop.window(dict(sattrs)))
    return out


def run(op: Any, attrs: dict[str, Any], xs: list[np.ndarray], ps: dict[str, np.ndarray], ctx: Any) -> np.ndarray:
    """The reference result of a node: the op, then each step on the running result (in the plain layout, blocked
    again at the end for a blocked node)."""
    b = block_size(attrs)
    if b:
        xs = [unblock(x) if x.ndim == 5 else x for x in xs]
        ps = {r: op.unpack_param(own_attrs(attrs), r, a, b) for r, a in ps.items()}
        return block(run(op, _plain_attrs(attrs), xs, ps, ctx), b)
    seq = steps(attrs)
    if not seq:
        return op.reference(own_attrs(attrs), xs, ps, ctx)
    n_own = own_input_count(attrs, len(xs))
    y = op.reference(own_attrs(attrs), xs[:n_own], ps, ctx)
    for name, sattrs, operand in seq:
        ins = [y] if operand is None else [y, xs[operand]]
        y = REGISTRY[name].reference(dict(sattrs), ins, {}, ctx)
    return y


def to_onnx(op: Any, node: Node, e: Any) -> None:
    """Standard ONNX for a node: the op's own mapping into an intermediate, then one ONNX node per step (a fused
    conv+add+relu becomes Conv, Add, Relu), the last one writing the node's output."""
    if block_size(node.attrs):
        _blocked_to_onnx(op, node, e)
        return
    seq = steps(node.attrs)
    if not seq:
        op.to_onnx(node, e)
        return
    n_own = own_input_count(node.attrs, len(node.inputs))
    types = step_types(op, node.attrs, [v.type for v in node.inputs])
    current = Value(e.tmp(op.name), types[0], "node")
    op.to_onnx(Node(node.name, op.name, node.inputs[:n_own], own_attrs(node.attrs), current, node.params,
                    node.loc), e)
    for k, (name, sattrs, operand) in enumerate(seq):
        last = k == len(seq) - 1
        out = node.output if last else Value(e.tmp(name), types[k + 1], "node")
        ins = [current] if operand is None else [current, node.inputs[operand]]
        REGISTRY[name].to_onnx(Node(node.name, name, ins, dict(sattrs), out, {}, node.loc), e)
        current = out


def _blocked_to_onnx(op: Any, node: Node, e: Any) -> None:
    """A blocked node as plain ONNX: its blocked inputs converted back, its weights unpacked (as constants), the
    op and steps in the plain layout, the result blocked again."""
    b = block_size(node.attrs)
    attrs = _plain_attrs(node.attrs)
    inputs = []
    for v in node.inputs:
        if v.type.rank == 5:
            plain = Value(e.tmp("plain"), plain_type(v.type), "node")
            FromBlocked().to_onnx(Node(node.name, "from_blocked", [v], {"block": b}, plain), e)
            v = plain
        inputs.append(v)
    params = {}
    for role, v in node.params.items():
        data = op.unpack_param(own_attrs(attrs), role, e.param_array(v), b)
        params[role] = Value(e.const(data, role), v.type.with_shape(data.shape), "node")
    plain_out = Value(e.tmp("plain"), step_types(op, attrs, [x.type for x in inputs])[-1], "node")
    to_onnx(op, Node(node.name, node.op, inputs, attrs, plain_out, params, node.loc), e)
    ToBlocked().to_onnx(Node(node.name, "to_blocked", [plain_out], {"block": b}, node.output), e)


def describe(attrs: dict[str, Any], inputs: Sequence[Value]) -> str:
    """The epilogue as text, e.g. `add(%layer1.0.downsample), relu`."""
    parts = []
    for name, sattrs, operand in steps(attrs):
        args = [f"%{inputs[operand].name}"] if operand is not None and operand < len(inputs) else []
        args += [f"{k}={v}" for k, v in sattrs]
        parts.append(f"{name}({', '.join(args)})" if args else name)
    return ", ".join(parts)
