"""Building IR nodes from op definitions: the one place that turns (op, attributes, inputs) into a node with its
parameters. The spec lowering uses it (checking its limits between `plan` and `emit`); passes and tests that
build graphs by hand use `add_op`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import SourceLoc
from ..ir.graph import Graph, Node, TensorType, Value
from .schema import REGISTRY, ParamSpec


@dataclass(frozen=True)
class Plan:
    """What a node will be, before anything is added to a graph."""

    op: str
    attrs: dict[str, Any]  # resolved attributes (still holding parameter construction)
    params: list[ParamSpec]
    out_type: TensorType


def plan(op_name: str, given: dict[str, Any], in_types: Sequence[TensorType]) -> Plan:
    """Validate attributes, resolve them against the input types, list the parameters, infer the output type.
    Raises OpError."""
    op = REGISTRY[op_name]
    attrs = op.resolve(op.check_attrs(given), in_types)
    return Plan(op_name, attrs, op.params(attrs, in_types), op.infer(attrs, in_types))


def param_role(spec: ParamSpec, attrs: dict[str, Any]) -> str:
    """Values written in the spec are fixed; `frozen=true` freezes what would train; buffers stay buffers."""
    if spec.data is not None:
        return "fixed"
    if spec.role == "trainable" and attrs.get("frozen"):
        return "frozen"
    return spec.role


def emit(graph: Graph, name: str, p: Plan, inputs: Sequence[Value], loc: SourceLoc | None = None) -> Node:
    """Add the planned node and its parameters (`<name>.<param>`) to `graph`."""
    dtype = inputs[0].type.dtype if inputs else "float32"
    params = {
        s.name: graph.add_param(f"{name}.{s.name}", TensorType(s.shape, dtype), param_role(s, p.attrs), s.init,
                                None if s.data is None else np.asarray(s.data))
        for s in p.params
    }
    return graph.add_node(name, p.op, list(inputs), REGISTRY[p.op].ir_attrs(p.attrs), p.out_type, params, loc)


def add_op(graph: Graph, name: str, op_name: str, inputs: Sequence[Value], *, loc: SourceLoc | None = None,
           **given: Any) -> Value:
    """Plan and emit in one step; returns the node's output value."""
    return emit(graph, name, plan(op_name, given, [v.type for v in inputs]), inputs, loc).output
