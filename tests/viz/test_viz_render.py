"""SVG and HTML output: every zoo spec renders, the page's structure (its SVG, its embedded model), optimized
graphs, ONNX models, self-containment and the escaping of untrusted names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import onnx
import pytest
from onnx import TensorProto, helper

from graphconv.errors import SourceLoc
from graphconv.ir.graph import Graph, TensorType
from graphconv.network import Network
from graphconv.onnx.export import export_onnx
from graphconv.onnx.importer import import_onnx
from graphconv.ops.build import add_op
from graphconv.passes.manager import optimize
from graphconv.viz import build_model, render_html, render_svg
from graphconv.viz.html import json_for_script

from viz_helpers import ROOT, SPECS, SVG_NS, page_parts, zoo


@pytest.mark.parametrize("spec", SPECS)
def test_every_zoo_spec_renders(spec):
    m = build_model(zoo(spec), source=f"specs/{spec}")
    svg = ET.fromstring(render_svg(m).split("\n", 1)[1])  # after the XML declaration
    drawn = svg.findall(f".//{SVG_NS}g[@data-node]")
    assert len(drawn) == len(m.leaves)  # all groups open: every leaf drawn
    assert len(svg.findall(f".//{SVG_NS}g[@class='gc-header d{1}']")) == sum(g.depth == 1 for g in m.groups)
    page, data = page_parts(render_html(m))
    assert len(data["leaves"]) == len(m.leaves) and len(data["groups"]) == len(m.groups)
    shown = page.findall(f".//{SVG_NS}g[@data-node]") + page.findall(f".//{SVG_NS}g[@class='gc-node gc-collapsed']")
    top = [g for g in m.groups if g.depth == 1]
    assert len(shown) == len(m.roots) - len(top) + sum(len(g.children) for g in top)


def _by_name(data: dict) -> dict:
    return {x["name"]: x for x in data["leaves"] if x["kind"] == "node"}


def test_resnet50_page():
    g = zoo("resnet50.gc")
    html = render_html(build_model(g, source="specs/resnet50.gc"))
    svg, data = page_parts(html)
    assert data["view"] == {"depth": 1} and data["name"] == "resnet50"
    leaves = _by_name(data)
    assert list(leaves) == [n.name for n in g.nodes]
    for n in g.nodes:
        x = leaves[n.name]
        assert x["op"] == n.op
        assert x["info"]["outputs"][0]["type"] == str(n.output.type)
        assert x["lines"][2] == "[" + ", ".join(map(str, n.output.type.shape)) + "]"
        assert x["params"] == sum(v.type.numel() for v in n.params.values() if g.params[v.name].counted)
        assert {k for k, _ in x["info"]["attrs"]} == set(n.attrs)
        assert x["info"]["loc"] == str(n.loc) and re.search(r"specs/resnet50\.gc:\d+:\d+$", x["info"]["loc"])
        assert [v["name"] for v in x["info"]["inputs"]] == [v.name for v in n.inputs]
    # groups nest: layer1 > layer1.bottleneck0 > layer1.bottleneck0.conv1
    groups = {grp["name"]: grp for grp in data["groups"]}
    assert groups["layer1.bottleneck0"]["parent"] == groups["layer1"]["id"]
    assert leaves["layer1.bottleneck0.conv1"]["group"] == groups["layer1.bottleneck0"]["id"]
    assert leaves["layer1.bottleneck0.conv1"]["id"] in groups["layer1.bottleneck0"]["children"]
    # edges are the graph's data inputs
    ids = {x["id"]: x["name"] for x in data["leaves"]}
    edges = {(ids[s], ids[d]) for s, d, _ in data["edges"]}
    assert edges == {(v.name, n.name) for n in g.nodes for v in n.inputs} | {(v.name, "logits") for v in
                                                                              g.outputs.values()}
    # the first view: stages open, blocks closed
    assert {h.get("data-group") for h in svg.iter(f"{SVG_NS}g") if h.get("class", "").startswith("gc-header ")} \
        == {groups[f"layer{i}"]["id"] for i in range(1, 5)}
    closed = [e for e in svg.iter(f"{SVG_NS}g") if e.get("class") == "gc-node gc-collapsed"]
    assert len(closed) == 3 + 4 + 6 + 3
    texts = ["".join(t.itertext()) for t in closed[0].iter(f"{SVG_NS}text")]
    assert texts == ["▸ bottleneck012 layers · 75,008 params[N, 256, 56, 56]"]


def test_googlenet_page_with_aux_classifiers():
    g = zoo("googlenet.gc", aux_logits=True)
    svg, data = page_parts(render_html(build_model(g), depth=2))
    assert data["view"]["depth"] == 2
    assert set(_by_name(data)) == {n.name for n in g.nodes}
    outs = [x["name"] for x in data["leaves"] if x["kind"] == "output"]
    assert outs == ["logits", "aux1", "aux2"]
    groups = {grp["name"]: grp for grp in data["groups"]}
    assert groups["inception3a.branch2_2"]["parent"] == groups["inception3a"]["id"]
    assert groups["aux1"]["shapes"] == ["[N, 1000]"]
    assert len([e for e in svg.iter(f"{SVG_NS}g") if e.get("data-node")]) == len(g.nodes) + 1 + 3


def test_depth_of_the_static_svg():
    m = build_model(zoo("resnet50.gc"))
    full = render_svg(m)
    one = render_svg(m, expanded=m.groups_to_depth(1))
    assert full.count("data-node=") == len(m.leaves)
    assert one.count('class="gc-node gc-collapsed"') == 16 and one.count("data-node=") == 9
    assert render_svg(m, expanded=set()).count('class="gc-node gc-collapsed"') == 4


def test_optimized_graph_shows_fused_nodes():
    g = zoo("resnet18.gc")
    net, _ = optimize(Network(g, seed=0), 2)
    m = build_model(net.graph, opt_level=2)
    assert len(m.nodes) < len(g.nodes)
    conv2 = next(x for x in m.nodes if x.name == "layer1.basic0.conv2")
    assert conv2.lines[0] == "conv2d 3×3 + add + relu"
    assert conv2.info["fused"] == "add(%max_pool2d0), relu"  # the block's input, the shortcut
    html = render_html(m)
    assert "conv2d 3×3 + add + relu" in html and "-O2" in html
    _, data = page_parts(html)
    assert data["opt_level"] == 2


def test_onnx_model(tmp_path):
    path = tmp_path / "resnet18.onnx"
    export_onnx(zoo("resnet18.gc"), path)
    graph, _ = import_onnx(str(path))
    m = build_model(graph, source=str(path))
    assert len(m.nodes) == len(graph.nodes) and not m.groups  # the importer's names have no dots
    node = m.nodes[0]
    assert node.info["loc"] is None and "ONNX" in node.info["loc_note"]
    svg, data = page_parts(render_html(m))
    assert len(data["leaves"]) == len(graph.nodes) + len(graph.inputs) + len(graph.outputs)
    ET.fromstring(render_svg(m).split("\n", 1)[1])


def _evil_graph() -> Graph:
    """Names and attribute text no spec could have, as a Graph built in Python (or a future importer) may."""
    g = Graph("net</script><script>alert(1)</script>")
    x = g.add_input('img"&\'<b>', TensorType(("N", 3, 8, 8)))
    h = add_op(g, "<script>alert(1)</script>", "relu", [x], loc=SourceLoc("a<b>.gc", 1, 1))
    h = add_op(g, "blk.</script><!--.x", "relu", [h])
    v = g.add_node('"&\'', "relu", [h], {"note": "</script><img src=x onerror=alert(1)>"}, h.type)
    g.set_output("out</title>", v.output)
    return g


EVIL = ["<script>alert(1)</script>", '"&\'', "</script><!--", "<img src=x", "out</title>", "<b>"]


def test_names_are_escaped_in_html_and_svg():
    m = build_model(_evil_graph(), source="<evil>.gc")
    html = render_html(m, depth=None)
    for text in EVIL:
        assert text not in html, text
    assert html.count("<script") == 2 and html.count("</script>") == 2  # the JSON and the viewer, nothing else
    svg, data = page_parts(html)
    names = {x["name"] for x in data["leaves"]}
    assert {"<script>alert(1)</script>", '"&\'', 'img"&\'<b>', "out</title>"} <= names
    assert data["name"] == "net</script><script>alert(1)</script>"
    drawn = {"".join(t.itertext()) for t in svg.iter(f"{SVG_NS}tspan")}
    assert "<script>alert(1)</script>" in drawn and 'img"&\'<b>' in drawn
    standalone = render_svg(m)
    for text in EVIL:
        assert text not in standalone, text
    ET.fromstring(standalone.split("\n", 1)[1])


def test_onnx_node_names_are_escaped(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="<script>alert(1)</script>"),
             helper.make_node("Relu", ["a"], ["y"], name='"&\'')]
    graph = helper.make_graph(nodes, "<script>alert(2)</script>",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "evil<script>.onnx"
    onnx.save_model(model, path)
    from graphconv import cli

    out = tmp_path / "evil.html"
    assert cli.main(["viz", str(path), "-o", str(out)]) == 0
    html = out.read_text()
    for text in EVIL + ["<script>alert(2)</script>", "evil<script>"]:
        assert text not in html, text
    assert html.count("<script") == 2
    page_parts(html)


def test_json_for_script():
    text = json_for_script({"a": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}


def test_the_page_is_self_contained():
    html = render_html(build_model(zoo("resnet50.gc")))
    assert re.findall(r"https?://[^\s\"')]*", html) == ["http://www.w3.org/2000/svg"] * 2  # namespaces, not loads
    markup = re.sub(r"<script>.*?</script>", "", html, flags=re.S)
    assert not re.search(r"""<[^>]*\s(src|href)\s*=""", markup)  # no loads by the markup
    assert re.findall(r"\.(?:src|href)\s*=\s*([^;]*)", html) == ['"#"']  # nor by the scripts
    assert not re.search(r"fetch\(|XMLHttpRequest|import\(|WebSocket|sendBeacon", html)
    assert "@import" not in html and "@font-face" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert set(re.findall(r"url\(([^)]*)\)", html)) == {"#gc-arrow"}  # the arrow head, in the page


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(c) for c in ("chromium", "chromium-browser")),
                    reason="no headless chromium")
def test_in_a_real_browser(tmp_path):
    """tools/screenshot_viz.py: screenshots, the script's drawing in the DOM, real clicks opening and closing."""
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "screenshot_viz.py"), str(ROOT / "specs/resnet50.gc"),
                        "-o", str(tmp_path), "--click", "layer1.bottleneck0"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "resnet50.png").stat().st_size > 10_000
    assert (tmp_path / "resnet50-layer1.bottleneck0-open.png").exists()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_dot_escapes_names():
    from graphconv.viz.dot import render_dot_svg

    m = build_model(_evil_graph())
    text = render_dot_svg(m, m.groups_to_depth(None))
    svg = ET.fromstring(text[text.index("<svg"):])
    for t in EVIL:
        assert t not in text, t
    drawn = {"".join(t.itertext()) for t in svg.iter(f"{SVG_NS}text")}
    assert "<script>alert(1)</script>" in drawn
