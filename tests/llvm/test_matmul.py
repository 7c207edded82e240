"""Dense kernel against the reference: feature counts around the vector width, unit counts around the row block,
with and without bias, fused epilogues, batches that exercise every sample group."""

import numpy as np
import pytest

import graphconv
from graphconv.network import Network

from .helpers import add_op, check, graph_with_input, inputs_for, seeded_weights, single


@pytest.mark.parametrize("features", [1, 7, 16, 100, 1000])
@pytest.mark.parametrize("units", [1, 10, 33])
def test_dense(features, units):
    check(single("dense", (features,), units=units), levels=(0,))


@pytest.mark.parametrize("features,units", [(37, 5), (64, 8)])
def test_dense_no_bias(features, units):
    check(single("dense", (features,), units=units, bias=False), levels=(0,))


def test_dense_relu_fused():
    g, x = graph_with_input(shape=(50,))
    y = add_op(g, "fc", "dense", [x], units=21)
    g.set_output("y", add_op(g, "r", "relu", [y]))
    check(g, levels=(0, 2))


def test_dense_add_dense_sigmoid_fused():
    """At -O2 the add and the sigmoid become the second dense layer's epilogue, reading the first one's output."""
    g, x = graph_with_input(shape=(40,))
    a = add_op(g, "fc1", "dense", [x], units=19)
    c = add_op(g, "fc2", "dense", [x], units=19, bias=False)
    s = add_op(g, "sum", "add", [a, c])
    g.set_output("y", add_op(g, "sig", "sigmoid", [s]))
    check(g, levels=(0, 2))


def test_dense_chain_tanh_clip():
    """Two dense layers, each with a fused activation, the second reading the first's output."""
    g, x = graph_with_input(shape=(105,))
    y = add_op(g, "fc1", "dense", [x], units=17)
    y = add_op(g, "t", "tanh", [y])
    y = add_op(g, "fc2", "dense", [y], units=12)
    g.set_output("y", add_op(g, "c", "clip", [y], min=-0.3, max=0.4))
    check(g, levels=(0, 2))


@pytest.mark.parametrize("batch", [2, 4, 5, 7, 8, 9])
def test_dense_batches(batch):
    """Every combination of whole sample groups, a pair and a single sample; both thread counts."""
    check(single("dense", (77,), units=13), levels=(0,), batches=(batch,))


def test_dense_float64():
    check(single("dense", (29,), units=9), levels=(0,), dtype="float64", rtol=1e-10, atol=1e-12)


def test_dense_static_batch():
    """A graph without a symbolic batch dimension: the sample count is a constant in the kernel."""
    from graphconv.ir.graph import Graph, TensorType

    g = Graph("static")
    x = g.add_input("x", TensorType((3, 45)))
    g.set_output("y", add_op(g, "fc", "dense", [x], units=6))
    net = Network(g, seeded_weights(g))
    xs = {"x": np.random.default_rng(0).standard_normal((3, 45)).astype(np.float32)}
    want = xs["x"].astype(np.float64) @ net.weights["fc.weight"].T.astype(np.float64) + net.weights["fc.bias"]
    for t in (1, 2):
        got = graphconv.compile(net, backend="llvm", threads=t, opt_level=0).run(xs)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_dense_many_threads_few_units():
    """More threads than row blocks: idle threads and the partial block must not interfere."""
    g = single("dense", (33,), units=6)
    net = Network(g, seeded_weights(g))
    xs = inputs_for(g, 3)
    want = xs["x"].astype(np.float64) @ net.weights["layer.weight"].T.astype(np.float64) + net.weights["layer.bias"]
    got = graphconv.compile(net, backend="llvm", threads=5, opt_level=0).run(xs)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
