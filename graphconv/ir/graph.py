"""The IR: a typed dataflow graph.

- `TensorType`: a shape (ints, plus the symbolic batch dimension written as a string, normally "N") and a dtype.
- `Value`: a named tensor. Its `kind` says where it comes from:
    * "input": a graph input, fed by the caller;
    * "param": a parameter or buffer (weights, biases, BatchNorm statistics), described by a `Param`;
    * "node": the output of a `Node`.
- `Node`: one op application. It owns its *ordered* data inputs (`inputs`), its parameters by role name
  (`params`, e.g. {"weight": ..., "bias": ...}), its normalized attributes, one output value, and the spec
  location it came from. The node's name is hierarchical and unique (`layer2.bottleneck0.conv1`); its output value
  and its parameters are named after it (`layer2.bottleneck0.conv1.weight`).
- `Param`: what a parameter value is: `role` is "trainable", "frozen" (loaded, never trained), "fixed" (its data
  written in the spec) or "buffer" (state such as BatchNorm running statistics, not counted as a parameter).
- `Graph`: inputs, ordered named outputs, nodes in a topological order, parameters.

The graph's own lists are the source of truth; `to_networkx()` builds a networkx view for graph algorithms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx
import numpy as np

from ..errors import SourceLoc

Dim = int | str

DTYPES = ("float32", "float64")
DTYPE_SHORT = {"float32": "f32", "float64": "f64"}
PARAM_ROLES = ("trainable", "frozen", "fixed", "buffer")


@dataclass(frozen=True)
class TensorType:
    """Shape and dtype of a tensor. A `str` dimension is symbolic (the batch dimension `N`)."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        """Whether every dimension is a number (no symbolic batch)."""
        return all(isinstance(d, int) for d in self.shape)

    def numel(self, batch: int = 1) -> int:
        """Element count with symbolic dimensions taken as `batch`."""
        return math.prod(d if isinstance(d, int) else batch for d in self.shape)

    def concrete(self, batch: int) -> tuple[int, ...]:
        """The shape with symbolic dimensions replaced by `batch`."""
        return tuple(d if isinstance(d, int) else batch for d in self.shape)

    def with_shape(self, shape: tuple[Dim, ...]) -> "TensorType":
        """The same dtype with another shape."""
        return TensorType(tuple(shape), self.dtype)

    def __str__(self) -> str:
        return f"{DTYPE_SHORT.get(self.dtype, self.dtype)}[{', '.join(str(d) for d in self.shape)}]"


@dataclass(eq=False)
class Value:
    name: str
    type: TensorType
    kind: str  # "input" | "param" | "node"
    producer: "Node | None" = None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(frozen=True)
class Init:
    """A named initializer with its arguments, e.g. Init("he_normal") or Init("normal", {"std": 0.01})."""

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        if not self.args:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.args)})"


@dataclass(eq=False)
class Param:
    value: Value
    role: str  # one of PARAM_ROLES
    init: Init | None = None
    data: np.ndarray | None = None  # set for fixed parameters written in the spec

    @property
    def name(self) -> str:
        """The parameter's value name (`<layer>.<role>`)."""
        return self.value.name

    @property
    def counted(self) -> bool:
        """Whether it counts as a parameter (buffers do not, as in torchvision's parameter counts)."""
        return self.role != "buffer"


@dataclass(eq=False)
class Node:
    name: str
    op: str
    inputs: list[Value]
    attrs: dict[str, Any]
    output: Value
    params: dict[str, Value] = field(default_factory=dict)
    loc: SourceLoc | None = None

    @property
    def all_inputs(self) -> list[Value]:
        """Data inputs then parameters, in a fixed order: what a backend or an algorithm iterates over."""
        return [*self.inputs, *self.params.values()]

    def __repr__(self) -> str:
        return f"Node({self.name}: {self.op})"


class Graph:
    """A network: inputs, nodes in topological order, named outputs, parameters."""

    def __init__(self, name: str):
        self.name = name
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: dict[str, Value] = {}
        self.params: dict[str, Param] = {}
        self.values: dict[str, Value] = {}
        self.meta: dict[str, Any] = {}  # e.g. the network-level parameters the graph was built with

    # -- building -------------------------------------------------------------------------------------------
    def _claim(self, value: Value) -> Value:
        if value.name in self.values:
            raise ValueError(f"duplicate value name {value.name!r}")
        self.values[value.name] = value
        return value

    def add_input(self, name: str, type: TensorType) -> Value:
        """Declare a graph input."""
        v = self._claim(Value(name, type, "input"))
        self.inputs.append(v)
        return v

    def add_param(self, name: str, type: TensorType, role: str, init: Init | None = None,
                  data: np.ndarray | None = None) -> Value:
        """Declare a parameter or buffer: its type, role (trainable, frozen, fixed, buffer) and initializer or fixed data."""
        if role not in PARAM_ROLES:
            raise ValueError(f"unknown parameter role {role!r}")
        v = self._claim(Value(name, type, "param"))
        self.params[name] = Param(v, role, init, data)
        return v

    def add_node(self, name: str, op: str, inputs: list[Value], attrs: dict[str, Any], out_type: TensorType,
                 params: dict[str, Value] | None = None, loc: SourceLoc | None = None) -> Node:
        """Append a node (nodes are kept in topological order) and its output value."""
        out = Value(name, out_type, "node")
        node = Node(name, op, list(inputs), dict(attrs), out, dict(params or {}), loc)
        out.producer = node
        self._claim(out)
        self.nodes.append(node)
        return node

    def set_output(self, name: str, value: Value) -> None:
        """Make `value` a graph output named `name`."""
        self.outputs[name] = value

    # -- queries --------------------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        """The node that computes the value `name`."""
        v = self.values[name]
        if v.producer is None:
            raise KeyError(name)
        return v.producer

    def consumers(self) -> dict[str, list[Node]]:
        """Value name -> nodes that read it (in node order)."""
        users: dict[str, list[Node]] = {name: [] for name in self.values}
        for n in self.nodes:
            for v in n.all_inputs:
                users[v.name].append(n)
        return users

    def iter_params(self, *, counted_only: bool = False) -> Iterator[Param]:
        """Every parameter; `counted_only` leaves out buffers (not counted as parameters)."""
        for p in self.params.values():
            if p.counted or not counted_only:
                yield p

    def num_params(self, *, trainable_only: bool = False) -> int:
        """The number of parameter elements (buffers excluded); `trainable_only` counts trainable ones only."""
        total = 0
        for p in self.params.values():
            if not p.counted or (trainable_only and p.role != "trainable"):
                continue
            total += p.value.type.numel()
        return total

    def to_networkx(self) -> nx.DiGraph:
        """A view for graph algorithms: one vertex per value name, an edge from each input of a node to its
        output, labelled with the input position."""
        g = nx.DiGraph()
        for v in self.values.values():
            g.add_node(v.name, kind=v.kind)
        for n in self.nodes:
            for i, v in enumerate(n.all_inputs):
                g.add_edge(v.name, n.output.name, index=i)
        return g

    def toposort(self) -> None:
        """Re-order `nodes` topologically (stable: ties keep their current order)."""
        order = {n.name: i for i, n in enumerate(self.nodes)}
        g = self.to_networkx()
        ranked = nx.lexicographical_topological_sort(g, key=lambda name: order.get(name, -1))
        self.nodes = [self.values[name].producer for name in ranked if self.values[name].producer is not None]

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} nodes, {len(self.params)} params)"
