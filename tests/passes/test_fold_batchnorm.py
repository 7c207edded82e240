"""fold_batchnorm: structure (which nodes go, the new weights and bias) and numerics against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from graphconv.passes.fold_batchnorm import FoldBatchNorm

from .helpers import add_op, assert_same_function, graph_with_input, ops, program, run_pass

FOLD = FoldBatchNorm()


@pytest.mark.parametrize("layer, attrs, shape", [
    ("conv2d", dict(out_channels=6, kernel=3, padding=1, bias=False), (3, 8, 8)),
    ("conv2d", dict(out_channels=6, kernel=3, stride=2), (3, 8, 8)),
    ("conv2d", dict(out_channels=6, kernel=3, groups=3), (3, 8, 8)),
    ("conv2d", dict(kernel=3, depthwise=True, bias=False), (4, 8, 8)),
    ("conv2d", dict(out_channels=4, kernel=2, flip=True), (3, 8, 8)),
    ("conv_transpose2d", dict(out_channels=6, kernel=3, stride=2, bias=False), (4, 5, 5)),
    ("conv_transpose2d", dict(out_channels=6, kernel=3, groups=2), (4, 5, 5)),
    ("dense", dict(units=7, bias=False), (5,)),
    ("dense", dict(units=7), (5,)),
])
@pytest.mark.parametrize("bn", [dict(), dict(affine=False, eps=1e-3)])
def test_batchnorm_folds_into_the_layer(layer, attrs, shape, bn):
    g, x = graph_with_input(shape=shape)
    y = add_op(g, "layer", layer, [x], **attrs)
    y = add_op(g, "bn", "batchnorm", [y], **bn)
    g.set_output("y", add_op(g, "act", "relu", [y]))
    before = program(g)
    after, result = run_pass(FOLD, before)
    assert ops(after.graph) == [layer, "relu"]
    assert result.changed and result.counts == {
        f"batchnorms folded into {'dense layers' if layer == 'dense' else 'convolutions'}": 1}
    node = after.graph.nodes[0]
    assert set(node.params) == {"weight", "bias"} and node.attrs["bias"] is True
    assert not any(k.startswith("bn.") for k in after.graph.params) and not any(k.startswith("bn.") for k in after.weights)
    assert after.weights["layer.bias"].dtype == np.float32
    assert_same_function(before, after)


def test_by_hand():
    g, x = graph_with_input(shape=(1, 1, 1))
    y = add_op(g, "conv", "conv2d", [x], kernel=1, weight=[[[[2.0]]]], bias=[1.0])
    g.set_output("y", add_op(g, "bn", "batchnorm", [y], eps=0.25))
    w = {"bn.weight": np.array([3.0], np.float32), "bn.bias": np.array([0.5], np.float32),
         "bn.running_mean": np.array([1.0], np.float32), "bn.running_var": np.array([4.0 - 0.25], np.float32)}
    after, _ = run_pass(FOLD, program(g, weights=w))
    p = after.graph.params
    # s = 3 / sqrt(3.75 + 0.25) = 1.5; weight 2·1.5 = 3; bias 1·1.5 + 0.5 - 1·1.5 = 0.5
    assert p["conv.weight"].role == "fixed" and p["conv.weight"].data.tolist() == [[[[3.0]]]]
    assert p["conv.bias"].data.tolist() == [0.5]
    assert list(after.graph.outputs) == ["y"] and after.graph.outputs["y"] is after.graph.nodes[0].output


def test_not_folded_when_the_layer_output_has_other_readers_or_is_an_output():
    g, x = graph_with_input()
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3)
    b = add_op(g, "bn", "batchnorm", [y])
    g.set_output("sum", add_op(g, "add", "add", [y, b]))
    after, result = run_pass(FOLD, program(g))
    assert not result.changed and ops(after.graph) == ["conv2d", "batchnorm", "add"]
    g, x = graph_with_input()
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("pre", y)
    g.set_output("post", add_op(g, "bn", "batchnorm", [y]))
    assert not run_pass(FOLD, program(g))[1].changed


def test_not_folded_after_ops_that_are_not_linear_per_channel_or_at_training():
    g, x = graph_with_input()
    y = add_op(g, "pool", "max_pool2d", [x], kernel=2)
    g.set_output("y", add_op(g, "bn", "batchnorm", [y]))
    assert not run_pass(FOLD, program(g))[1].changed
    assert FOLD.inference_only


@pytest.mark.parametrize("bias", [True, False])  # without one, the first fold creates the bias the second updates
def test_chained_batchnorms_fold_in_one_run(bias):
    g, x = graph_with_input()
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3, bias=bias)
    y = add_op(g, "bn1", "batchnorm", [y])
    g.set_output("y", add_op(g, "bn2", "batchnorm", [y]))
    before = program(g)
    after, result = run_pass(FOLD, before)
    assert ops(after.graph) == ["conv2d"] and result.counts == {"batchnorms folded into convolutions": 2}
    assert_same_function(before, after)


def test_second_run_does_nothing():
    g, x = graph_with_input()
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("y", add_op(g, "bn", "batchnorm", [y]))
    after, _ = run_pass(FOLD, program(g))
    again, result = run_pass(FOLD, after)
    assert not result.changed and result.line() == "nothing to do"


def test_a_graph_output_between_two_batchnorms_keeps_its_value():
    """After bn1 folds, the conv's output *is* graph output "a"; bn2 must not fold into it."""
    g, x = graph_with_input()
    c = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3)
    a = add_op(g, "bn1", "batchnorm", [c])
    g.set_output("a", a)
    g.set_output("b", add_op(g, "bn2", "batchnorm", [a]))
    before = program(g)
    after, result = run_pass(FOLD, before)
    assert result.counts == {"batchnorms folded into convolutions": 1} and ops(after.graph) == ["conv2d", "batchnorm"]
    assert_same_function(before, after)



