"""The display model: what `graphconv viz` draws, built from a Graph.

    model = build_model(graph, source="specs/resnet50.gc")
    model.to_json()          # the data the HTML viewer embeds

- `Leaf`: one box that cannot be opened: a graph input, a node, or a graph output. It carries its label (`lines`,
  the first drawn bold), its size in pixels and everything the details panel shows (`info`).
- `Group`: a dotted prefix of node names (`layer1`, `layer1.bottleneck0`): the block applications of the spec. It
  knows its children (groups and leaves, in graph order), how many layers and parameters it holds, the shapes that
  leave it, and its label and size when drawn collapsed.
- `Edge`: the dataflow from the leaf that produces a value to a leaf that reads it.

Sizes come from the text: labels are drawn in an 11 px monospace font, so a line of n characters is at most
n * CHAR_W pixels wide whatever font the browser picks. Both layouts (Python and the viewer's JS) read these sizes,
which is what makes them agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, Node, TensorType, Value
from ..ir.printer import format_value

__all__ = ["Leaf", "Group", "Edge", "VizModel", "build_model", "shape_text", "count_text"]

CHAR_W = 6.7  # upper bound of an 11 px monospace glyph's advance (DejaVu Sans Mono, Menlo: 6.62)
LINE_H = 14
PAD_X = 8
PAD_Y = 5
MIN_W = 72
MAX_CHARS = 40  # longer label lines are cut (the details panel has the whole text)

# colour classes by op; anything else is "other"
_CATEGORIES = {
    "conv": ("conv2d", "conv_transpose2d", "channel_matmul"),
    "dense": ("dense",),
    "norm": ("batchnorm", "lrn", "bn_train", "bn_stats", "bn_running"),
    "act": ("relu", "sigmoid", "tanh", "elu", "selu", "leaky_relu", "clip", "softmax", "log_softmax", "neg"),
    "pool": ("max_pool2d", "avg_pool2d", "lp_pool2d", "global_avg_pool", "global_max_pool", "window_reduce",
             "upsample", "reduce_mean", "reduce_sum"),
    "merge": ("add", "sub", "mul", "div", "concat"),
    "shape": ("flatten", "reshape", "transpose", "slice", "pad", "identity", "dropout", "to_blocked",
              "from_blocked"),
}
_CATEGORY = {op: cat for cat, ops in _CATEGORIES.items() for op in ops}


@dataclass
class Leaf:
    id: str
    kind: str  # "input" | "node" | "output"
    name: str
    op: str
    cat: str
    group: str | None  # the enclosing group's id; None at the top level
    lines: list[str]
    w: int
    h: int
    params: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Group:
    id: str
    name: str  # the dotted path, e.g. "layer1.bottleneck0"
    label: str  # its last part, "bottleneck0"
    parent: str | None
    depth: int  # 1 for a top-level group
    children: list[str] = field(default_factory=list)
    layers: int = 0
    params: int = 0
    shapes: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the label when collapsed
    w: int = 0
    h: int = 0
    header: str = ""  # the title bar when expanded
    header_w: int = 0


@dataclass
class Edge:
    src: str
    dst: str
    value: int  # index into VizModel.values


@dataclass
class VizModel:
    """Everything the SVG and HTML renderers and both layouts need; `to_json` is what the viewer embeds."""

    name: str
    source: str | None
    opt_level: int
    leaves: list[Leaf]
    groups: list[Group]
    roots: list[str]  # the top-level items, in graph order
    edges: list[Edge]
    values: list[dict[str, str]]  # {"name", "type"} of every value an edge carries
    totals: dict[str, Any]
    by_id: dict[str, Leaf | Group] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {x.id: x for x in [*self.leaves, *self.groups]}

    @property
    def nodes(self) -> list[Leaf]:
        """The leaves of graph nodes (not the inputs and outputs)."""
        return [leaf for leaf in self.leaves if leaf.kind == "node"]

    def max_depth(self) -> int:
        """The depth of the deepest group (0 without groups)."""
        return max((g.depth for g in self.groups), default=0)

    def groups_to_depth(self, depth: int | None) -> set[str]:
        """Ids of the groups expanded when groups deeper than `depth` are collapsed (None: all expanded)."""
        return {g.id for g in self.groups if depth is None or g.depth <= depth}

    def to_json(self) -> dict[str, Any]:
        """The model as JSON-ready data: what the viewer embeds and assets/layout.js lays out."""
        def leaf(x: Leaf) -> dict[str, Any]:
            return {"id": x.id, "kind": x.kind, "name": x.name, "op": x.op, "cat": x.cat, "group": x.group,
                    "lines": x.lines, "w": x.w, "h": x.h, "params": x.params, "info": x.info}

        def group(g: Group) -> dict[str, Any]:
            return {"id": g.id, "name": g.name, "label": g.label, "parent": g.parent, "depth": g.depth,
                    "children": g.children, "layers": g.layers, "params": g.params, "shapes": g.shapes,
                    "lines": g.lines, "w": g.w, "h": g.h, "header": g.header, "header_w": g.header_w}

        return {"name": self.name, "source": self.source, "opt_level": self.opt_level, "totals": self.totals,
                "roots": self.roots, "leaves": [leaf(x) for x in self.leaves],
                "groups": [group(g) for g in self.groups],
                "edges": [[e.src, e.dst, e.value] for e in self.edges], "values": self.values}


# -- text ------------------------------------------------------------------------------------------------------------

def shape_text(t: TensorType) -> str:
    """`[N, 64, 56, 56]`: a type's shape as the summary writes it."""
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def count_text(n: int) -> str:
    """A parameter count for a label: exact below 100,000 (`9,408`), then `147.5k`, `2.36M`."""
    if n < 100_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1e3:.1f}k"
    return f"{n / 1e6:.2f}M"


