"""lower_1x1: which convolutions become channel matrix products, and that nothing else changes."""

from __future__ import annotations

import pytest

from graphconv.passes.fuse_activation import FuseActivation
from graphconv.passes.lower_1x1 import Lower1x1

from .helpers import add_op, assert_same_function, graph_with_input, ops, program, run_pass

LOWER = Lower1x1()


@pytest.mark.parametrize("attrs", [dict(out_channels=5, kernel=1), dict(out_channels=5, kernel=1, bias=False),
                                   dict(out_channels=5, kernel=1, dilation=2, flip=True)])
def test_pointwise_conv_becomes_a_matrix_product(attrs):
    g, x = graph_with_input(shape=(3, 6, 7))
    g.set_output("y", add_op(g, "pw", "conv2d", [x], **attrs))
    before = program(g)
    after, result = run_pass(LOWER, before)
    node = after.graph.nodes[0]
    assert (node.name, node.op) == ("pw", "channel_matmul")
    assert node.attrs == {"units": 5, "bias": attrs.get("bias", True)}
    assert node.params["weight"].type.shape == (5, 3) and after.weights["pw.weight"].shape == (5, 3)
    assert result.counts == {"1×1 convolutions lowered to matrix products": 1}
    assert_same_function(before, after)
    assert not run_pass(LOWER, after)[1].changed


@pytest.mark.parametrize("attrs", [dict(kernel=3), dict(kernel=1, stride=2), dict(kernel=1, padding=1),
                                   dict(kernel=1, groups=3)])
def test_other_convolutions_stay(attrs):
    g, x = graph_with_input(shape=(3, 6, 7))
    g.set_output("y", add_op(g, "c", "conv2d", [x], out_channels=6, **attrs))
    assert not run_pass(LOWER, program(g))[1].changed


def test_fused_epilogue_and_fixed_weight_come_along():
    g, x = graph_with_input(shape=(2, 4, 4))
    y = add_op(g, "pw", "conv2d", [x], kernel=1, weight=[[[[1.0]], [[2.0]]], [[[3.0]], [[-1.0]]]], bias=[0.5, 0.0])
    y = add_op(g, "add", "add", [y, x])
    g.set_output("y", add_op(g, "r", "relu", [y]))
    before = program(g)
    fused, _ = run_pass(FuseActivation(), before)
    after, _ = run_pass(LOWER, fused)
    node = after.graph.nodes[0]
    assert ops(after.graph) == ["channel_matmul"] and node.attrs["epilogue"] == (("add", (), 1), ("relu", (), None))
    p = after.graph.params["pw.weight"]
    assert p.role == "fixed" and p.data.tolist() == [[1.0, 2.0], [3.0, -1.0]]
    assert_same_function(before, after)


def test_a_weight_shared_with_another_conv_is_not_reshaped():
    from graphconv.passes.base import prune_params
    g, x = graph_with_input(shape=(3, 6, 6))
    a = add_op(g, "a", "conv2d", [x], out_channels=4, kernel=1)
    b = add_op(g, "b", "conv2d", [x], out_channels=4, kernel=1, stride=2)
    g.node("b").params = dict(g.node("a").params)
    g.set_output("a", a)
    g.set_output("b", b)
    before = program(g)
    prune_params(before)
    after, result = run_pass(LOWER, before)
    assert not result.changed and ops(after.graph) == ["conv2d", "conv2d"]
