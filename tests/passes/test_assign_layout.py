"""assign_layout: which nodes run in NCHW16c, where the conversions go, the packed weights, and numerics."""

from __future__ import annotations

import numpy as np

from graphconv.passes.assign_layout import AssignLayout, conversions
from graphconv.passes.base import prune_params

from .helpers import add_op, assert_same_function, graph_with_input, ops, program, run_pass

LAYOUT = AssignLayout()


def _resnet_like():
    g, x = graph_with_input(shape=(3, 8, 8))
    stem = add_op(g, "stem", "conv2d", [x], out_channels=16, kernel=3, padding=1)
    y = add_op(g, "c1", "conv2d", [stem], out_channels=32, kernel=3, padding=1)
    y = add_op(g, "r1", "relu", [y])
    y = add_op(g, "c2", "conv2d", [y], out_channels=16, kernel=1)
    y = add_op(g, "add", "add", [y, stem])
    y = add_op(g, "dw", "conv2d", [y], kernel=3, depthwise=True, padding=1)
    y = add_op(g, "mm", "channel_matmul", [y], units=32)
    y = add_op(g, "pool", "max_pool2d", [y], kernel=2)
    y = add_op(g, "gap", "global_avg_pool", [y])
    y = add_op(g, "flat", "flatten", [y])
    g.set_output("logits", add_op(g, "fc", "dense", [y], units=5))
    return g


def test_the_region_after_the_stem_runs_blocked_with_two_conversions():
    before = program(_resnet_like())
    after, result = run_pass(LAYOUT, before)
    g = after.graph
    blocked = [n.name for n in g.nodes if n.attrs.get("layout") == 16]
    assert blocked == ["c1", "r1", "c2", "add", "dw", "mm", "pool", "gap"]
    assert conversions(g) == 2
    assert [(n.op, n.inputs[0].name) for n in g.nodes if n.op in ("to_blocked", "from_blocked")] == [
        ("to_blocked", "stem"), ("from_blocked", "gap")]
    assert result.counts == {"layout conversions to NCHW16c": 1, "nodes in NCHW16c": 8, "layout conversions to NCHW": 1}
    # the residual add reads the stem through the same conversion as c1
    add = g.node("add")
    assert add.inputs[1] is g.node("c1").inputs[0]
    assert str(g.node("c1").output.type) == "f32[N, 2, 8, 8, 16]"
    assert after.weights["c1.weight"].shape == (2, 1, 3, 3, 16, 16)
    assert after.weights["dw.weight"].shape == (1, 3, 3, 16)
    assert after.weights["mm.weight"].shape == (2, 1, 16, 16)
    assert after.weights["c1.bias"].shape == (32,)
    assert_same_function(before, after)


def test_channels_that_are_not_a_multiple_of_16_stay_plain():
    g, x = graph_with_input(shape=(24, 6, 6))
    y = add_op(g, "a", "conv2d", [x], out_channels=24, kernel=3, padding=1)
    y = add_op(g, "r", "relu", [y])
    g.set_output("y", add_op(g, "b", "conv2d", [y], out_channels=24, kernel=3, padding=1))
    assert not run_pass(LAYOUT, program(g))[1].changed


def test_a_region_not_worth_its_conversions_stays_plain():
    g, x = graph_with_input(shape=(16, 6, 6))
    y = add_op(g, "a", "conv2d", [x], out_channels=16, kernel=3, padding=1)  # 1 node, 2 conversions
    g.set_output("y", add_op(g, "f", "flatten", [y]))
    assert not run_pass(LAYOUT, program(g))[1].changed
    g, x = graph_with_input(shape=(16, 6, 6))
    y = add_op(g, "r", "relu", [x])
    y = add_op(g, "p", "max_pool2d", [y], kernel=2)
    y = add_op(g, "s", "sigmoid", [y])
    g.set_output("y", add_op(g, "f", "flatten", [y]))  # no layer with weights
    assert not run_pass(LAYOUT, program(g))[1].changed


def test_shared_weights_and_grouped_convolutions_stay_plain():
    g, x = graph_with_input(shape=(16, 6, 6))
    y = add_op(g, "a", "conv2d", [x], out_channels=32, kernel=3, padding=1, groups=2)  # neither 1 group nor depthwise
    y = add_op(g, "r", "relu", [y])
    y = add_op(g, "b", "conv2d", [y], out_channels=32, kernel=3, padding=1, groups=2)
    g.set_output("y", add_op(g, "s", "sigmoid", [y]))
    after, _ = run_pass(LAYOUT, program(g))
    assert not any(n.attrs.get("layout") for n in after.graph.nodes if n.op == "conv2d")
    g, x = graph_with_input(shape=(16, 6, 6))
    a = add_op(g, "a", "conv2d", [x], out_channels=16, kernel=3, padding=1)
    b = add_op(g, "b", "conv2d", [a], out_channels=16, kernel=3, padding=1)
    g.node("b").params = dict(g.node("a").params)
    g.set_output("y", add_op(g, "r", "relu", [b]))
    prog = program(g)
    prune_params(prog)
    after, _ = run_pass(LAYOUT, prog)
    assert not any(n.attrs.get("layout") and n.op == "conv2d" for n in after.graph.nodes)


def test_graph_outputs_come_back_plain_and_a_second_run_does_nothing():
    g, x = graph_with_input(shape=(16, 6, 6))
    y = add_op(g, "a", "conv2d", [x], out_channels=16, kernel=3, padding=1)
    y = add_op(g, "r", "relu", [y])
    y = add_op(g, "b", "conv2d", [y], out_channels=16, kernel=3, padding=1)
    g.set_output("y", add_op(g, "s", "sigmoid", [y]))
    before = program(g)
    after, _ = run_pass(LAYOUT, before)
    assert str(after.graph.outputs["y"].type) == "f32[N, 16, 6, 6]" and after.graph.outputs["y"].producer.op == \
        "from_blocked"
    assert ops(after.graph)[0] == "to_blocked"
    assert_same_function(before, after)
    assert not run_pass(LAYOUT, after)[1].changed


def test_blocked_graph_exports_to_valid_onnx():
    import onnx
    import onnxruntime as ort

    from graphconv.onnx.export import export_onnx
    from .helpers import outputs

    after, _ = run_pass(LAYOUT, program(_resnet_like()))
    model = export_onnx(after.graph, weights=after.weights)
    onnx.checker.check_model(model, full_check=True)
    xs = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    (got,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": xs})
    np.testing.assert_allclose(got, outputs(after, 2)["logits"], rtol=1e-4, atol=1e-5)