def _cut(line: str, limit: int = MAX_CHARS) -> str:
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _box(lines: list[str], extra_w: int = 0) -> tuple[list[str], int, int]:
    lines = [_cut(s) for s in lines]
    w = max(MIN_W, math.ceil(max(len(s) for s in lines) * CHAR_W) + 2 * PAD_X + extra_w)
    return lines, w, len(lines) * LINE_H + 2 * PAD_Y


def _pair(v: Any) -> tuple[Any, Any] | None:
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return v[0], v[1]
    if isinstance(v, int) and not isinstance(v, bool):
        return v, v
    return None


def _brief(node: Node) -> str:
    """The op with its window and fused steps: `conv2d 3×3/2 + add + relu`."""
    from ..ops.epilogue import steps

    text = node.op
    k = _pair(node.attrs.get("kernel"))
    if k is not None:
        text += f" {k[0]}×{k[1]}"
        s = _pair(node.attrs.get("stride"))
        if s is not None and s != (1, 1):
            text += f"/{s[0]}" if s[0] == s[1] else f"/{s[0]}×{s[1]}"
    groups = node.attrs.get("groups")
    if isinstance(groups, int) and groups > 1:
        text += f" g{groups}"
    for name, sattrs, _ in steps(node.attrs):
        reduce = dict(sattrs).get("reduce")
        text += f" + {name}" + (f"({reduce})" if reduce else "")
    return text


def _attr_items(node: Node) -> list[tuple[str, Any]]:
    """The node's attributes in its op's schema order, then undeclared ones by name (as the IR printer orders them)."""
    from ..ops.schema import REGISTRY

    declared = [a.name for a in REGISTRY[node.op].attrs] if node.op in REGISTRY else []
    rank = {name: i for i, name in enumerate(declared)}
    keys = sorted(node.attrs, key=lambda k: (0, rank[k], "") if k in rank else (1, 0, str(k)))
    return [(k, node.attrs[k]) for k in keys]


