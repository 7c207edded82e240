"""Writing a graph back as a spec.

    write_spec(graph) -> str

The text loads back (`load_graph_text`) to a graph with the same nodes, names, attributes and parameters, so a
weights file saved for `graph` runs with the written spec. Layers keep their names with `as NAME`; a value read by
one layer only continues a chain (`a -> conv2d(...) as c1 -> relu as r1`), others are named values. Attributes are
written only when they differ from the op's defaults. Fixed parameters (weights written in a spec) are written as
literals.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..errors import GraphconvError
from ..ir.graph import DTYPE_SHORT, Graph, Node, Param
from ..ops import REGISTRY

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _num(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            raise GraphconvError(f"cannot write the non-finite number {f} in a spec")
        text = repr(f)
        if "e" not in text and "." not in text:
            text += ".0"
        return text
    raise TypeError(type(v).__name__)


def _value(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return _value(v.tolist())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(i) for i in v) + "]"
    if isinstance(v, str):
        if _IDENT.match(v):
            return v  # a bare word such as same, nearest, reflect
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _num(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _call_attrs(node: Node, graph: Graph) -> list[str]:
    op = REGISTRY[node.op]
    attrs = dict(node.attrs)
    defaults = {a.name: a.default for a in op.attrs}
    out: list[str] = []
    # attributes the resolved form adds or changes, written the way the spec language takes them
    if node.op in ("max_pool2d", "avg_pool2d", "lp_pool2d") and attrs.get("stride") == attrs.get("kernel"):
        attrs.pop("stride", None)
    if node.op == "upsample":
        if attrs.get("scale") is not None and all(float(s).is_integer() for s in attrs["scale"]) \
                and all(float(s) * int(d) == z for s, d, z in zip(attrs["scale"], node.inputs[0].type.shape[2:],
                                                                  attrs["size"])):
            attrs["scale"] = tuple(int(s) for s in attrs["scale"])
            attrs.pop("size", None)
        else:
            attrs.pop("scale", None)
    for p_role, pv in node.params.items():  # fixed parameters: their values go into the spec
        p: Param = graph.params[pv.name]
        if p.role == "fixed" and p.data is not None and p_role in defaults:
            attrs[p_role] = np.asarray(p.data)
        elif p.role == "frozen" and "frozen" in defaults:
            attrs["frozen"] = True
    for a in op.attrs:
        if a.name not in attrs:
            continue
        v = attrs[a.name]
        if v is None:
            continue
        if a.name in defaults and not isinstance(v, np.ndarray) and _same(v, defaults[a.name]):
            continue
        if isinstance(v, tuple) and len(v) == 4 and a.name in ("padding", "pads") and v[0] == v[2] and v[1] == v[3]:
            v = v[0] if v[0] == v[1] else [v[0], v[1]]
        elif isinstance(v, tuple) and len(v) == 2 and v[0] == v[1] and a.name in ("kernel", "stride", "dilation",
                                                                                   "scale", "size",
                                                                                   "output_padding"):
            v = v[0]
        out.append(f"{a.name}={_value(v)}")
    return out


def _step(node: Node, graph: Graph, extra_inputs: list[str]) -> str:
    args = extra_inputs + _call_attrs(node, graph)
    call = node.op + (f"({', '.join(args)})" if args else "")
    return f"{call} as {node.name}"


def write_spec(graph: Graph, name: str | None = None) -> str:
    """The spec text of `graph` (see the module docstring)."""
    net = name or graph.name
    if not _IDENT.match(net):
        net = re.sub(r"\W+", "_", net).strip("_") or "imported"
        if net[0].isdigit():
            net = "n" + net
    for n in graph.nodes:
        if not _IDENT.match(n.name):
            raise GraphconvError(f"layer name '{n.name}' is not a valid spec identifier (hierarchical names from "
                                 "blocks cannot be written back as a flat spec)")
        if n.op not in REGISTRY:
            raise GraphconvError(f"unknown op '{n.op}' in layer '{n.name}'")
    users = graph.consumers()
    outputs = {v.name for v in graph.outputs.values()}
    lines = [f"# written by graphconv from graph '{graph.name}'", f"network {net} {{"]
    for v in graph.inputs:
        dims = ", ".join(str(d) for d in v.type.shape)
        lines.append(f"  input {v.name}: {DTYPE_SHORT[v.type.dtype]}[{dims}]")
    lines.append("")

    def ref(v) -> str:
        if v.kind == "param":
            raise GraphconvError(f"value '{v.name}' is a parameter used as a data input; specs cannot express it")
        return v.name

    chain: list[Node] = []

    def flush():
        if not chain:
            return
        head = chain[0]
        first = f"{ref(head.inputs[0])} -> {_step(head, graph, [ref(v) for v in head.inputs[1:]])}" \
            if head.inputs else _step(head, graph, [])
        parts = [first] + [_step(n, graph, [ref(v) for v in n.inputs[1:]]) for n in chain[1:]]
        text = f"  {chain[-1].name} = " + parts[0]
        for p in parts[1:]:
            text += f"\n    -> {p}"
        lines.append(text)
        chain.clear()

    for n in graph.nodes:
        prev = chain[-1] if chain else None
        if prev is not None and n.inputs and n.inputs[0] is prev.output and len(users[prev.output.name]) == 1 \
                and prev.output.name not in outputs and all(v is not prev.output for v in n.inputs[1:]):
            chain.append(n)
            continue
        flush()
        chain.append(n)
    flush()
    lines.append("")
    renamed = []
    for key, v in graph.outputs.items():
        if key != v.name:
            if not _IDENT.match(key):
                raise GraphconvError(f"output name '{key}' is not a valid spec identifier")
            lines.append(f"  {key} = {v.name} -> identity as {key}")
            renamed.append(key)
        else:
            renamed.append(key)
    lines.append(f"  output {', '.join(renamed)}")
    lines.append("}")
    return "\n".join(lines) + "\n"
