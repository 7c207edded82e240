"""The layered layout: no overlaps, edges downwards, groups around their contents, determinism, and the browser's
twin (assets/layout.js, run with node.js where it is installed) giving the same numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from graphconv.ir.graph import Graph, TensorType
from graphconv.ops.build import add_op
from graphconv.viz.layout import layout
from graphconv.viz.model import build_model

from viz_helpers import ROOT, check_layout, overlaps, zoo

CASES = [("resnet50.gc", {}), ("googlenet.gc", {"aux_logits": True}), ("mobilenet_v2.gc", {}),
         ("lenet5.gc", {})]


@pytest.mark.parametrize("spec,params", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("depth", [0, 1, None], ids=["closed", "depth1", "open"])
def test_layout_invariants(spec, params, depth):
    m = build_model(zoo(spec, **params))
    check_layout(m, layout(m, m.groups_to_depth(depth)))


def test_visible_items_depend_on_the_expanded_groups():
    m = build_model(zoo("resnet50.gc"))
    layer1 = next(g for g in m.groups if g.name == "layer1")
    block = m.by_id[layer1.children[0]]
    lay = layout(m, {layer1.id})
    assert layer1.id in lay.clusters and block.id in lay.boxes
    assert not any(m.by_id[x].group == block.id for x in lay.boxes if x.startswith("n"))
    # a group inside a closed one stays hidden, whatever `expanded` says
    lay = layout(m, {block.id})
    assert layer1.id in lay.boxes and block.id not in lay.clusters and block.id not in lay.boxes
    closed = layout(m, set())
    assert set(closed.boxes) == set(m.roots) and not closed.clusters


def test_chains_stay_straight():
    """A ResNet is one column: stages and blocks line up (entry above exit), nothing drifts sideways."""
    m = build_model(zoo("resnet152.gc"))
    lay = layout(m, m.groups_to_depth(None))
    assert lay.width < 450
    xs = {round(b.x + b.w / 2) for k, b in lay.boxes.items() if m.by_id[k].name.endswith("relu2")}
    assert max(xs) - min(xs) <= 1


def test_deterministic():
    m = build_model(zoo("googlenet.gc", aux_logits=True))
    a, b = layout(m, m.groups_to_depth(1)), layout(m, m.groups_to_depth(1))
    assert a == b


def test_concat_inputs_arrive_side_by_side():
    m = build_model(zoo("googlenet.gc"))
    lay = layout(m, m.groups_to_depth(1))
    concat = next(x.id for x in m.leaves if x.name == "inception3a.concat0")
    ends = sorted(r.points[-1][0] for r in lay.routes if r.dst == concat)
    assert len(ends) == 4 and all(b - a > 5 for a, b in zip(ends, ends[1:]))


def test_backward_edges_are_drawn_not_ranked():
    """Groups that are not contiguous (possible after optimization) can make a cycle between boxes; the layout
    must still finish, rank the forward edges and draw the others."""
    g = Graph("cycle")
    x = g.add_input("x", TensorType(("N", 4)))
    a = add_op(g, "blk.a", "relu", [x])
    b = add_op(g, "b", "relu", [a])
    c = add_op(g, "blk.c", "relu", [b])
    g.set_output("y", c)
    m = build_model(g)
    for chosen in (set(), m.groups_to_depth(None)):  # blk -> b -> blk, closed or open
        lay = layout(m, chosen)
        assert lay.back_edges == 1
        assert len([r for r in lay.routes if r.arrow]) == 4  # every edge drawn, ending in an arrow
        boxes = list(lay.boxes.values())
        assert not any(overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_big_graphs_are_fast():
    for spec, params in (("resnet152.gc", {}), ("googlenet.gc", {"aux_logits": True})):
        m = build_model(zoo(spec, **params))
        t0 = time.perf_counter()
        layout(m, m.groups_to_depth(None))
        layout(m, m.groups_to_depth(1))
        assert time.perf_counter() - t0 < 1.0, spec


RUNNER = """
const L = require(process.argv[1]);
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(cases.map(c => L.layout(c.model, new Set(c.expanded)))));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js is not installed")
def test_the_browser_layout_is_the_same():
    cases, expected = [], []
    for spec, params in CASES:
        m = build_model(zoo(spec, **params))
        for depth in (0, 1, None):
            chosen = sorted(m.groups_to_depth(depth))
            cases.append({"model": m.to_json(), "expanded": chosen})
            expected.append(layout(m, chosen))
    # and one with a closed group inside an open one
    m = build_model(zoo("resnet50.gc"))
    chosen = sorted(g.id for g in m.groups if g.name in ("layer1", "layer3", "layer3.bottleneck2"))
    cases.append({"model": m.to_json(), "expanded": chosen})
    expected.append(layout(m, chosen))
    js = ROOT / "graphconv" / "viz" / "assets" / "layout.js"
    r = subprocess.run(["node", "-e", RUNNER, str(js)], input=json.dumps(cases), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    for py, got in zip(expected, json.loads(r.stdout)):
        assert (got["width"], got["height"]) == (py.width, py.height)
        for kind in ("boxes", "clusters"):
            ours = getattr(py, kind)
            assert set(got[kind]) == set(ours)
            for k, b in ours.items():
                jb = got[kind][k]
                assert [jb["x"], jb["y"], jb["w"], jb["h"]] == pytest.approx([b.x, b.y, b.w, b.h], abs=0.011), k
        assert [(r["value"], r["arrow"], r["src"], r["dst"]) for r in got["routes"]] == \
            [(r.value, r.arrow, r.src, r.dst) for r in py.routes]
        for jr, pr in zip(got["routes"], py.routes):
            assert [c for p in jr["points"] for c in p] == pytest.approx([c for p in pr.points for c in p],
                                                                            abs=0.011)
        assert got["back_edges"] == py.back_edges


def test_flat_graphs_do_not_drift():
    """Without groups (an imported ONNX model) a ResNet is one long column of residual blocks: each block's
    shortcut must not push the next block sideways."""
    def flat(spec: str):
        g = zoo(spec)
        m = build_model(g)
        for leaf in m.leaves:
            leaf.group = None
        m.roots = [leaf.id for leaf in m.leaves]
        m.groups = []
        return m, layout(m, set())

    (_, lay50), (m152, lay152) = flat("resnet50.gc"), flat("resnet152.gc")
    assert lay152.width == lay50.width < 700
    check_layout(m152, lay152)