def _attr_text(v: Any) -> str:
    try:
        return format_value(v)
    except Exception:  # noqa: BLE001 - an attribute the printer cannot show must not stop the drawing
        return f"<{type(v).__name__}>"


def _value_ref(v: Value) -> dict[str, str]:
    return {"name": v.name, "type": str(v.type), "kind": v.kind}


# -- building --------------------------------------------------------------------------------------------------------

def build_model(graph: Graph, *, source: str | None = None, opt_level: int = 0) -> VizModel:
    """The display model of `graph`: leaves for its inputs, nodes and outputs, groups from the dotted node names,
    edges along the dataflow. `source` names the file it came from (a spec or an ONNX model)."""
    from ..ops.epilogue import describe

    is_onnx = bool(source) and source.lower().endswith(".onnx")
    leaves: list[Leaf] = []
    producer: dict[str, str] = {}  # value name -> id of the leaf that makes it
    value_index: dict[str, int] = {}
    values: list[dict[str, str]] = []

    def value_id(v: Value) -> int:
        if v.name not in value_index:
            value_index[v.name] = len(values)
            values.append({"name": v.name, "type": str(v.type)})
        return value_index[v.name]

    for v in graph.inputs:
        lines, w, h = _box(["input", v.name, shape_text(v.type)])
        leaf = Leaf(f"n{len(leaves)}", "input", v.name, "input", "io", None, lines, w, h, 0,
                    {"outputs": [_value_ref(v)], "loc": None})
        leaves.append(leaf)
        producer[v.name] = leaf.id
        value_id(v)

    groups: dict[str, Group] = {}
    group_list: list[Group] = []
    roots: list[str] = []

    def group_of(path: str) -> Group:
        if path in groups:
            return groups[path]
        parent_path, _, label = path.rpartition(".")
        parent = group_of(parent_path) if parent_path else None
        g = Group(f"g{len(group_list)}", path, label, parent.id if parent else None,
                  (parent.depth + 1) if parent else 1)
        groups[path] = g
        group_list.append(g)
        (parent.children if parent else roots).append(g.id)
        return g

    consumers = graph.consumers()
    outputs_of: dict[str, list[str]] = {}
    for out_name, v in graph.outputs.items():
        outputs_of.setdefault(v.name, []).append(out_name)

    for leaf in leaves:  # the inputs come first at the top level
        roots.append(leaf.id)
    for node in graph.nodes:
        path = node.name.rpartition(".")[0]
        parent = group_of(path) if path else None
        counted = 0
        params_info = []
        for role, pv in node.params.items():
            p = graph.params.get(pv.name)
            if p is not None and p.counted:
                counted += pv.type.numel()
            params_info.append({"role": role, "name": pv.name, "type": str(pv.type),
                                "kind": p.role if p is not None else "?",
                                "init": str(p.init) if p is not None and p.init is not None else None,
                                "elements": pv.type.numel()})
        short = node.name.rpartition(".")[2] or node.name
        label = [_brief(node), short, shape_text(node.output.type)]
        if counted:
            label.append(f"{count_text(counted)} params")
        lines, w, h = _box(label)
        attrs = [[k, _attr_text(v)] for k, v in _attr_items(node) if k != "epilogue"]
        fused = None
        if node.attrs.get("epilogue"):
            try:
                fused = describe(node.attrs, node.inputs)
            except Exception:  # noqa: BLE001 - a malformed epilogue is shown raw, among the attributes
                attrs.append(["epilogue", _attr_text(node.attrs["epilogue"])])
        if node.loc is not None:
            loc = str(node.loc)
            where = f"in the body of the block applied as {path}" if path else None
        else:
            loc = None
            where = f"imported from {source}: ONNX models carry no source locations" if is_onnx else None
        used_by = [c.name for c in consumers.get(node.output.name, [])]
        info = {"attrs": attrs, "fused": fused, "inputs": [_value_ref(v) for v in node.inputs],
                "outputs": [_value_ref(node.output)], "used_by": used_by,
                "graph_outputs": outputs_of.get(node.output.name, []), "params": params_info, "loc": loc,
                "loc_note": where}
        leaf = Leaf(f"n{len(leaves)}", "node", node.name, node.op, _CATEGORY.get(node.op, "other"),
                    parent.id if parent else None, lines, w, h, counted, info)
        leaves.append(leaf)
        (parent.children if parent else roots).append(leaf.id)
        producer[node.output.name] = leaf.id
        value_id(node.output)

    edges: list[Edge] = []
    for node, leaf in zip(graph.nodes, leaves[len(graph.inputs):]):
        seen: set[str] = set()
        for v in node.inputs:
            src = producer.get(v.name)
            if src is not None and v.name not in seen:  # add(x, x) draws one edge
                seen.add(v.name)
                edges.append(Edge(src, leaf.id, value_id(v)))
    for out_name, v in graph.outputs.items():
        lines, w, h = _box(["output", out_name, shape_text(v.type)])
        leaf = Leaf(f"n{len(leaves)}", "output", out_name, "output", "io", None, lines, w, h, 0,
                    {"inputs": [_value_ref(v)], "loc": None})
        leaves.append(leaf)
        roots.append(leaf.id)
        if v.name in producer:
            edges.append(Edge(producer[v.name], leaf.id, value_id(v)))

    _summarize_groups(group_list, leaves, edges, values)
    totals = {"nodes": len(graph.nodes), "groups": len(group_list), "params": graph.num_params(),
              "inputs": len(graph.inputs), "outputs": len(graph.outputs)}
    return VizModel(graph.name, source, opt_level, leaves, group_list, roots, edges, values, totals)