@pytest.mark.parametrize("layer, attrs", [
    ("conv2d", dict(out_channels=5, kernel=1)),
    ("conv2d", dict(out_channels=5, kernel=3)),  # unpadded: every tap reads a shifted input, the shift folds
    ("conv2d", dict(out_channels=5, kernel=3, stride=2, dilation=1, bias=False, flip=True)),
    ("channel_matmul", dict(units=5)),
])
def test_batchnorm_after_a_pool_folds_forward_into_the_next_layer(layer, attrs):
    g, x = graph_with_input(shape=(4, 8, 8))
    y = add_op(g, "pool", "max_pool2d", [x], kernel=2)
    y = add_op(g, "bn", "batchnorm", [y])
    g.set_output("y", add_op(g, "layer", layer, [y], **attrs))
    before = program(g)
    after, result = run_pass(FOLD, before)
    assert ops(after.graph) == ["max_pool2d", layer]
    assert result.counts == {"batchnorms folded into the layers after them": 1}
    assert after.graph.nodes[1].inputs[0].name == "pool" and "layer.bias" in after.weights
    assert_same_function(before, after)


def test_batchnorm_before_a_dense_layer_folds_forward():
    g, x = graph_with_input(shape=(4, 3, 3))
    y = add_op(g, "flat", "flatten", [x])
    y = add_op(g, "bn", "batchnorm", [y])
    g.set_output("y", add_op(g, "fc", "dense", [y], units=3))
    before = program(g)
    after, result = run_pass(FOLD, before)
    assert ops(after.graph) == ["flatten", "dense"]
    assert result.counts == {"batchnorms folded into the dense layers after them": 1}
    assert_same_function(before, after)


def test_no_forward_fold_into_padded_or_grouped_layers_or_shared_values():
    for attrs in (dict(out_channels=4, kernel=3, padding=1), dict(out_channels=4, kernel=1, groups=2)):
        g, x = graph_with_input(shape=(4, 8, 8))
        y = add_op(g, "pool", "max_pool2d", [x], kernel=2)
        y = add_op(g, "bn", "batchnorm", [y])
        g.set_output("y", add_op(g, "layer", "conv2d", [y], **attrs))
        assert not run_pass(FOLD, program(g))[1].changed, attrs
    g, x = graph_with_input(shape=(4, 8, 8))
    y = add_op(g, "pool", "max_pool2d", [x], kernel=2)
    y = add_op(g, "bn", "batchnorm", [y])
    g.set_output("a", add_op(g, "c1", "conv2d", [y], out_channels=4, kernel=1))
    g.set_output("b", add_op(g, "c2", "conv2d", [y], out_channels=4, kernel=1))
    assert not run_pass(FOLD, program(g))[1].changed


def test_a_per_channel_scale_after_a_conv_folds_like_batchnorm():
    """A depthwise 1×1 convolution is x·w + b per channel: what the ONNX importer makes of a per-channel Mul/Add."""
    g, x = graph_with_input(shape=(3, 6, 6))
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("y", add_op(g, "scale", "conv2d", [y], kernel=1, depthwise=True))
    before = program(g)
    after, result = run_pass(FOLD, before)
    assert ops(after.graph) == ["conv2d"] and after.graph.nodes[0].name == "conv"
    assert result.counts == {"per-channel scales folded into convolutions": 1}
    assert_same_function(before, after)
