"""lower_pooling and the ops it lowers to.

The ops: window_reduce and reduce_mean (shapes, errors, reference against onnxruntime and loops, ONNX export with
a per-position scale). The pass: the IR it makes (ops, attributes, the scale computed by hand for padded and
ceil_mode pools, names, epilogues, counts), the function kept for every pooling option the ops accept (float32,
rtol 1e-4), and every zoo spec (float64)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

import graphconv
from graphconv.ir.verify import verify
from graphconv.onnx.export import export_onnx
from graphconv.ops import REGISTRY
from graphconv.ops.schema import Window
from graphconv.passes.base import Program
from graphconv.passes.fuse_activation import FuseActivation
from graphconv.passes.lower_pooling import LowerPooling
from graphconv.reference.executor import run_graph
from graphconv.spec import load_graph_text

from .helpers import (SPECS, ZOO, add_op, assert_same_function, graph_with_input, ops, outputs, program, run_pass,
                      zoo_graph, zoo_specs_covered)

from ops.helpers import build, close, op_error, ort_run, randn, run, tt  # noqa: E402  (tests/ is on the path)
from test_export_helpers import check_valid, session  # noqa: E402  (tests/onnx, put on the path by .helpers)

LOWER = LowerPooling()
X = randn(2, 3, 7, 8, seed=3)

# the option grid of tests/ops/test_ops_pool.py: kernel, stride, padding, ceil_mode
GRID = list(itertools.product([2, 3, (3, 2)], [None, 1, 2, (2, 3)], [0, 1, [1, 0, 0, 1]], [False, True]))


# -- the ops -------------------------------------------------------------------------------------------------------

def ones_conv(x, kernel, stride, pads, dilation=(1, 1)):
    """Window sums by onnxruntime: a depthwise all-ones Conv (zero padding)."""
    c = x.shape[1]
    w = np.ones((c, 1, *kernel), x.dtype)
    return ort_run("Conv", [x, w], dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pads),
                                        dilations=list(dilation), group=c))


@pytest.mark.parametrize("kernel, stride, padding, ceil", GRID)
@pytest.mark.parametrize("dilation", [1, 2])
def test_window_sum_matches_onnxruntime(kernel, stride, padding, ceil, dilation):
    y, built, _ = run("window_reduce", [X], reduce="sum", kernel=kernel, stride=stride, padding=padding,
                      dilation=dilation, ceil_mode=ceil)
    a, op = built.attrs, built.op
    assert built.out == build("max_pool2d", [tt(3, 7, 8)], kernel=kernel, stride=stride, padding=padding,
                              dilation=dilation, ceil_mode=ceil).out
    close(y, ones_conv(X, a["kernel"], a["stride"], op.overhang_pads(a, 7, 8), a["dilation"]))


@pytest.mark.parametrize("kernel, stride, padding, ceil", GRID)
@pytest.mark.parametrize("dilation", [1, 2])
def test_window_max_matches_onnxruntime_and_max_pool(kernel, stride, padding, ceil, dilation):
    given = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil)
    y, built, _ = run("window_reduce", [X], reduce="max", **given)
    a = built.attrs
    np.testing.assert_array_equal(y, run("max_pool2d", [X], **given)[0])
    close(y, ort_run("MaxPool", [X], dict(kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                                          pads=list(a["padding"]), dilations=list(a["dilation"]),
                                          ceil_mode=int(ceil))))


def test_window_sum_by_hand_and_against_avg_pool():
    # the row 1..6 of test_avg_pool_ceil_mode_divisor_by_hand: padded [0 1 2 3 4 5 6 0], windows at 0, 2, 4, 6,
    # the last one running one past the padded input (it reads a zero there)
    x = np.arange(1.0, 7.0, dtype=np.float32).reshape(1, 1, 1, 6)
    given = dict(kernel=(1, 3), stride=2, padding=[0, 1], ceil_mode=True)
    y, built, _ = run("window_reduce", [x], reduce="sum", **given)
    np.testing.assert_array_equal(y[0, 0, 0], [3.0, 9.0, 15.0, 6.0])
    avg = REGISTRY["avg_pool2d"]
    for inc in (True, False):
        a, built_avg = dict(given, count_include_pad=inc), build("avg_pool2d", [tt(1, 1, 6)], **given,
                                                                 count_include_pad=inc)
        mean = run("avg_pool2d", [x], **a)[0]
        np.testing.assert_allclose(mean * avg.divisor(built_avg.attrs, 1, 6), y, rtol=1e-6)


def test_scale_multiplies_each_position():
    scale = np.arange(1.0, 17.0).reshape(4, 4) / 4  # the 4×4 output of a 7×8 input
    for reduce in ("sum", "max"):
        plain, _, _ = run("window_reduce", [X], reduce=reduce, kernel=3, stride=2, padding=1)
        y, built, ps = run("window_reduce", [X], reduce=reduce, kernel=3, stride=2, padding=1, scale=scale)
        assert built.attrs["scale"] is True and ps["scale"].shape == (4, 4)
        (spec,) = built.params
        assert (spec.name, spec.shape) == ("scale", (4, 4)) and np.array_equal(spec.data, scale)
        close(y, plain * scale.astype(np.float32))
        # scale=true: a trained scale, initialized to ones
        (spec,) = build("window_reduce", [tt(3, 7, 8)], reduce=reduce, kernel=3, stride=2, padding=1,
                        scale=True).params
        assert spec.data is None and spec.role == "trainable" and spec.init.name == "ones"
    assert build("window_reduce", [tt(3, 7, 8)], reduce="sum", kernel=3).params == []


def test_window_reduce_definition():
    op = REGISTRY["window_reduce"]
    assert [a.name for a in op.attrs] == ["reduce", "kernel", "stride", "padding", "dilation", "ceil_mode", "scale"]
    assert op.fusion == "out_fusable" and op.attr("reduce").required
    assert op.window(build("window_reduce", [tt(3, 7, 8)], reduce="max", kernel=3, stride=2, dilation=2).attrs) \
        == Window((5, 5), (2, 2))
    assert build("window_reduce", [tt(3, 7, 8)], reduce="sum", kernel=3, stride=2, padding="same").attrs[
        "padding"] == (1, 0, 1, 1)
    rm = REGISTRY["reduce_mean"]
    assert rm.fusion == "reduction" and rm.attrs == () and rm.window({}) == Window(global_=True)


@pytest.mark.parametrize("given, shape, message", [
    (dict(kernel=2), (3, 7, 8), "missing required attribute 'reduce'"),
    (dict(reduce="mean", kernel=2), (3, 7, 8), "expected one of sum, max, got 'mean'"),
    (dict(reduce="sum", kernel=3, padding=2), (3, 7, 8), "padding [2, 2, 2, 2] is more than half the 3×3 window"),
    (dict(reduce="max", kernel=9), (3, 7, 8), "does not fit"),
    (dict(reduce="sum", kernel=2), (8,), "window_reduce expects a rank-4 input"),
    (dict(reduce="sum", kernel=2, scale=[[1.0, 2.0]]), (3, 7, 8), "the scale written in the spec has shape [1, 2], "
                                                                  "but this layer needs [3, 4]"),
    (dict(reduce="sum", kernel=2, scale="yes"), (3, 7, 8), "attribute 'scale'"),
])
def test_window_reduce_errors(given, shape, message):
    assert message in op_error("window_reduce", [tt(*shape)], **given).message


def test_reduce_mean():
    y, built, _ = run("reduce_mean", [X])
    assert built.out == tt(3, 1, 1) and y.shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(y, run("global_avg_pool", [X])[0])
    # ONNX ReduceMean with its axes as an input (opset 18 and later)
    close(y, ort_run("ReduceMean", [X, np.array([2, 3], np.int64)], dict(keepdims=1), opset=18))
    assert "rank-4" in op_error("reduce_mean", [tt(5)]).message


def test_spec_accepts_the_new_ops():
    g = load_graph_text("""network t() {
  input x: f32[N, 3, 8, 8]
  a = x -> window_reduce(sum, 3, 2, 1, scale=true) -> reduce_mean
  b = x -> window_reduce(max, 2, scale=[[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]) as m
  output a
  output b
}""", "t.gc")
    assert ops(g) == ["window_reduce", "reduce_mean", "window_reduce"]
    assert g.params["m.scale"].role == "fixed" and g.params["m.scale"].data.shape == (4, 4)
    assert g.nodes[0].params["scale"].type.shape == (4, 4)


@pytest.mark.parametrize("given", [
    dict(reduce="sum", kernel=3, stride=2, padding=1),
    dict(reduce="sum", kernel=3, stride=2, padding=1, ceil_mode=True),  # per-position counts in the export
    dict(reduce="sum", kernel=2, stride=2, ceil_mode=True),
    dict(reduce="sum", kernel=[3, 2], stride=[1, 2], dilation=[2, 1], padding=[1, 0, 2, 1], ceil_mode=True),
    dict(reduce="max", kernel=3, stride=2, padding=1, ceil_mode=True),
    dict(reduce="max", kernel=2, dilation=2),
])
@pytest.mark.parametrize("scaled", [False, True])
def test_window_reduce_export_matches_onnxruntime(given, scaled):
    g, x = graph_with_input(shape=(3, 9, 11))
    y = add_op(g, "layer", "window_reduce", [x], **given, scale=scaled)
    g.set_output("y", y)
    weights = {}
    if scaled:  # a scale that is not all ones
        weights["layer.scale"] = np.random.default_rng(1).uniform(-2, 2, y.type.shape[2:]).astype(np.float32)
    model = export_onnx(g, weights=weights)
    check_valid(model)
    assert {n.op_type for n in model.graph.node} <= {"MaxPool", "AveragePool", "Conv", "Mul", "Identity"}
    xs = {"x": randn(2, 3, 9, 11, seed=5)}
    (got,) = session(model).run(None, xs)
    close(got, run_graph(g, xs, weights)["y"])


def test_reduce_mean_export():
    g, x = graph_with_input(shape=(3, 9, 11))
    g.set_output("y", add_op(g, "layer", "reduce_mean", [x]))
    model = export_onnx(g, opset=18)
    check_valid(model)
    assert [n.op_type for n in model.graph.node] == ["ReduceMean", "Identity"]  # the output named y
    xs = {"x": randn(2, 3, 9, 11, seed=5)}
    close(session(model).run(None, xs)[0], run_graph(g, xs, {})["y"])


# -- the pass: structure ---------------------------------------------------------------------------------------------

def lowered(op, shape=(3, 8, 8), **attrs):
    """One pool node `pool` feeding a relu; returns (before, after, result, the lowered node)."""
    g, x = graph_with_input(shape=shape)
    y = add_op(g, "pool", op, [x], **attrs)
    g.set_output("y", add_op(g, "act", "relu", [y]))
    before = program(g)
    after, result = run_pass(LOWER, before)
    return before, after, result, after.graph.nodes[0]


def test_max_pool_becomes_a_window_maximum():
    before, after, result, node = lowered("max_pool2d", kernel=3, stride=2, padding=[1, 0, 1, 1], dilation=[1, 2],
                                          ceil_mode=True)
    assert ops(after.graph) == ["window_reduce", "relu"] and node.name == "pool"
    assert node.attrs == dict(reduce="max", kernel=(3, 3), stride=(2, 2), padding=(1, 0, 1, 1), dilation=(1, 2),
                              ceil_mode=True, scale=False)
    assert not node.params and after.graph.nodes[1].inputs == [node.output]
    assert result.counts == {"max pool lowered to a window maximum": 1}
    assert result.line() == "1 max pool lowered to a window maximum"
    assert_same_function(before, after)


def test_padded_average_excluding_the_padding_becomes_a_scaled_window_sum():
    before, after, result, node = lowered("avg_pool2d", shape=(3, 4, 4), kernel=3, stride=1, padding=1,
                                          count_include_pad=False)
    assert ops(after.graph) == ["window_reduce", "relu"] and node.name == "pool"
    assert node.attrs == dict(reduce="sum", kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1),
                              ceil_mode=False, scale=True)
    # windows along each axis of 4 with a 3-window and one pad each side cover 2, 3, 3, 2 real positions
    counts = np.outer([2, 3, 3, 2], [2, 3, 3, 2])
    scale = after.graph.params["pool.scale"]
    assert node.params["scale"] is scale.value and scale.role == "fixed" and scale.value.type.shape == (4, 4)
    np.testing.assert_array_equal(scale.data, 1.0 / counts)
    assert scale.data.dtype == np.float64 and "pool.scale" not in after.weights
    assert result.line() == "1 average pool lowered to a window sum"
    assert_same_function(before, after)


def test_ceil_mode_average_by_hand():
    # the row 1..6, kernel 1×3, stride 2, one column of padding each side, ceil_mode: the padded row is
    # [0 1 2 3 4 5 6 0], the last window runs one past it; divisors 3, 3, 3, 2 (padding counted, the overhang not)
    x = np.arange(1.0, 7.0, dtype=np.float32).reshape(1, 1, 1, 6)
    for inc, divisor, want in [(True, [3, 3, 3, 2], [1.0, 3.0, 5.0, 3.0]), (False, [2, 3, 3, 1], [1.5, 3.0, 5.0, 6.0])]:
        before, after, _, node = lowered("avg_pool2d", shape=(1, 1, 6), kernel=[1, 3], stride=2, padding=[0, 1],
                                         ceil_mode=True, count_include_pad=inc)
        assert node.op == "window_reduce" and node.attrs["ceil_mode"] and node.attrs["padding"] == (0, 1, 0, 1)
        np.testing.assert_array_equal(after.graph.params["pool.scale"].data, 1.0 / np.array([divisor]))
        y = run_graph(after.graph, {"x": x}, after.weights)["y"]
        np.testing.assert_allclose(y[0, 0, 0], np.maximum(want, 0), rtol=1e-6)
        assert_same_function(before, after)


def test_the_scale_is_the_avg_pool_divisor_seen_on_ones():
    # what the avg_pool2d reference divides by: a window sum of ones over the mean of ones
    for kernel, stride, padding, ceil in GRID:
        for inc in (True, False):
            attrs = dict(kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil, count_include_pad=inc)
            _, after, _, node = lowered("avg_pool2d", shape=(1, 7, 8), **attrs)
            ones = np.ones((1, 1, 7, 8))
            mean = run("avg_pool2d", [ones], **attrs)[0][0, 0]
            sums = run("window_reduce", [ones], reduce="sum", kernel=kernel, stride=stride, padding=padding,
                       ceil_mode=ceil)[0][0, 0]
            if node.op == "window_reduce":
                np.testing.assert_allclose(after.graph.params["pool.scale"].data, mean / sums, rtol=1e-12)
            else:
                assert node.op == "conv2d" and np.ptp(mean / sums) == 0  # a uniform divisor
                np.testing.assert_allclose(after.graph.params["pool.weight"].data, (mean / sums).flat[0], rtol=1e-12)


@pytest.mark.parametrize("attrs, pads", [
    (dict(kernel=2), (0, 0, 0, 0)),
    (dict(kernel=3, stride=2, padding=1), (1, 1, 1, 1)),  # count_include_pad: every window counts 9
    (dict(kernel=[3, 2], stride=1, ceil_mode=True), (0, 0, 0, 0)),  # no window runs past the input
])
def test_uniform_divisor_becomes_a_depthwise_convolution(attrs, pads):
    before, after, result, node = lowered("avg_pool2d", shape=(3, 8, 8), **attrs)
    assert ops(after.graph) == ["conv2d", "relu"] and node.name == "pool"
    kernel = node.attrs["kernel"]
    assert node.attrs["groups"] == node.attrs["out_channels"] == 3 and node.attrs["bias"] is False
    assert node.attrs["padding"] == pads and node.attrs["stride"] == before.graph.nodes[0].attrs["stride"]
    w = after.graph.params["pool.weight"]
    assert w.role == "fixed" and set(node.params) == {"weight"}
    np.testing.assert_array_equal(w.data, np.full((3, 1, *kernel), 1.0 / (kernel[0] * kernel[1])))
    assert result.line() == "1 average pool lowered to a depthwise convolution"
    assert_same_function(before, after)


def test_uniform_divisor_with_a_ceil_mode_overhang_pads_the_convolution():
    # a 1×1 input, kernel 4, stride 2, padding 2 not counted, ceil_mode: two windows per axis, each holding the one
    # real value (divisor 1 everywhere); the second runs one row/column past the padding
    before, after, _, node = lowered("avg_pool2d", shape=(2, 1, 1), kernel=4, stride=2, padding=2, ceil_mode=True,
                                     count_include_pad=False)
    assert node.op == "conv2d" and node.attrs["padding"] == (2, 2, 3, 3)
    assert node.output.type == before.graph.nodes[0].output.type == tt(2, 2, 2)
    np.testing.assert_array_equal(after.graph.params["pool.weight"].data, np.ones((2, 1, 4, 4)))
    assert_same_function(before, after)


def test_global_pools_and_lp_pool():
    before, after, result, node = lowered("global_avg_pool")
    assert ops(after.graph) == ["reduce_mean", "relu"] and node.name == "pool" and node.attrs == {}
    assert result.line() == "1 global average pool lowered to a mean"
    assert_same_function(before, after)
    for op, attrs in [("global_max_pool", {}), ("lp_pool2d", dict(kernel=2, p=3.0))]:
        _, after, result, _ = lowered(op, **attrs)
        assert not result.changed and ops(after.graph) == [op, "relu"] and result.line() == "nothing to do"


def test_counts_names_order_and_a_second_run():
    g, x = graph_with_input(shape=(4, 12, 12))
    a = add_op(g, "stem.pool", "max_pool2d", [x], kernel=3, stride=1, padding=1)
    b = add_op(g, "b1.avg", "avg_pool2d", [a], kernel=3, stride=1, padding=1, count_include_pad=False)
    c = add_op(g, "b2.avg", "avg_pool2d", [a], kernel=3, stride=2, padding=1, ceil_mode=True)
    d = add_op(g, "b3.avg", "avg_pool2d", [a], kernel=2)
    e = add_op(g, "b4.max", "max_pool2d", [b], kernel=2, ceil_mode=True)
    s = add_op(g, "sum", "add", [add_op(g, "up", "upsample", [d], scale=2), b])
    g.set_output("e", e)
    g.set_output("c", c)
    g.set_output("s", s)
    g.set_output("gap", add_op(g, "gap", "global_avg_pool", [s]))
    g.set_output("gmp", add_op(g, "gmp", "global_max_pool", [s]))
    before = program(g)
    after, result = run_pass(LOWER, before)
    assert result.line() == ("2 average pools lowered to window sums; 1 average pool lowered to a depthwise "
                             "convolution; 2 max pools lowered to window maxima; 1 global average pool lowered to a "
                             "mean")
    assert [(n.name, n.op) for n in after.graph.nodes] == [
        ("stem.pool", "window_reduce"), ("b1.avg", "window_reduce"), ("b2.avg", "window_reduce"),
        ("b3.avg", "conv2d"), ("b4.max", "window_reduce"), ("up", "upsample"), ("sum", "add"),
        ("gap", "reduce_mean"), ("gmp", "global_max_pool")]
    assert sorted(after.graph.params) == ["b1.avg.scale", "b2.avg.scale", "b3.avg.weight"]
    assert list(after.graph.outputs) == ["e", "c", "s", "gap", "gmp"]
    assert after.graph.outputs["c"] is after.graph.values["b2.avg"]
    assert not before.graph.params and ops(before.graph)[0] == "max_pool2d"  # the input program is untouched
    assert_same_function(before, after)
    again, result = run_pass(LOWER, after)
    assert not result.changed and result.line() == "nothing to do" and ops(again.graph) == ops(after.graph)


def test_fused_epilogues_come_along():
    g, x = graph_with_input(shape=(3, 8, 8))
    m = add_op(g, "m", "max_pool2d", [x], kernel=2)
    g.set_output("m", add_op(g, "m_act", "relu", [m]))
    a = add_op(g, "a", "avg_pool2d", [x], kernel=3, padding=1, stride=1, count_include_pad=False)
    g.set_output("a", add_op(g, "a_act", "tanh", [add_op(g, "res", "add", [a, x])]))
    c = add_op(g, "c", "avg_pool2d", [x], kernel=2)
    g.set_output("c", add_op(g, "c_act", "sigmoid", [c]))
    before = program(g)
    fused, _ = run_pass(FuseActivation(), before)
    assert ops(fused.graph) == ["max_pool2d", "avg_pool2d", "avg_pool2d"]
    after, result = run_pass(LOWER, fused)
    assert ops(after.graph) == ["window_reduce", "window_reduce", "conv2d"]
    m, a, c = after.graph.nodes
    assert m.attrs["epilogue"] == (("relu", (), None),) and m.inputs == [after.graph.inputs[0]]
    assert a.attrs["epilogue"] == (("add", (), 1), ("tanh", (), None)) and len(a.inputs) == 2
    assert c.attrs["epilogue"] == (("sigmoid", (), None),)
    assert_same_function(before, after)


def test_graph_outputs_and_float64():
    g, x = graph_with_input(shape=(2, 5, 5), dtype="float64")
    y = add_op(g, "pool", "avg_pool2d", [x], kernel=2, stride=2, ceil_mode=True, count_include_pad=False)
    g.set_output("pooled", y)
    g.set_output("again", y)
    before = program(g)
    after, _ = run_pass(LOWER, before)
    (node,) = after.graph.nodes
    assert after.graph.outputs["pooled"] is after.graph.outputs["again"] is node.output
    assert node.output.type.dtype == "float64" and node.params["scale"].type.dtype == "float64"
    a, b = outputs(before, dtype="float64"), outputs(after, dtype="float64")
    np.testing.assert_allclose(b["pooled"], a["pooled"], rtol=1e-13)


def test_inference_only():
    assert LOWER.inference_only and LOWER.name == "lower_pooling" and LOWER.summary


# -- the pass: every option keeps the function (float32) -------------------------------------------------------------

@pytest.mark.parametrize("kernel, stride, padding, ceil", GRID)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_options_keep_the_function(kernel, stride, padding, ceil, count_include_pad):
    before, after, _, node = lowered("avg_pool2d", shape=(3, 7, 8), kernel=kernel, stride=stride, padding=padding,
                                     ceil_mode=ceil, count_include_pad=count_include_pad)
    assert node.op in ("window_reduce", "conv2d")
    assert_same_function(before, after)


@pytest.mark.parametrize("kernel, stride, padding, ceil", GRID)
@pytest.mark.parametrize("dilation", [1, 2])
def test_max_pool_options_keep_the_function(kernel, stride, padding, ceil, dilation):
    before, after, _, node = lowered("max_pool2d", shape=(3, 7, 8), kernel=kernel, stride=stride, padding=padding,
                                     dilation=dilation, ceil_mode=ceil)
    assert node.op == "window_reduce"
    assert_same_function(before, after)


def test_same_padding():
    for op in ("avg_pool2d", "max_pool2d"):
        before, after, _, _ = lowered(op, shape=(3, 7, 8), kernel=3, stride=2, padding="same")
        assert_same_function(before, after)


# -- the zoo (float64) -----------------------------------------------------------------------------------------------

# what the pass does on each zoo spec
EXPECTED = {
    "lenet5": "2 average pools lowered to depthwise convolutions",
    "alexnet": "3 max pools lowered to window maxima", "alexnet-lrn": "3 max pools lowered to window maxima",
    "vgg16": "5 max pools lowered to window maxima", "vgg19": "5 max pools lowered to window maxima",
    "googlenet": "13 max pools lowered to window maxima; 1 global average pool lowered to a mean",
    "googlenet-aux": "2 average pools lowered to depthwise convolutions; 13 max pools lowered to window maxima; "
                     "1 global average pool lowered to a mean",
    **{k: "1 max pool lowered to a window maximum; 1 global average pool lowered to a mean"
       for k in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")},
    "mobilenet_v2": "1 global average pool lowered to a mean",
    "sobel": "nothing to do", "cifar_cnn": "3 max pools lowered to window maxima",
}


def test_every_spec_is_covered():
    assert zoo_specs_covered() and set(EXPECTED) == set(ZOO)


@pytest.mark.parametrize("key", sorted(ZOO))
def test_zoo_structure(key):
    g = zoo_graph(key)
    prog = Program(g, {})
    result = LOWER.run(prog)
    assert result.line() == EXPECTED[key]
    verify(g)
    assert not {"avg_pool2d", "max_pool2d", "global_avg_pool"} & set(ops(g))
    assert not LOWER.run(prog).changed


@pytest.mark.parametrize("key", sorted(ZOO))
def test_zoo_keeps_the_function(key):
    spec, params = ZOO[key]
    net = graphconv.load(SPECS / f"{spec}.gc", **params)
    prog = Program(copy.deepcopy(net.graph), dict(net.weights))
    LOWER.run(prog)
    verify(prog.graph)
    after = graphconv.Network(prog.graph, prog.weights)
    x = {v.name: np.random.default_rng(0).standard_normal(v.type.concrete(1)) for v in net.graph.inputs}
    want = graphconv.compile(net, dtype="float64").run(x)
    got = graphconv.compile(after, dtype="float64").run(x)
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("attrs", [
    dict(kernel=2, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel=3, stride=2, padding=1, ceil_mode=True),
])
@pytest.mark.parametrize("size", [5, 6, 7])
def test_lowered_ceil_mode_average_pools_export_and_run_on_onnxruntime(attrs, size):
    """ONNX shape inference keeps a ceil_mode window that starts in the right padding (PyTorch drops it): the window
    sum must not be exported through AveragePool's own output size."""
    import onnx
    import onnxruntime as ort

    g, x = graph_with_input(shape=(2, size, size))
    g.set_output("y", add_op(g, "pool", "avg_pool2d", [x], **attrs))
    before = program(g)
    after, _ = run_pass(LowerPooling(), before)
    model = export_onnx(after.graph, weights=after.weights)
    onnx.checker.check_model(model, full_check=True)
    xs = np.random.default_rng(0).standard_normal((2, 2, size, size)).astype(np.float32)
    (got,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": xs})
    np.testing.assert_allclose(got, run_graph(before.graph, {"x": xs}, before.weights)["y"], rtol=1e-4, atol=1e-5)
