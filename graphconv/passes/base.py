"""What every pass shares: the program it transforms, the result it reports, and graph edits.

A pass is a class with a `name`, a one-line `summary`, and `run(program) -> PassResult`. It may change the program's
graph and weights in place (the pass manager hands it a private copy). `PassResult.counts` says what fired and how
often, by a phrase that reads in the pass log (`{"batchnorms folded into convolutions": 53}`); `changed` is true when
the graph or the weights changed. Analysis passes (memory planning) leave the function alone and record their
findings in `graph.meta` and `PassResult.notes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..ir.graph import Graph, Node, TensorType, Value


@dataclass
class Program:
    """A graph with the values of its parameters. `training`: the graph will be trained (batchnorm statistics
    and dropout stay, parameters stay separate); otherwise it is an inference graph and every parameter is a
    compile-time constant."""

    graph: Graph
    weights: dict[str, np.ndarray]
    training: bool = False

    def param_data(self, v: Value) -> np.ndarray:
        """The data of a parameter value: written in the spec (fixed) or from the weights."""
        p = self.graph.params[v.name]
        return p.data if p.data is not None else self.weights[v.name]

    def set_param(self, v: Value, data: np.ndarray, role: str | None = None) -> None:
        """Give a parameter new values (its type follows their shape) and, optionally, a new role. A fixed
        parameter's values live in the graph, any other's in the weights."""
        p = self.graph.params[v.name]
        data = np.asarray(data)
        if role is not None:
            p.role = role
        v.type = TensorType(data.shape, v.type.dtype)
        if p.role == "fixed":
            p.data = data
            self.weights.pop(v.name, None)
        else:
            p.data = None
            self.weights[v.name] = data

    def set_layer_params(self, layer: Node, new: dict[str, np.ndarray], role: str | None = None) -> None:
        """New values for a layer's parameters by role (computed in float64; stored in the precision of its weight),
        adding those it lacks (a folded bias: the attribute of that name becomes true). Every parameter takes
        `role`, or keeps its own (a new one takes the weight's)."""
        g = self.graph
        weight = layer.params["weight"]
        dtype = np.asarray(self.param_data(weight)).dtype
        role_of_new = role or g.params[weight.name].role
        for r, arr in new.items():
            arr = np.asarray(arr).astype(dtype)
            v = layer.params.get(r)
            if v is None:
                v = g.add_param(fresh_name(g, f"{layer.name}.{r}"), TensorType(arr.shape, weight.type.dtype),
                                role_of_new)
                layer.params[r] = v
                layer.attrs[r] = True
            self.set_param(v, arr, role)


@dataclass
class PassResult:
    changed: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def count(self, what: str, n: int = 1) -> None:
        """Record that the pass did `what` `n` more times (so it changed the graph)."""
        self.counts[what] = self.counts.get(what, 0) + n
        self.changed = True

    def line(self) -> str:
        """What the pass did, in one line of the pass log."""
        parts = [f"{n} {what}" for what, n in self.counts.items() if n]
        parts += self.notes
        return "; ".join(parts) if parts else "nothing to do"


class Pass:
    """One optimization pass: `run` changes the program's graph in place and says what it did."""
    name = ""
    summary = ""
    inference_only = False  # skipped on training graphs

    def run(self, program: Program) -> PassResult:
        """Transform `program` (a private copy) and return what fired, for the pass log."""
        raise NotImplementedError


# -- graph edits -------------------------------------------------------------------------------------------------

def replace_uses(graph: Graph, old: Value, new: Value) -> int:
    """Make every reader of `old` (node inputs, graph outputs) read `new`. Returns how many uses changed."""
    n = 0
    for node in graph.nodes:
        for i, v in enumerate(node.inputs):
            if v is old:
                node.inputs[i] = new
                n += 1
    for name, v in graph.outputs.items():
        if v is old:
            graph.outputs[name] = new
            n += 1
    return n


def remove_nodes(graph: Graph, dead: Iterable[Node]) -> None:
    """Drop nodes (and their output values) from the graph; their parameters stay until `prune_params`."""
    ids = {id(n) for n in dead}
    for n in graph.nodes:
        if id(n) in ids:
            graph.values.pop(n.output.name, None)
    graph.nodes = [n for n in graph.nodes if id(n) not in ids]


def prune_params(program: Program) -> int:
    """Remove parameters no node reads (nor any output). Returns how many went."""
    g = program.graph
    used = {v.name for n in g.nodes for v in n.all_inputs} | {v.name for v in g.outputs.values()}
    gone = [name for name in g.params if name not in used]
    for name in gone:
        del g.params[name]
        g.values.pop(name, None)
        program.weights.pop(name, None)
    return len(gone)


class Readers:
    """Who reads each value of a graph (`of`: value name -> nodes, once per input slot) and which values are graph
    outputs: a snapshot that passes update as they rewrite."""

    def __init__(self, graph: Graph):
        self.of = graph.consumers()
        self.outputs = {v.name for v in graph.outputs.values()}

    def only(self, v: Value) -> Node | None:
        """The one node reading `v`, when `v` has exactly one reader and is not a graph output: then the value is
        private to that pair and may be rewritten with it."""
        r = self.of.get(v.name, ())
        return r[0] if len(r) == 1 and v.name not in self.outputs else None


def fresh_name(graph: Graph, base: str) -> str:
    name, k = base, 1
    while name in graph.values:
        k += 1
        name = f"{base}_{k}"
    return name


def attr_key(v: Any) -> Any:
    """A hashable, exact key for an attribute value (arrays by dtype, shape and bytes)."""
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, attr_key(x)) for k, x in v.items())))
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(attr_key(x) for x in v))
    if isinstance(v, float):
        return ("float", v.hex() if v == v else "nan")
    return (type(v).__name__, v)
