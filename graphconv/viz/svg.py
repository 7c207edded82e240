"""The drawing as SVG: expanded groups as labelled nested rectangles, boxes for leaves and collapsed groups, edges as
smooth paths from the bottom of one box to the top of the next.

`render_svg` is what `graphconv viz -o net.svg` writes (with its stylesheet inside) and what the HTML shows before
its script runs. assets/viewer.js draws the same elements with the same classes when the viewer re-lays out.
Every piece of text from the graph is escaped: node names come from specs and ONNX models and are untrusted.
"""

from __future__ import annotations

from html import escape
from importlib import resources
from typing import Iterable

from .layout import HEADER, Layout, layout
from .model import LINE_H, PAD_X, PAD_Y, Group, Leaf, VizModel

__all__ = ["render_svg", "svg_element", "asset", "path_data"]

STACK = 3  # offset of the second outline that marks a collapsed group


def asset(name: str) -> str:
    """The text of a file in graphconv/viz/assets (the viewer's stylesheets and scripts)."""
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _a(v: object) -> str:
    return escape(str(v), quote=True)


def _n(v: float) -> str:
    """A coordinate without a useless fraction."""
    return f"{v:.2f}".rstrip("0").rstrip(".")


def path_data(points: list[tuple[float, float]]) -> str:
    """SVG path data through `points`: straight where x stays, else a curve leaving and arriving vertically."""
    pts = [p for i, p in enumerate(points) if i == 0 or p != points[i - 1]]
    d = [f"M{_n(pts[0][0])},{_n(pts[0][1])}"]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 == x1 or y1 <= y0:
            d.append(f"L{_n(x1)},{_n(y1)}")
        else:
            m = (y1 - y0) / 2
            d.append(f"C{_n(x0)},{_n(y0 + m)} {_n(x1)},{_n(y1 - m)} {_n(x1)},{_n(y1)}")
    return "".join(d)


def _text(lines: list[str], x0: float) -> str:
    spans = []
    for i, line in enumerate(lines):
        cls = ' class="t0"' if i == 0 else ""
        spans.append(f'<tspan x="{_n(x0)}" y="{_n(PAD_Y + LINE_H * (i + 1) - 3.5)}"{cls}>{_a(line)}</tspan>')
    return f"<text>{''.join(spans)}</text>"


def _leaf_title(leaf: Leaf) -> str:
    info = leaf.info
    parts = [f"{leaf.name} ({leaf.op})"]
    for v in info.get("outputs", []) if leaf.kind != "output" else info.get("inputs", []):
        parts.append(f"{v['name']}: {v['type']}")
    if info.get("fused"):
        parts.append(f"fused: {info['fused']}")
    parts += [f"{k}={v}" for k, v in info.get("attrs", [])]
    parts += [f"{p['role']}: {p['type']} ({p['kind']})" for p in info.get("params", [])]
    if info.get("loc"):
        parts.append(f"at {info['loc']}")
    return "\n".join(parts)


def _group_title(g: Group) -> str:
    return f"{g.name}: {g.layers} layers, {g.params:,} params, out {', '.join(g.shapes)}"


def svg_element(model: VizModel, lay: Layout, *, titles: bool = True) -> str:
    """The <svg> element of a laid-out model, without a stylesheet (the page or `render_svg` brings it)."""
    w, h = lay.width, lay.height
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="gc-graph" viewBox="0 0 {_n(w)} {_n(h)}" '
           f'width="{_n(w)}" height="{_n(h)}">',
           '<defs><marker id="gc-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" '
           'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,1 L10,5 L0,9 z"/></marker></defs>']
    out.append('<g class="gc-clusters">')
    for gid, b in lay.clusters.items():
        g = model.by_id[gid]
        out.append(f'<rect class="gc-cluster d{g.depth % 4}" data-group="{gid}" x="{_n(b.x)}" y="{_n(b.y)}" '
                   f'width="{_n(b.w)}" height="{_n(b.h)}" rx="6"/>')
    out.append('</g><g class="gc-edges">')
    for r in lay.routes:
        v = model.values[r.value]
        marker = ' marker-end="url(#gc-arrow)"' if r.arrow else ""
        out.append(f'<path class="gc-edge" data-value="{r.value}" d="{path_data(r.points)}"{marker}>'
                   f'<title>{_a(v["name"])}: {_a(v["type"])}</title></path>')
    out.append('</g><g class="gc-items">')
    for item, b in lay.boxes.items():
        x = model.by_id[item]
        pos = f'transform="translate({_n(b.x)},{_n(b.y)})"'
        if isinstance(x, Group):
            title = f"<title>{_a(_group_title(x))}</title>" if titles else ""
            out.append(f'<g class="gc-node gc-collapsed" data-group="{item}" {pos}>{title}'
                       f'<rect class="gc-stack" x="{STACK}" y="{STACK}" width="{_n(b.w - STACK)}" '
                       f'height="{_n(b.h - STACK)}" rx="4"/>'
                       f'<rect width="{_n(b.w - STACK)}" height="{_n(b.h - STACK)}" rx="4"/>'
                       f'{_text(x.lines, PAD_X)}</g>')
        else:
            title = f"<title>{_a(_leaf_title(x))}</title>" if titles else ""
            out.append(f'<g class="gc-node cat-{x.cat}" data-node="{item}" {pos}>{title}'
                       f'<rect width="{_n(b.w)}" height="{_n(b.h)}" rx="4"/>{_text(x.lines, PAD_X)}</g>')
    out.append('</g><g class="gc-headers">')
    for gid, b in lay.clusters.items():
        g = model.by_id[gid]
        title = f"<title>{_a(_group_title(g))}</title>" if titles else ""
        out.append(f'<g class="gc-header d{g.depth % 4}" data-group="{gid}" '
                   f'transform="translate({_n(b.x)},{_n(b.y)})">{title}'
                   f'<rect width="{_n(b.w)}" height="{HEADER}" rx="6"/>'
                   f'<text x="{PAD_X}" y="15">{_a(g.header)}</text></g>')
    out.append("</g></svg>")
    return "\n".join(out)


def render_svg(model: VizModel, *, expanded: Iterable[str] | None = None) -> str:
    """A standalone SVG document of `model` with the groups in `expanded` open (default: all)."""
    chosen = model.groups_to_depth(None) if expanded is None else set(expanded)
    lay = layout(model, chosen)
    svg = svg_element(model, lay)
    head, rest = svg.split("\n", 1)
    style = f'<style><![CDATA[\n{asset("graph.css")}]]></style>'
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}\n{style}\n{rest}\n'
