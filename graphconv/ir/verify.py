"""IR verification: the invariants every pass may rely on and must preserve.

`lint(graph)` returns every problem found (an empty list when the graph is well formed); `verify(graph)` raises
`IRError` listing them. A broken invariant is a bug in the compiler (a pass, the builder, a deserializer), not a
user error, so `IRError` is not a `GraphconvError`.

Checked:
- names: value names unique across inputs, parameters and node outputs; `graph.values` holds exactly those values
  under their names; a node's name is its output's name; value kinds and producers agree with where values live;
- references: every node input and parameter, and every graph output, is a value of this graph (the same object);
  node parameters are parameter values;
- order: each node's inputs are defined before the node (topological order), and the dataflow has no cycle (a
  cycle's members are reported);
- parameters: each parameter value has a `Param` and vice versa; roles are known; parameter shapes are static;
  fixed parameters carry data of the parameter's shape (any data present must have that shape);
- types: dtypes are float32/float64; dimensions are ints >= 0 or symbol names;
- ops: every node's op is registered; its data-input count fits the op; re-running the op's shape inference on
  the node's attributes and input types reproduces the output type; the op's declared parameters match the
  node's (names, shapes, buffer or not).

Unused (dead) nodes and parameters are fine.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np

from .graph import DTYPES, PARAM_ROLES, Graph, Init, Node, Param, TensorType, Value

__all__ = ["IRError", "lint", "verify"]


class IRError(Exception):
    """The IR breaks an invariant: an internal compiler error. `problems` lists every problem found."""

    def __init__(self, problems: list[str], graph_name: str | None = None):
        self.problems = list(problems)
        self.graph_name = graph_name
        n = len(self.problems)
        head = f"invalid IR{f' in graph {graph_name!r}' if graph_name is not None else ''}: " \
               f"{n} problem{'s' if n != 1 else ''}"
        super().__init__(head + "".join(f"\n  - {p}" for p in self.problems))


def verify(graph: Graph) -> None:
    """Raise `IRError` listing every broken invariant; return None when the graph is well formed."""
    problems = lint(graph)
    if problems:
        raise IRError(problems, getattr(graph, "name", None))


def lint(graph: Graph) -> list[str]:
    """Every broken invariant of `graph`, as messages in a deterministic order (empty when it is well formed)."""
    out: list[str] = []
    _check_values(graph, out)
    _check_params(graph, out)
    order_ok = _check_nodes_order(graph, out)
    if not order_ok:
        _check_cycles(graph, out)
    _check_ops(graph, out)
    _check_outputs(graph, out)
    return out


# -- helpers ----------------------------------------------------------------------------------------------------

def _vname(v: Any) -> str:
    return f"%{v.name}" if isinstance(v, Value) else repr(v)


def _type_problem(t: Any, *, static: bool = False) -> str | None:
    if not isinstance(t, TensorType):
        return f"type is {type(t).__name__}, not a TensorType"
    if t.dtype not in DTYPES:
        return f"dtype {t.dtype!r} is not one of {', '.join(DTYPES)}"
    if not isinstance(t.shape, tuple):
        return f"shape is a {type(t.shape).__name__}, not a tuple"
    for d in t.shape:
        if isinstance(d, str):
            if not d:
                return "a symbolic dimension has an empty name"
            if static:
                return f"shape {t} has the symbolic dimension {d!r}; parameters need static shapes"
        elif not isinstance(d, (int, np.integer)) or isinstance(d, (bool, np.bool_)):
            return f"dimension {d!r} is neither an integer nor a symbol"
        elif d < 0:
            return f"shape {t} has a negative dimension"
    return None


def _is_graph_value(graph: Graph, v: Any) -> bool:
    return isinstance(v, Value) and graph.values.get(v.name) is v


# -- names, kinds, values ---------------------------------------------------------------------------------------

def _check_values(graph: Graph, out: list[str]) -> None:
    owned: list[tuple[Value, str]] = []  # every value the graph defines, with where it is defined
    for v in graph.inputs:
        owned.append((v, "input"))
    for key, p in graph.params.items():
        if isinstance(p, Param) and isinstance(p.value, Value):
            owned.append((p.value, "param"))
    node_names: dict[str, int] = {}
    for n in graph.nodes:
        if not isinstance(n, Node):
            out.append(f"graph.nodes holds a {type(n).__name__}, not a Node")
            continue
        node_names[n.name] = node_names.get(n.name, 0) + 1
        if not isinstance(n.output, Value):
            out.append(f"node {n.name}: output is a {type(n.output).__name__}, not a Value")
            continue
        owned.append((n.output, "node"))
        if n.output.name != n.name:
            out.append(f"node {n.name}: its output is named %{n.output.name}, not after the node")
        if n.output.producer is not n:
            out.append(f"node {n.name}: its output %{n.output.name} does not name it as producer")
    for name, count in node_names.items():
        if count > 1:
            out.append(f"node name {name!r} is used by {count} nodes")

    seen: dict[str, Value] = {}
    for v, where in owned:
        if not isinstance(v, Value):
            out.append(f"graph {where} list holds a {type(v).__name__}, not a Value")
            continue
        if v.name in seen:
            if seen[v.name] is v:
                out.append(f"value %{v.name} is listed twice")
            else:
                out.append(f"value name {v.name!r} is defined more than once")
            continue
        seen[v.name] = v
        if v.kind != where:
            out.append(f"value %{v.name} has kind {v.kind!r} but is a graph {where}")
        if where != "node" and v.producer is not None:
            out.append(f"{where} %{v.name} has a producer ({v.producer.name})")
        tp = _type_problem(v.type, static=(where == "param"))
        if tp:
            out.append(f"value %{v.name}: {tp}")
        registered = graph.values.get(v.name)
        if registered is None:
            out.append(f"value %{v.name} is missing from graph.values")
        elif registered is not v:
            out.append(f"graph.values[{v.name!r}] is a different object than the {where} %{v.name}")
    for name, v in graph.values.items():
        if name not in seen:
            if isinstance(v, Value) and v.kind == "param" and name not in graph.params:
                continue  # a parameter value without a Param: reported by _check_params
            out.append(f"graph.values has %{name}, which is no input, parameter or node output")
        elif isinstance(v, Value) and v.name != name:
            out.append(f"graph.values[{name!r}] is named {v.name!r}")


# -- parameters -------------------------------------------------------------------------------------------------

def _check_params(graph: Graph, out: list[str]) -> None:
    for key, p in graph.params.items():
        if not isinstance(p, Param):
            out.append(f"graph.params[{key!r}] is a {type(p).__name__}, not a Param")
            continue
        if not isinstance(p.value, Value):
            out.append(f"param {key!r}: its value is a {type(p.value).__name__}, not a Value")
            continue
        if p.value.name != key:
            out.append(f"graph.params[{key!r}] describes %{p.value.name}")
        if p.role not in PARAM_ROLES:
            out.append(f"param %{key}: unknown role {p.role!r} (roles: {', '.join(PARAM_ROLES)})")
        if p.init is not None and not isinstance(p.init, Init):
            out.append(f"param %{key}: init is a {type(p.init).__name__}, not an Init")
        if p.data is not None:
            if not isinstance(p.data, np.ndarray):
                out.append(f"param %{key}: data is a {type(p.data).__name__}, not a numpy array")
            elif isinstance(p.value.type, TensorType) and tuple(p.data.shape) != tuple(p.value.type.shape):
                out.append(f"param %{key}: data has shape {list(p.data.shape)}, "
                           f"but the parameter is {p.value.type}")
            elif not (np.issubdtype(p.data.dtype, np.floating) or np.issubdtype(p.data.dtype, np.integer)):
                out.append(f"param %{key}: data has dtype {p.data.dtype}, not a number type")
        elif p.role == "fixed":
            out.append(f"param %{key}: a fixed parameter has no data")
    # every parameter value has a Param
    for name, v in graph.values.items():
        if isinstance(v, Value) and v.kind == "param" and name not in graph.params:
            out.append(f"value %{name} is a parameter value without a Param")


# -- order and cycles -------------------------------------------------------------------------------------------

def _check_nodes_order(graph: Graph, out: list[str]) -> bool:
    """Check references and topological order; return whether the order is topological."""
    defined: set[int] = {id(v) for v in graph.inputs}
    defined |= {id(p.value) for p in graph.params.values() if isinstance(p, Param)}
    later = {id(n.output): n for n in graph.nodes if isinstance(n, Node)}
    ok = True
    for n in graph.nodes:
        if not isinstance(n, Node):
            continue
        if not isinstance(n.inputs, list):
            out.append(f"node {n.name}: inputs is a {type(n.inputs).__name__}, not a list")
        if not isinstance(n.params, dict):
            out.append(f"node {n.name}: params is a {type(n.params).__name__}, not a dict")
            params = {}
        else:
            params = n.params
        if not isinstance(n.attrs, dict):
            out.append(f"node {n.name}: attrs is a {type(n.attrs).__name__}, not a dict")
        refs = [(f"input {i}", v) for i, v in enumerate(n.inputs)] + [(f"param {r!r}", v) for r, v in params.items()]
        for what, v in refs:
            if not _is_graph_value(graph, v):
                out.append(f"node {n.name}: {what} {_vname(v)} is not a value of this graph")
                continue
            if what.startswith("param") and v.kind != "param":
                out.append(f"node {n.name}: {what} {_vname(v)} is a {v.kind} value, not a parameter")
            if id(v) in defined:
                continue
            ok = False
            if v is n.output:
                out.append(f"node {n.name}: {what} is its own output")
            elif id(v) in later:
                out.append(f"node {n.name}: {what} %{v.name} is used before it is defined "
                           f"(nodes are not in topological order)")
        if isinstance(n.output, Value):
            defined.add(id(n.output))
    return ok


def _check_cycles(graph: Graph, out: list[str]) -> None:
    try:
        g = graph.to_networkx()
    except Exception as e:  # a badly broken graph; the other checks have reported why
        out.append(f"cannot build the dataflow graph to look for cycles: {type(e).__name__}: {e}")
        return
    comps = [sorted(c) for c in nx.strongly_connected_components(g)
             if len(c) > 1 or any(g.has_edge(v, v) for v in c)]
    for comp in sorted(comps):
        try:
            cycle = [u for u, _ in nx.find_cycle(g.subgraph(comp))]
            path = " -> ".join(f"%{v}" for v in [*cycle, cycle[0]])
        except nx.NetworkXNoCycle:  # pragma: no cover - a strongly connected component always has one
            path = ", ".join(f"%{v}" for v in comp)
        out.append(f"dataflow cycle among {', '.join('%' + v for v in comp)}: {path}")


# -- ops --------------------------------------------------------------------------------------------------------

def _param_attr_defaults(op: Any, attrs: dict[str, Any]) -> dict[str, Any]:
    """The node's IR attributes plus neutral values for the parameter-construction attributes that `ir_attrs`
    strips (`weight`, `init`, `bias_init`, `frozen`), so `op.params` can run."""
    full = dict(attrs)
    declared = {a.name: a for a in getattr(op, "attrs", ())}
    for name in getattr(op, "param_attr_names", ()):
        if name in full:
            continue
        a = declared.get(name)
        if a is not None and not a.required:
            full[name] = a.default
        elif name in ("init", "bias_init"):
            full[name] = Init("zeros")
        elif name == "frozen":
            full[name] = False
        else:
            full[name] = None
    return full


def _check_ops(graph: Graph, out: list[str]) -> None:
    from ..ops.schema import REGISTRY  # lazily: the ops package imports the IR

    for n in graph.nodes:
        if not isinstance(n, Node) or not isinstance(n.attrs, dict) or not isinstance(n.output, Value):
            continue
        op = REGISTRY.get(n.op)
        if op is None:
            out.append(f"node {n.name}: unknown op {n.op!r}")
            continue
        if not all(isinstance(v, Value) for v in n.inputs) or not isinstance(n.params, dict):
            continue  # reported by the reference checks
        from ..ops import epilogue
        try:
            k = epilogue.own_input_count(n.attrs, len(n.inputs))
        except Exception as e:  # noqa: BLE001 - a malformed epilogue
            out.append(f"node {n.name}: malformed epilogue {n.attrs.get('epilogue')!r}: {type(e).__name__}: {e}")
            continue
        if op.variadic:
            least = max(op.min_inputs, len(op.inputs) - 1, 1)
            if k < least:
                out.append(f"node {n.name}: {n.op} takes at least {least} inputs, the node has {k}")
                continue
        elif k != len(op.inputs):
            out.append(f"node {n.name}: {n.op} takes {len(op.inputs)} input{'s' if len(op.inputs) != 1 else ''}, "
                       f"the node has {k}")
            continue
        in_types = [v.type for v in n.inputs]
        if any(_type_problem(t) for t in in_types):
            continue  # reported with the value
        try:
            inferred = epilogue.infer(op, n.attrs, in_types)
        except Exception as e:
            out.append(f"node {n.name}: {n.op} shape inference fails on its attributes and inputs: "
                       f"{type(e).__name__}: {e}")
        else:
            if inferred != n.output.type:
                out.append(f"node {n.name}: output type is {n.output.type}, but {n.op} infers {inferred}")
        try:
            want = epilogue.param_shapes(op, n.attrs, in_types, _param_attr_defaults(op, epilogue.own_attrs(n.attrs)))
        except Exception as e:
            out.append(f"node {n.name}: {n.op} cannot list its parameters: {type(e).__name__}: {e}")
            continue
        for role in want:
            if role not in n.params:
                out.append(f"node {n.name}: missing parameter {role!r} that {n.op} declares")
        for role, v in n.params.items():
            if role not in want:
                out.append(f"node {n.name}: parameter {role!r} is not one {n.op} declares "
                           f"({', '.join(want) or 'it declares none'})")
                continue
            shape, s = want[role]
            if not isinstance(v, Value) or not isinstance(v.type, TensorType):
                continue
            if tuple(v.type.shape) != tuple(shape):
                out.append(f"node {n.name}: parameter {role!r} (%{v.name}) has shape {list(v.type.shape)}, "
                           f"but {n.op} needs {list(shape)}")
            p = graph.params.get(v.name)
            if isinstance(p, Param) and p.value is v:
                if (s.role == "buffer") != (p.role == "buffer"):
                    out.append(f"node {n.name}: parameter {role!r} (%{v.name}) has role {p.role!r}, but {n.op} "
                               f"declares it as a {'buffer' if s.role == 'buffer' else 'parameter'}")


# -- outputs ----------------------------------------------------------------------------------------------------

def _check_outputs(graph: Graph, out: list[str]) -> None:
    if not isinstance(graph.outputs, dict):
        out.append(f"graph.outputs is a {type(graph.outputs).__name__}, not a dict")
        return
    for name, v in graph.outputs.items():
        if not isinstance(name, str) or not name:
            out.append(f"output name {name!r} is not a non-empty string")
        if not _is_graph_value(graph, v):
            out.append(f"output {name!r} refers to {_vname(v)}, which is not a value of this graph")
