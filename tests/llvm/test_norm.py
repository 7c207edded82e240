"""Normalization kernels against the reference: softmax and log_softmax along every axis, lrn."""

import numpy as np
import pytest

import graphconv
from graphconv.network import Network

from .helpers import add_op, check, graph_with_input, single

SHAPES = [(37,), (16,), (5,), (4, 6, 5), (3, 2, 40), (20, 3, 3), (2, 17, 33)]


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_softmax_axes(op, shape):
    for axis in [*range(1, len(shape) + 1), -1]:
        check(single(op, shape, axis=axis), levels=(0,), threads=(2,) if axis != 1 else (1, 2))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_float64(op):
    check(single(op, (3, 4, 21), axis=3), levels=(0,), dtype="float64", rtol=1e-10, atol=1e-12)
    check(single(op, (9, 4, 5), axis=1), levels=(0,), dtype="float64", rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_large_logits(op):
    """Max subtraction: logits around ±1000 (exp would overflow without it)."""
    rng = np.random.default_rng(5)
    m = graphconv.compile(Network(single(op, (3, 40), axis=-1), {}), backend="llvm", threads=2, opt_level=0)
    xs = (rng.standard_normal((2, 3, 40)) * 1000).astype(np.float32)
    got = m.run({"x": xs})["y"]
    x64 = xs.astype(np.float64)
    sh = x64 - x64.max(axis=-1, keepdims=True)
    want = sh - np.log(np.exp(sh).sum(axis=-1, keepdims=True))
    if op == "softmax":
        want = np.exp(want)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-4, atol=1e-5)
    if op == "softmax":
        np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-5)


def test_softmax_batch_axis_is_rejected():
    """The op itself refuses axis 0 (samples stay independent), so no kernel needs it."""
    from graphconv.errors import OpError

    with pytest.raises(OpError):
        single("softmax", (3, 4), axis=0)
    with pytest.raises(OpError):
        single("log_softmax", (3, 4), axis=-3)


def test_softmax_after_dense_at_every_level():
    g, x = graph_with_input(shape=(3, 4, 4))
    y = add_op(g, "r", "relu", [x])
    y = add_op(g, "f", "flatten", [y])
    g.set_output("y", add_op(g, "s", "softmax", [y]))
    check(g)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_lrn_sizes(size):
    check(single("lrn", (7, 5, 6), size=size, alpha=0.3, beta=0.75, bias=1.5), levels=(0,))


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.6, -0.3])
def test_lrn_betas(beta):
    check(single("lrn", (9, 3, 7), size=3, alpha=0.5, beta=beta, bias=2.0), levels=(0,))


def test_lrn_wide_and_defaults():
    check(single("lrn", (20, 17, 19)), levels=(0,))
    check(single("lrn", (4, 2, 2), size=9, alpha=1.0, beta=0.75, bias=0.5), levels=(0,))
    check(single("lrn", (32, 4, 4), size=5, alpha=0.01, beta=0.75, bias=1.0), levels=(0,), dtype="float64")
