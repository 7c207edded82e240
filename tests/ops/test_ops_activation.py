"""Activations, softmax/log_softmax, dropout and the relu6 alias."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from graphconv.ops import ALIASES, REGISTRY

from .helpers import build, close, op_error, ort_run, randn, run, tt

X = (randn(2, 3, 4, 5, seed=8) * 4).astype(np.float32)

# (our op, our attributes, ONNX op, ONNX attributes)
UNARY = [
    ("relu", {}, "Relu", {}),
    ("leaky_relu", {}, "LeakyRelu", {"alpha": 0.01}),
    ("leaky_relu", {"alpha": 0.2}, "LeakyRelu", {"alpha": 0.2}),
    ("leaky_relu", {"alpha": -0.5}, "LeakyRelu", {"alpha": -0.5}),
    ("elu", {}, "Elu", {"alpha": 1.0}),
    ("elu", {"alpha": 0.3}, "Elu", {"alpha": 0.3}),
    ("selu", {}, "Selu", {}),
    ("sigmoid", {}, "Sigmoid", {}),
    ("tanh", {}, "Tanh", {}),
    ("softmax", {}, "Softmax", {"axis": 1}),
    ("softmax", {"axis": -1}, "Softmax", {"axis": -1}),
    ("softmax", {"axis": 2}, "Softmax", {"axis": 2}),
    ("log_softmax", {}, "LogSoftmax", {"axis": 1}),
    ("log_softmax", {"axis": -2}, "LogSoftmax", {"axis": -2}),
]


@pytest.mark.parametrize("name, given, onnx_op, onnx_attrs", UNARY)
def test_unary_matches_onnxruntime(name, given, onnx_op, onnx_attrs):
    y, built, _ = run(name, [X], **given)
    close(y, ort_run(onnx_op, [X], onnx_attrs))
    assert built.out == tt(3, 4, 5)
    y64, _, _ = run(name, [X.astype(np.float64)], **given)
    assert y64.dtype == np.float64
    close(y64, y)


@pytest.mark.parametrize("lo, hi", [(0.0, 6.0), (-1.0, None), (None, 0.5), (2.0, 2.0)])
def test_clip_matches_onnxruntime(lo, hi):
    y, _, _ = run("clip", [X], min=lo, max=hi)
    bound = lambda v: None if v is None else np.array(v, np.float32)  # noqa: E731
    np.testing.assert_array_equal(y, ort_run("Clip", [X, bound(lo), bound(hi)]))


def test_hand_computed_values():
    x = np.array([[-2.0, -0.5, 0.0, 1.5]], dtype=np.float32)
    np.testing.assert_allclose(run("leaky_relu", [x], alpha=0.1)[0], [[-0.2, -0.05, 0.0, 1.5]], rtol=1e-6)
    np.testing.assert_allclose(run("elu", [x])[0], [[math.expm1(-2), math.expm1(-0.5), 0.0, 1.5]], rtol=1e-6)
    a, s = 1.6732632423543772, 1.0507009873554805  # PyTorch's SELU constants
    np.testing.assert_allclose(run("selu", [x])[0], [[s * a * math.expm1(-2), s * a * math.expm1(-0.5), 0, s * 1.5]],
                               rtol=1e-6)
    np.testing.assert_allclose(run("sigmoid", [x])[0], [[1 / (1 + math.exp(2)), 1 / (1 + math.exp(0.5)), 0.5,
                                                         1 / (1 + math.exp(-1.5))]], rtol=1e-6)
    np.testing.assert_allclose(run("tanh", [x])[0], [np.tanh([-2.0, -0.5, 0.0, 1.5])], rtol=1e-6)
    np.testing.assert_array_equal(run("clip", [x], min=-1, max=1)[0], [[-1.0, -0.5, 0.0, 1.0]])
    np.testing.assert_allclose(run("softmax", [np.array([[0.0, math.log(3.0)]])])[0], [[0.25, 0.75]], rtol=1e-12)
    np.testing.assert_allclose(run("log_softmax", [np.array([[0.0, math.log(3.0)]])])[0],
                               [[math.log(0.25), math.log(0.75)]], rtol=1e-12)


def loop_softmax(x, axis, log):
    """Per fibre along `axis`, in Python floats with the max subtracted."""
    out = np.empty_like(x, dtype=np.float64)
    moved = np.moveaxis(x, axis, -1)
    res = np.moveaxis(out, axis, -1)
    for idx in np.ndindex(moved.shape[:-1]):
        v = [float(t) for t in moved[idx]]
        m = max(v)
        total = sum(math.exp(t - m) for t in v)
        res[idx] = [(t - m - math.log(total)) if log else math.exp(t - m) / total for t in v]
    return out


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_stable_for_huge_inputs(name, dtype):
    x = np.array([[1000.0, 1001.0, -1000.0], [-5e4, -5e4, -5e4]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y, _, _ = run(name, [x])
    assert np.all(np.isfinite(y)) and y.dtype == dtype
    close(y, loop_softmax(x, 1, name == "log_softmax"))


def test_sigmoid_does_not_overflow():
    x = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y, _, _ = run("sigmoid", [x])
    np.testing.assert_array_equal(y, [[0.0, np.float32(1 / (1 + math.exp(100))), 0.5, 1.0, 1.0]])


def test_softmax_axis_is_normalized():
    assert build("softmax", [tt(3, 4, 5)], axis=-1).attrs["axis"] == 3
    assert build("log_softmax", [tt(10)]).attrs["axis"] == 1
    assert REGISTRY["softmax"].fusion == "opaque"


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis, text", [(0, "is the batch dimension"), (-3, "is the batch dimension"),
                                        (3, "out of range for f32\\[N, 4, 5\\]"), (-4, "out of range")])
def test_softmax_axis_errors(name, axis, text):
    e = op_error(name, [tt(4, 5)], axis=axis)
    assert e.attr == "axis" and re.search(text, e.message), e.message


@pytest.mark.parametrize("name, given, attr, text", [
    ("clip", {}, "min", "give min, max or both"),
    ("clip", {"min": 2.0, "max": 1.0}, "min", r"min \(2\) is above max \(1\)"),
    ("clip", {"min": "low"}, "min", "expected a number"),
    ("leaky_relu", {"alpha": True}, "alpha", "expected a number"),
    ("elu", {"alpha": float("inf")}, "alpha", "finite"),
    ("selu", {"alpha": 1.0}, "alpha", "selu has no attribute 'alpha'"),
    ("sigmoid", {"axis": 1}, "axis", "has no attribute"),
    ("dropout", {"rate": 1.0}, "rate", "rate must be below 1"),
    ("dropout", {"rate": -0.1}, "rate", ">= 0"),
    ("dropout", {"rate": 1.5}, "rate", "<= 1"),
])
def test_attribute_errors(name, given, attr, text):
    e = op_error(name, [tt(4)], **given)
    assert e.attr == attr and re.search(text, e.message), e.message


def test_fusion_kinds():
    for name in ("relu", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "clip", "dropout"):
        assert REGISTRY[name].fusion == "elementwise"


def test_relu6_alias():
    assert ALIASES["relu6"] == ("clip", {"min": 0.0, "max": 6.0})
    name, given = ALIASES["relu6"]
    y, _, _ = run(name, [np.array([[-1.0, 3.0, 7.0]], np.float32)], **given)
    np.testing.assert_array_equal(y, [[0.0, 3.0, 6.0]])


# -- dropout ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_dropout_is_identity_at_inference(rate):
    y, _, _ = run("dropout", [X], rate=rate)
    np.testing.assert_array_equal(y, X)
    np.testing.assert_array_equal(y, ort_run("Dropout", [X], {}))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_training(rate, dtype):
    x = np.ones((4, 50, 50), dtype=dtype)
    y, _, _ = run("dropout", [x], rate=rate, training=True, rng=np.random.default_rng(11))
    kept = y != 0
    assert y.dtype == dtype
    np.testing.assert_allclose(y[kept], 1.0 / (1.0 - rate), rtol=1e-6)
    n = x.size
    assert abs(kept.mean() - (1 - rate)) < 4 * math.sqrt(rate * (1 - rate) / n)  # 4 sigma
    # the mask comes from ctx.rng: same seed, same mask; another seed, another mask
    again, _, _ = run("dropout", [x], rate=rate, training=True, rng=np.random.default_rng(11))
    other, _, _ = run("dropout", [x], rate=rate, training=True, rng=np.random.default_rng(12))
    np.testing.assert_array_equal(again, y)
    assert not np.array_equal(other, y)


def test_dropout_rate_zero_in_training_is_identity():
    y, _, _ = run("dropout", [X], rate=0.0, training=True)
    np.testing.assert_array_equal(y, X)
