"""fold_1x1: structure (which layers merge, the composed weights) and numerics against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from graphconv.passes.fold_1x1 import Fold1x1

from .helpers import add_op, assert_same_function, graph_with_input, ops, program, run_pass

FOLD = Fold1x1()


@pytest.mark.parametrize("first", [
    dict(out_channels=8, kernel=1),
    dict(out_channels=8, kernel=3, padding=1, stride=2),
    dict(out_channels=8, kernel=3, dilation=2, bias=False),
    dict(out_channels=8, kernel=[3, 1], flip=True),
])
@pytest.mark.parametrize("second", [dict(out_channels=4, kernel=1), dict(out_channels=2, kernel=1, bias=False)])
def test_1x1_after_a_conv_folds(first, second):
    g, x = graph_with_input(shape=(6, 7, 7))
    y = add_op(g, "a", "conv2d", [x], **first)
    y = add_op(g, "b", "conv2d", [y], **second)
    g.set_output("y", add_op(g, "act", "relu", [y]))
    before = program(g)
    after, result = run_pass(FOLD, before)
    assert ops(after.graph) == ["conv2d", "relu"]
    assert result.counts == {"1×1 convolutions folded into the convolution before them": 1}
    a = after.graph.nodes[0]
    assert a.name == "a" and a.attrs["out_channels"] == second["out_channels"] and a.attrs["bias"] is True
    assert a.params["weight"].type.shape[0] == second["out_channels"]
    assert not any(k.startswith("b.") for k in after.graph.params)
    assert_same_function(before, after)


def test_composed_weights_by_hand():
    g, x = graph_with_input(shape=(1, 1, 1))
    y = add_op(g, "a", "conv2d", [x], kernel=1, weight=[[[[2.0]]], [[[3.0]]]], bias=[1.0, -1.0])
    g.set_output("y", add_op(g, "b", "conv2d", [y], kernel=1, weight=[[[[1.0]], [[10.0]]]], bias=[0.5]))
    after, _ = run_pass(FOLD, program(g))
    p = after.graph.params
    assert p["a.weight"].data.tolist() == [[[[32.0]]]]          # 1·2 + 10·3
    assert p["a.bias"].data.tolist() == [-8.5]                  # 1·1 + 10·(-1) + 0.5
    assert p["a.weight"].role == "fixed"


def test_dense_after_flatten_of_a_1x1_map_and_after_global_pooling():
    for pool in (False, True):
        g, x = graph_with_input(shape=(3, 5, 5))
        y = add_op(g, "a", "conv2d", [x], out_channels=16, kernel=5 if not pool else 3)
        if pool:
            y = add_op(g, "gap", "global_avg_pool", [y])
        y = add_op(g, "flat", "flatten", [y])
        g.set_output("logits", add_op(g, "fc", "dense", [y], units=4))
        before = program(g)
        after, result = run_pass(FOLD, before)
        assert ops(after.graph) == ["conv2d", "global_avg_pool", "flatten"] if pool else ["conv2d", "flatten"]
        assert result.counts == {"dense layers folded into the convolution before them": 1}
        assert str(after.graph.outputs["logits"].type) == "f32[N, 4]"
        assert_same_function(before, after)


def test_two_dense_layers_become_one():
    g, x = graph_with_input(shape=(12,))
    y = add_op(g, "fc1", "dense", [x], units=6)
    g.set_output("y", add_op(g, "fc2", "dense", [y], units=3))
    before = program(g)
    after, result = run_pass(FOLD, before)
    assert ops(after.graph) == ["dense"] and result.counts == {"dense layers folded into the dense layer before them": 1}
    assert_same_function(before, after)


def test_not_folded_when_it_adds_work_or_something_is_between():
    g, x = graph_with_input(shape=(4, 6, 6))
    y = add_op(g, "a", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("y", add_op(g, "b", "conv2d", [y], out_channels=64, kernel=1))  # widening: 16× the 3×3 work
    assert not run_pass(FOLD, program(g))[1].changed
    g, x = graph_with_input(shape=(4, 6, 6))
    y = add_op(g, "a", "conv2d", [x], out_channels=8, kernel=3)
    y = add_op(g, "r", "relu", [y])
    g.set_output("y", add_op(g, "b", "conv2d", [y], out_channels=2, kernel=1))
    assert not run_pass(FOLD, program(g))[1].changed
    g, x = graph_with_input(shape=(4, 6, 6))
    y = add_op(g, "a", "conv2d", [x], out_channels=8, kernel=3, groups=2)  # grouped: composing densifies it
    g.set_output("y", add_op(g, "b", "conv2d", [y], out_channels=2, kernel=1))
    assert not run_pass(FOLD, program(g))[1].changed


def test_not_folded_for_strided_or_padded_1x1_or_shared_values():
    for attrs in (dict(stride=2), dict(padding=1), dict(groups=2)):
        g, x = graph_with_input(shape=(4, 6, 6))
        y = add_op(g, "a", "conv2d", [x], out_channels=8, kernel=3)
        g.set_output("y", add_op(g, "b", "conv2d", [y], out_channels=2, kernel=1, **attrs))
        assert not run_pass(FOLD, program(g))[1].changed, attrs
    g, x = graph_with_input(shape=(4, 6, 6))
    y = add_op(g, "a", "conv2d", [x], out_channels=8, kernel=3)
    g.set_output("pre", y)
    g.set_output("y", add_op(g, "b", "conv2d", [y], out_channels=2, kernel=1))
    assert not run_pass(FOLD, program(g))[1].changed


def test_chains_fold_to_one_and_second_run_does_nothing():
    g, x = graph_with_input(shape=(8, 4, 4))
    y = add_op(g, "a", "conv2d", [x], out_channels=8, kernel=3, padding=1)
    y = add_op(g, "b", "conv2d", [y], out_channels=6, kernel=1)
    g.set_output("y", add_op(g, "c", "conv2d", [y], out_channels=4, kernel=1))
    before = program(g)
    after, result = run_pass(FOLD, before)
    assert ops(after.graph) == ["conv2d"] and sum(result.counts.values()) == 2
    assert_same_function(before, after)
    assert not run_pass(FOLD, after)[1].changed


@pytest.mark.parametrize("fixed_a, fixed_b, role", [(True, True, "fixed"), (True, False, "trainable"),
                                                    (False, True, "trainable"), (False, False, "trainable")])
def test_composed_weight_is_fixed_only_when_both_were(fixed_a, fixed_b, role):
    g, x = graph_with_input(shape=(2, 3, 3))
    wa = dict(weight=[[[[1.0]], [[2.0]]], [[[3.0]], [[-1.0]]]]) if fixed_a else dict(out_channels=2)
    wb = dict(weight=[[[[0.5]], [[1.5]]]]) if fixed_b else dict(out_channels=1)
    y = add_op(g, "a", "conv2d", [x], kernel=1, **wa)
    g.set_output("y", add_op(g, "b", "conv2d", [y], kernel=1, **wb))
    before = program(g)
    after, _ = run_pass(FOLD, before)
    p = after.graph.params["a.weight"]
    assert p.role == role and (p.data is not None) == (role == "fixed")
    assert ("a.weight" in after.weights) == (role != "fixed")
    assert_same_function(before, after)
