"""A deterministic, readable text form of the IR, for dumps, debugging and golden tests:

    graph tiny(%x: f32[N, 3, 8, 8]) {
      params: 2 (448 elements)
      param %conv.weight: f32[16, 3, 3, 3] trainable init=he_normal
      param %conv.bias: f32[16] trainable init=zeros
      %conv = conv2d(%x, weight=%conv.weight, bias=%conv.bias) {out_channels=16, kernel=(3, 3), ...} : f32[N, 16, 8, 8]   # net.gc:3:5
      %act = relu(%conv) : f32[N, 16, 8, 8]
      return y=%act
    }

Attributes are printed in the op's schema order (attributes the schema does not declare follow, sorted), floats
with `repr` (shortest round-tripping form), initializers with `str(Init)`. The same graph always prints the same
text.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .graph import Graph, Init, Node, Param, TensorType, Value

__all__ = ["print_graph", "format_value"]

_DATA_INLINE = 16  # fixed data with at most this many elements is printed in full


def print_graph(graph: Graph, *, locations: bool = True, params: bool = True) -> str:
    """The text form of `graph`. `locations=False` omits the `# path:line:col` comments; `params=False` omits
    the per-parameter lines (the summary line stays)."""
    ins = ", ".join(_decl(v) for v in graph.inputs)
    lines = [f"graph {graph.name}({ins}) {{"]
    if graph.meta:
        lines.append("  meta: " + ", ".join(_meta_text(k, v) for k, v in _sorted_items(graph.meta)))
    lines.extend(_param_summary(graph))
    if params:
        lines.extend("  " + _param_line(p) for p in graph.params.values())
    for n in graph.nodes:
        lines.append("  " + _node_line(n, locations))
    outs = ", ".join(f"{name}={_ref(v)}" for name, v in graph.outputs.items())
    lines.append(f"  return {outs}" if outs else "  return")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- pieces -----------------------------------------------------------------------------------------------------

def _meta_text(k: Any, v: Any) -> str:
    if k == "memory_plan" and isinstance(v, dict):  # the offsets are for backends; the sizes are what a reader wants
        return (f"memory_plan=<arena {v.get('arena_bytes')} bytes for {v.get('total_bytes')} bytes of activations, "
                f"{len(v.get('offsets', {}))} buffers, batch {v.get('batch')}>")
    return f"{k}={format_value(v)}"


def _ref(v: Any) -> str:
    return f"%{v.name}" if isinstance(v, Value) else f"<{type(v).__name__}>"


def _type(t: Any) -> str:
    return str(t) if isinstance(t, TensorType) else f"<{t!r}>"


def _decl(v: Value) -> str:
    return f"{_ref(v)}: {_type(v.type)}"


def _count(n: int) -> str:
    return f"{n:,}"


def _param_summary(graph: Graph) -> list[str]:
    per_role: dict[str, tuple[int, int]] = {}
    for p in graph.params.values():
        t = p.value.type
        numel = t.numel() if isinstance(t, TensorType) else 0
        c, e = per_role.get(p.role, (0, 0))
        per_role[p.role] = (c + 1, e + numel)
    counted = [(r, ce) for r, ce in per_role.items() if r != "buffer"]
    tensors = sum(c for _, (c, _) in counted)
    elements = sum(e for _, (_, e) in counted)
    order = ["trainable", "frozen", "fixed"]
    roles = sorted((r for r, _ in counted), key=lambda r: (order.index(r) if r in order else len(order), r))
    text = f"  params: {tensors} ({_count(elements)} elements"
    if len(roles) > 1 or (roles and roles[0] != "trainable"):
        text += ": " + ", ".join(f"{_count(per_role[r][1])} {r}" for r in roles)
    lines = [text + ")"]
    if "buffer" in per_role:
        c, e = per_role["buffer"]
        lines.append(f"  buffers: {c} ({_count(e)} elements)")
    return lines


def _param_line(p: Param) -> str:
    text = f"param {_decl(p.value)} {p.role}"
    if p.init is not None:
        text += f" init={p.init}"
    if p.data is not None:
        text += f" data={_data(p.data)}"
    return text


def _data(a: Any) -> str:
    if not isinstance(a, np.ndarray):
        return f"<{type(a).__name__}>"
    dtype = str(a.dtype)
    if a.size <= _DATA_INLINE:
        return f"{format_value(a.tolist())}:{dtype}"
    flat = a.reshape(-1)
    if np.issubdtype(a.dtype, np.number) and a.size:
        lo, hi = flat.min().item(), flat.max().item()
        return f"<{_count(a.size)} values {list(a.shape)}:{dtype}, min={format_value(lo)}, max={format_value(hi)}>"
    return f"<{_count(a.size)} values {list(a.shape)}:{dtype}>"


def _node_line(n: Node, locations: bool) -> str:
    args = [_ref(v) for v in n.inputs] + [f"{role}={_ref(v)}" for role, v in n.params.items()]
    text = f"{_ref(n.output)} = {n.op}({', '.join(args)})"
    if n.attrs:
        text += " {" + ", ".join(_attr_text(n, k, v) for k, v in _attr_items(n)) + "}"
    text += f" : {_type(n.output.type)}"
    if locations and n.loc is not None:
        text += f"   # {n.loc}"
    return text


def _attr_text(n: Node, k: str, v: Any) -> str:
    if k == "epilogue":  # fused steps read as calls: [add(%shortcut), relu]
        from ..ops.epilogue import describe
        try:
            return f"epilogue=[{describe(n.attrs, n.inputs)}]"
        except Exception:  # noqa: BLE001 - a malformed epilogue prints raw (the verifier reports it)
            pass
    return f"{k}={format_value(v)}"


def _attr_items(n: Node) -> list[tuple[str, Any]]:
    """The node's attributes in its op's schema order, then undeclared ones sorted by name."""
    try:
        from ..ops.schema import REGISTRY  # lazily: the ops package imports the IR
        declared = [a.name for a in REGISTRY[n.op].attrs] if n.op in REGISTRY else []
    except ImportError:  # pragma: no cover
        declared = []
    rank = {name: i for i, name in enumerate(declared)}
    keys = sorted(n.attrs, key=lambda k: (0, rank[k], "") if k in rank else (1, 0, str(k)))
    return [(k, n.attrs[k]) for k in keys]


def _sorted_items(d: dict) -> list[tuple[Any, Any]]:
    return sorted(d.items(), key=lambda kv: str(kv[0]))


def format_value(v: Any) -> str:
    """An attribute or metadata value as text: ints and floats (repr, so it round-trips), true/false, none,
    "strings", (tuples), [lists], initializers, {mappings}, arrays."""
    if v is None:
        return "none"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return repr(f) if math.isfinite(f) else {math.inf: "inf", -math.inf: "-inf"}.get(f, "nan")
    if isinstance(v, str):
        return _quote(v)
    if isinstance(v, Init):
        return str(v)
    if isinstance(v, tuple):
        inner = ", ".join(format_value(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, list):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{format_value(k)}: {format_value(x)}" for k, x in _sorted_items(v)) + "}"
    if isinstance(v, np.ndarray):
        return _data(v)
    return f"<{type(v).__name__}>"


def _quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
