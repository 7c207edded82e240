"""fuse_pool and the window step of an epilogue: structure, numerics, limits and ONNX export."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from graphconv.errors import OpError
from graphconv.onnx.export import export_onnx
from graphconv.ops import REGISTRY, epilogue
from graphconv.passes.fuse_activation import FuseActivation
from graphconv.passes.fuse_pool import FusePool
from graphconv.passes.lower_pooling import LowerPooling

from .helpers import SPECS, add_op, assert_same_function, graph_with_input, ops, outputs, program, run_pass

FUSE = FusePool()


@pytest.mark.parametrize("pool, attrs", [
    ("max_pool2d", dict(kernel=2)),
    ("max_pool2d", dict(kernel=3, stride=2, padding=1, ceil_mode=True)),
    ("max_pool2d", dict(kernel=2, stride=1, dilation=2)),
    ("window_reduce", dict(reduce="max", kernel=3, stride=2)),
    ("window_reduce", dict(reduce="sum", kernel=2, stride=2)),
])
def test_pool_after_conv_and_relu_becomes_one_node(pool, attrs):
    g, x = graph_with_input(shape=(3, 9, 9))
    y = add_op(g, "c", "conv2d", [x], out_channels=4, kernel=3, padding=1)
    y = add_op(g, "r", "relu", [y])
    g.set_output("y", add_op(g, "p", pool, [y], **attrs))
    before = program(g)
    fused, _ = run_pass(FuseActivation(), before)
    after, result = run_pass(FUSE, fused)
    assert ops(after.graph) == ["conv2d"] and result.counts == {"pools fused into the layer before them": 1}
    steps = after.graph.nodes[0].attrs["epilogue"]
    assert [s[0] for s in steps] == ["relu", pool]
    assert after.graph.outputs["y"].type == before.graph.outputs["y"].type
    assert_same_function(before, after)
    model = export_onnx(after.graph, weights=after.weights)  # Conv, Relu, then the pool, as standard ONNX
    xs = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    (got,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": xs})
    np.testing.assert_allclose(got, outputs(after, 2)["y"], rtol=1e-4, atol=1e-5)


def test_pool_epilogue_and_its_operands_move_along():
    g, x = graph_with_input(shape=(4, 8, 8))
    y = add_op(g, "c", "conv2d", [x], out_channels=4, kernel=3, padding=1)
    p = add_op(g, "p", "max_pool2d", [y], kernel=2)
    side = add_op(g, "side", "avg_pool2d", [x], kernel=2)
    g.set_output("y", add_op(g, "r", "relu", [add_op(g, "add", "add", [p, side])]))
    before = program(g)
    fused, _ = run_pass(FuseActivation(), before)  # the pool absorbs add and relu
    after, _ = run_pass(FUSE, fused)
    node = [n for n in after.graph.nodes if n.name == "c"][0]
    assert [s[0] for s in node.attrs["epilogue"]] == ["max_pool2d", "add", "relu"]
    assert [v.name for v in node.inputs] == ["x", "side"] and node.attrs["epilogue"][1][2] == 1
    assert_same_function(before, after)


def test_not_fused_when_the_conv_output_is_read_elsewhere_or_twice_pooled():
    g, x = graph_with_input(shape=(3, 8, 8))
    y = add_op(g, "c", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("a", add_op(g, "p", "max_pool2d", [y], kernel=2))
    g.set_output("b", add_op(g, "q", "relu", [y]))
    assert not run_pass(FUSE, program(g))[1].changed
    g, x = graph_with_input(shape=(3, 8, 8))
    y = add_op(g, "c", "conv2d", [x], out_channels=4, kernel=3)
    y = add_op(g, "p", "max_pool2d", [y], kernel=2)
    g.set_output("y", add_op(g, "p2", "max_pool2d", [y], kernel=2))
    after, result = run_pass(FUSE, program(g))
    assert result.counts == {"pools fused into the layer before them": 1} and ops(after.graph) == ["conv2d", "max_pool2d"]
    assert not run_pass(FUSE, after)[1].changed  # at most one window step


def test_average_pools_and_pools_after_pools_are_not_fused():
    g, x = graph_with_input(shape=(3, 8, 8))
    y = add_op(g, "c", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("y", add_op(g, "p", "avg_pool2d", [y], kernel=2))
    assert not run_pass(FUSE, program(g))[1].changed
    assert not REGISTRY["avg_pool2d"].window_step and REGISTRY["max_pool2d"].window_step
    g, x = graph_with_input(shape=(3, 8, 8))
    y = add_op(g, "p0", "max_pool2d", [x], kernel=2)
    g.set_output("y", add_op(g, "p", "max_pool2d", [y], kernel=2))
    assert not run_pass(FUSE, program(g))[1].changed


def test_lowered_pools_fuse_too_and_lenet_style_stays_correct():
    g, x = graph_with_input(shape=(1, 12, 12))
    y = add_op(g, "c", "conv2d", [x], out_channels=6, kernel=5)
    y = add_op(g, "t", "tanh", [y])
    g.set_output("y", add_op(g, "p", "max_pool2d", [y], kernel=2, stride=2))
    before = program(g)
    lowered, _ = run_pass(LowerPooling(), before)
    fused, _ = run_pass(FuseActivation(), lowered)
    after, _ = run_pass(FUSE, fused)
    assert [s[0] for s in after.graph.nodes[0].attrs["epilogue"]] == ["tanh", "window_reduce"]
    assert_same_function(before, after)


def test_window_step_rules():
    conv = REGISTRY["conv2d"]
    from graphconv.ir.graph import TensorType
    t = [TensorType(("N", 3, 8, 8))]
    attrs = conv.resolve(conv.check_attrs(dict(out_channels=4, kernel=1)), t)
    pool = tuple(REGISTRY["max_pool2d"].resolve(REGISTRY["max_pool2d"].check_attrs(dict(kernel=2)), t).items())
    assert str(epilogue.infer(conv, {**attrs, "epilogue": (("max_pool2d", pool, None),)}, t)) == "f32[N, 4, 4, 4]"
    with pytest.raises(OpError, match="at most one window step"):
        epilogue.infer(conv, {**attrs, "epilogue": (("max_pool2d", pool, None),) * 2}, t)


def test_summary_counts_a_fused_node_at_its_own_size_and_composes_its_windows():
    import graphconv
    from graphconv.passes import optimize
    from graphconv.summary import summarize

    net = graphconv.load(SPECS / "resnet18.gc", size=64)
    plain, fused = summarize(net.graph), summarize(optimize(net, 3)[0].graph)
    assert fused["total_macs"] == plain["total_macs"]
    conv1 = {layer["name"]: layer for layer in fused["layers"]}["conv1"]
    pool = {layer["name"]: layer for layer in plain["layers"]}["max_pool2d0"]
    assert conv1["macs"] == {layer["name"]: layer for layer in plain["layers"]}["conv1"]["macs"]
    assert conv1["receptive_field"] == pool["receptive_field"] == [11, 11]