def _summarize_groups(groups: list[Group], leaves: list[Leaf], edges: list[Edge],
                      values: list[dict[str, str]]) -> None:
    """Layers, parameters, outgoing shapes and labels of every group."""
    by_id = {g.id: g for g in groups}
    ancestors: dict[str, list[str]] = {}  # leaf id -> ids of the groups that hold it
    for leaf in leaves:
        chain, gid = [], leaf.group
        while gid is not None:
            chain.append(gid)
            gid = by_id[gid].parent
        ancestors[leaf.id] = chain
        for gid in chain:
            by_id[gid].layers += 1
            by_id[gid].params += leaf.params
    leaving: dict[str, list[int]] = {g.id: [] for g in groups}
    for e in edges:
        inside_dst = set(ancestors[e.dst])
        for gid in ancestors[e.src]:
            if gid not in inside_dst and e.value not in leaving[gid]:
                leaving[gid].append(e.value)
    last_leaf = {gid: leaf for leaf in leaves for gid in ancestors[leaf.id]}
    for g in groups:
        vals = leaving[g.id]
        if vals:
            g.shapes = [_type_shape(values[i]["type"]) for i in vals]
        else:  # nothing leaves it (dead code): its last layer's shape
            g.shapes = [_type_shape(last_leaf[g.id].info["outputs"][0]["type"])]
        shapes = g.shapes[0] + (f" +{len(g.shapes) - 1}" if len(g.shapes) > 1 else "")
        layers = f"{g.layers} layer{'s' if g.layers != 1 else ''}"
        g.lines, g.w, g.h = _box([f"▸ {g.label}", f"{layers} · {count_text(g.params)} params", shapes], extra_w=6)
        g.header = f"▾ {g.label} · {layers} · {count_text(g.params)} params"
        g.header = _cut(g.header, 2 * MAX_CHARS)
        g.header_w = math.ceil(len(g.header) * CHAR_W) + 2 * PAD_X


def _type_shape(type_text: str) -> str:
    """`f32[N, 64, 56, 56]` -> `[N, 64, 56, 56]`."""
    i = type_text.find("[")
    return type_text[i:] if i >= 0 else type_text
