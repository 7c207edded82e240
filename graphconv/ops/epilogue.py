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

Every consumer goes through this module: shape inference (`infer`), the reference executor (`run`), the ONNX
exporter (`to_onnx`, which writes the op and then each step as its own standard ONNX node).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import OpError
from ..ir.graph import Node, TensorType, Value

Step = tuple[str, tuple[tuple[str, Any], ...], int | None]


def steps(attrs: dict[str, Any]) -> tuple[Step, ...]:
    return tuple(attrs.get("epilogue") or ())


def own_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The op's attributes without the epilogue."""
    return {k: v for k, v in attrs.items() if k != "epilogue"}


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


def _check_step(op_name: str, step: Any, n_inputs: int, first_operand: int) -> tuple[Any, dict, int | None]:
    from .schema import REGISTRY

    if not (isinstance(step, tuple) and len(step) == 3):
        raise OpError(f"{op_name}: epilogue step {step!r} is not (op, attrs, operand)")
    name, attrs, operand = step
    sop = REGISTRY.get(name)
    if sop is None or not (can_absorb(sop) or sop.window_step):
        raise OpError(f"{op_name}: epilogue step '{name}' is not an elementwise or commutative broadcast op, nor a "
                      "window step")
    if (operand is None) != (sop.fusion == "elementwise" or sop.window_step):
        raise OpError(f"{op_name}: epilogue step '{name}' takes {'no' if operand is None else 'an'} operand wrongly")
    if operand is not None and not first_operand <= operand < n_inputs:
        raise OpError(f"{op_name}: epilogue step '{name}' reads input {operand}, which is not an extra operand")
    return sop, dict(attrs), operand


def step_types(op: Any, attrs: dict[str, Any], in_types: Sequence[TensorType]) -> list[TensorType]:
    """The type of the op's own result, then of the result after each step (the last one is the node's output)."""
    seq = steps(attrs)
    if not seq:
        return [op.infer(attrs, in_types)]
    if op.fusion != "out_fusable":
        raise OpError(f"{op.name} cannot carry an epilogue (its fusion kind is {op.fusion})")
    n_own = own_input_count(attrs, len(in_types))
    types = [op.infer(own_attrs(attrs), in_types[:n_own])]
    windows = 0
    for step in seq:
        sop, sattrs, operand = _check_step(op.name, step, len(in_types), n_own)
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
    """The node's output type: the op's own inference, then each step's (only a window step may change it)."""
    return step_types(op, attrs, in_types)[-1]


def macs(op: Any, attrs: dict[str, Any], in_types: Sequence[TensorType]) -> int:
    """Multiply-accumulates per sample of a node: the op's own, at its own output size, plus its steps'."""
    types = step_types(op, attrs, in_types)
    n_own = own_input_count(attrs, len(in_types))
    total = int(op.macs(own_attrs(attrs), list(in_types[:n_own]), types[0]))
    for (name, sattrs, operand), t_in, t_out in zip(steps(attrs), types, types[1:]):
        ins = [t_in] if operand is None else [t_in, in_types[operand]]
        total += int(_op(name).macs(dict(sattrs), ins, t_out))
    return total


def windows(op: Any, attrs: dict[str, Any]) -> list:
    """The sliding windows a node applies in order (receptive-field analysis): the op's, then a window step's."""
    out = [op.window(own_attrs(attrs))]
    for name, sattrs, _ in steps(attrs):
        sop = _op(name)
        if sop.window_step:
            out.append(sop.window(dict(sattrs)))
    return out


def _op(name: str) -> Any:
    from .schema import REGISTRY  # late: schema's registry fills as the op modules load

    return REGISTRY[name]


def run(op: Any, attrs: dict[str, Any], xs: list[np.ndarray], ps: dict[str, np.ndarray], ctx: Any) -> np.ndarray:
    """The reference result of a node: the op, then each step on the running result."""
    from .schema import REGISTRY

    seq = steps(attrs)
    if not seq:
        return op.reference(attrs, xs, ps, ctx)
    n_own = own_input_count(attrs, len(xs))
    y = op.reference(own_attrs(attrs), xs[:n_own], ps, ctx)
    for name, sattrs, operand in seq:
        ins = [y] if operand is None else [y, xs[operand]]
        y = REGISTRY[name].reference(dict(sattrs), ins, {}, ctx)
    return y


def to_onnx(op: Any, node: Node, e: Any) -> None:
    """Standard ONNX for a node: the op's own mapping into an intermediate, then one ONNX node per step (a fused
    conv+add+relu becomes Conv, Add, Relu), the last one writing the node's output."""
    from .schema import REGISTRY

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


def describe(attrs: dict[str, Any], inputs: Sequence[Value]) -> str:
    """The epilogue as text, e.g. `add(%layer1.0.downsample), relu`."""
    parts = []
    for name, sattrs, operand in steps(attrs):
        args = [f"%{inputs[operand].name}"] if operand is not None and operand < len(inputs) else []
        args += [f"{k}={v}" for k, v in sattrs]
        parts.append(f"{name}({', '.join(args)})" if args else name)
    return ", ".join(parts)
