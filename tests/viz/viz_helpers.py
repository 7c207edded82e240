"""Shared helpers of the graphconv viz tests: zoo graphs loaded once, the pieces of a rendered HTML page, and the
invariants every layout must keep."""

from __future__ import annotations

import functools
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from graphconv.ir.graph import Graph
from graphconv.spec import load_graph
from graphconv.viz.layout import Layout
from graphconv.viz.model import Group, VizModel

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(p.name for p in (ROOT / "specs").glob("*.gc"))
SVG_NS = "{http://www.w3.org/2000/svg}"


@functools.lru_cache(maxsize=None)
def _zoo(name: str, params: tuple) -> Graph:
    return load_graph(str(ROOT / "specs" / name), dict(params) or None)


def zoo(name: str, **params) -> Graph:
    """A zoo spec's graph, loaded once per test session (do not modify it)."""
    return _zoo(name, tuple(sorted(params.items())))


def page_parts(html: str) -> tuple[ET.Element, dict]:
    """The first-view <svg> element (parsed as XML) and the embedded model JSON of a viewer page."""
    svg = re.search(r"<svg .*?</svg>", html, re.S)
    data = re.search(r'<script type="application/json" id="gc-data">(.*?)</script>', html, re.S)
    assert svg and data
    return ET.fromstring(svg.group(0)), json.loads(data.group(1))


def overlaps(a, b) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def inside(inner, outer) -> bool:
    eps = 0.02
    return (inner.x >= outer.x - eps and inner.y >= outer.y - eps and inner.x + inner.w <= outer.x + outer.w + eps
            and inner.y + inner.h <= outer.y + outer.h + eps)


def check_layout(model: VizModel, lay: Layout) -> None:
    """The invariants: boxes do not overlap, sibling groups do not overlap, everything sits inside its group,
    every edge runs downwards (from a lower rank to a higher one in the cluster where it is ranked)."""
    boxes = list(lay.boxes.items())
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            assert not overlaps(ba, bb), f"{a} and {b} overlap: {ba} {bb}"
        for gid, gb in lay.clusters.items():
            parent = model.by_id[a].group if a in model.by_id and not isinstance(model.by_id[a], Group) \
                else model.by_id[a].parent
            chain = []
            while parent is not None:
                chain.append(parent)
                parent = model.by_id[parent].parent
            if gid in chain:
                assert inside(ba, gb), f"{a} is not inside its group {gid}"
            else:
                assert not overlaps(ba, gb), f"{a} overlaps the group {gid} it is not in"
    assert lay.back_edges == 0

    def visible(leaf: str) -> str:
        chain, gid = [], model.by_id[leaf].group
        while gid is not None:
            chain.append(gid)
            gid = model.by_id[gid].parent
        for g in reversed(chain):
            if g not in lay.clusters:
                return g
        return leaf

    def box(item: str):
        return lay.boxes.get(item) or lay.clusters[item]

    def chain(item: str) -> list[str]:
        x = model.by_id[item]
        out, gid = [item], (x.parent if isinstance(x, Group) else x.group)
        while gid is not None:
            out.append(gid)
            gid = model.by_id[gid].parent
        return out[::-1]

    for e in model.edges:
        s, d = visible(e.src), visible(e.dst)
        if s == d:
            continue
        name = model.values[e.value]["name"]
        assert box(s).bottom < box(d).y, f"edge {name} ({s} -> {d}) does not go down"
        ps, pd = chain(s), chain(d)
        k = 0
        while ps[k] == pd[k]:
            k += 1
        (cs, rs), (cd, rd) = lay.ranks[ps[k]], lay.ranks[pd[k]]
        assert cs == cd and rs < rd, f"edge {name}: rank {rs} -> {rd}"
    for r in lay.routes:
        for (x0, y0), (x1, y1) in zip(r.points, r.points[1:]):
            assert y1 >= y0, f"route of {model.values[r.value]['name']} goes up"
