"""The display model: groups from dotted names, leaves with their details, edges along the dataflow."""

from __future__ import annotations

from graphconv.errors import SourceLoc
from graphconv.ir.graph import Graph, TensorType
from graphconv.ops.build import add_op
from graphconv.viz.model import CHAR_W, Group, build_model, count_text

from viz_helpers import zoo


def _group(model, name: str) -> Group:
    return next(g for g in model.groups if g.name == name)


def _leaf(model, name: str):
    return next(x for x in model.leaves if x.name == name and x.kind == "node")


def test_resnet50_groups_nest_stage_block_layer():
    g = zoo("resnet50.gc")
    m = build_model(g, source="specs/resnet50.gc")
    stage, block = _group(m, "layer1"), _group(m, "layer1.bottleneck0")
    conv = _leaf(m, "layer1.bottleneck0.conv1")
    assert (stage.depth, stage.parent) == (1, None)
    assert (block.depth, block.parent) == (2, stage.id) and block.id in stage.children
    assert conv.group == block.id and conv.id in block.children
    assert [_group(m, f"layer{i}").id in m.roots for i in range(1, 5)] == [True] * 4
    assert [m.by_id[c].label for c in stage.children] == ["bottleneck0", "bottleneck1", "bottleneck2"]
    assert m.max_depth() == 2 and len(m.groups) == 4 + 3 + 4 + 6 + 3


def test_group_totals_and_labels():
    g = zoo("resnet50.gc")
    m = build_model(g)
    block = _group(m, "layer1.bottleneck0")
    assert block.layers == 12
    assert block.params == sum(x.params for x in m.leaves if x.group == block.id) == 75_008
    assert block.shapes == ["[N, 256, 56, 56]"]
    assert block.lines == ["▸ bottleneck0", "12 layers · 75,008 params", "[N, 256, 56, 56]"]
    assert block.header.startswith("▾ bottleneck0 · 12 layers")
    top = [m.by_id[r] for r in m.roots]
    assert sum(x.params for x in top) == g.num_params() == m.totals["params"] == 25_557_032


def test_every_node_is_a_leaf_with_op_shape_params_attrs_and_loc():
    g = zoo("resnet50.gc")
    m = build_model(g, source="specs/resnet50.gc")
    assert [x.name for x in m.nodes] == [n.name for n in g.nodes]
    for node, leaf in zip(g.nodes, m.nodes):
        assert leaf.op == node.op
        assert leaf.info["outputs"][0]["type"] == str(node.output.type)
        assert leaf.info["loc"] == str(node.loc)
        assert sorted(k for k, _ in leaf.info["attrs"]) == sorted(k for k in node.attrs if k != "epilogue")
        assert [p["name"] for p in leaf.info["params"]] == [v.name for v in node.params.values()]
    conv = _leaf(m, "layer1.bottleneck0.conv1")
    assert conv.lines == ["conv2d 1×1", "conv1", "[N, 64, 56, 56]", "4,096 params"]
    assert conv.params == 4096 and conv.cat == "conv"
    assert conv.info["loc_note"] == "in the body of the block applied as layer1.bottleneck0"
    assert dict(conv.info["attrs"])["kernel"] == "(1, 1)"
    assert conv.info["params"][0] == {"role": "weight", "name": "layer1.bottleneck0.conv1.weight",
                                      "type": "f32[64, 64, 1, 1]", "kind": "trainable", "init": "he_normal",
                                      "elements": 4096}
    assert conv.info["used_by"] == ["layer1.bottleneck0.bn1"]
    stem = _leaf(m, "conv1")
    assert stem.lines[0] == "conv2d 7×7/2" and stem.group is None and stem.info["loc_note"] is None


def test_edges_follow_the_graph_inputs():
    g = zoo("googlenet.gc", aux_logits=True)
    m = build_model(g)
    by_name = {x.name: x.id for x in m.leaves if x.kind != "output"}
    expected = set()
    for n in g.nodes:
        for v in n.inputs:
            expected.add((by_name[v.name], by_name[n.name], v.name))
    got = {(e.src, e.dst, m.values[e.value]["name"]) for e in m.edges if m.by_id[e.dst].kind == "node"}
    assert got == expected
    outs = [x for x in m.leaves if x.kind == "output"]
    assert [x.name for x in outs] == list(g.outputs) == ["logits", "aux1", "aux2"]
    for x in outs:
        (e,) = [e for e in m.edges if e.dst == x.id]
        assert m.values[e.value]["name"] == g.outputs[x.name].name


def test_sizes_fit_the_text():
    m = build_model(zoo("googlenet.gc"))
    for x in [*m.leaves, *m.groups]:
        assert x.w >= max(len(s) for s in x.lines) * CHAR_W + 16
        assert x.h == len(x.lines) * 14 + 10


def test_names_without_dots_make_no_groups_and_dotted_names_any_depth():
    g = Graph("flat")
    x = g.add_input("x", TensorType(("N", 4)))
    h = add_op(g, "a.b.c.d", "relu", [x], loc=SourceLoc("n.gc", 1, 1))
    h = add_op(g, "e", "relu", [h])
    g.set_output("y", h)
    m = build_model(g)
    assert [grp.name for grp in m.groups] == ["a", "a.b", "a.b.c"]
    assert [grp.depth for grp in m.groups] == [1, 2, 3]
    assert m.groups_to_depth(2) == {m.groups[0].id, m.groups[1].id}
    assert m.groups_to_depth(None) == {grp.id for grp in m.groups}
    assert [m.by_id[r].name for r in m.roots] == ["x", "a", "e", "y"]


def test_count_text():
    assert [count_text(n) for n in (0, 9408, 99_999, 147_456, 2_359_296)] == \
        ["0", "9,408", "99,999", "147.5k", "2.36M"]
