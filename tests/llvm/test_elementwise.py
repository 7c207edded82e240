"""Elementwise kernels against the reference: activations, broadcasting binaries, batchnorm, epilogues."""

import pytest

from .helpers import add_op, check, graph_with_input, single

UNARY = [("relu", {}), ("leaky_relu", {"alpha": 0.2}), ("elu", {"alpha": 0.7}), ("selu", {}), ("sigmoid", {}),
         ("tanh", {}), ("clip", {"min": -0.5, "max": 0.7}), ("clip", {"max": 0.1}), ("identity", {}),
         ("dropout", {"rate": 0.3})]


@pytest.mark.parametrize("op,attrs", UNARY, ids=[f"{o}-{i}" for i, (o, _) in enumerate(UNARY)])
def test_unary(op, attrs):
    check(single(op, (5, 7, 3), **attrs), levels=(0,))


@pytest.mark.parametrize("op", ["add", "mul", "sub", "div"])
def test_binary_same_shape(op):
    check(single(op, (4, 6, 5), inputs=2), levels=(0,))


@pytest.mark.parametrize("op,shapes", [
    ("add", [(4, 6, 5), (4, 1, 1)]), ("mul", [(4, 6, 5), (1, 6, 1)]), ("sub", [(1, 6, 5), (4, 6, 5)]),
    ("div", [(4, 6, 17), (1, 1, 17)]), ("add", [(4, 6, 17), (4, 6, 1)]),
])
def test_binary_broadcast(op, shapes):
    from graphconv.ir.graph import Graph, TensorType
    g = Graph(op)
    xs = [g.add_input(f"x{i}", TensorType(("N", *s))) for i, s in enumerate(shapes)]
    g.set_output("y", add_op(g, "layer", op, xs))
    check(g, levels=(0,))


def test_add_three_inputs():
    check(single("add", (3, 5, 5), inputs=3), levels=(0,))


@pytest.mark.parametrize("shape", [(16, 5, 5), (10,), (32, 3, 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm(shape, affine):
    check(single("batchnorm", shape, affine=affine, eps=1e-3), levels=(0,))


def test_fused_epilogue_chain():
    """A chain the optimizer fuses at -O2/-O3 and runs in place at -O0."""
    g, x = graph_with_input(shape=(16, 6, 6))
    y = add_op(g, "bn", "batchnorm", [x])
    y = add_op(g, "r", "relu", [y])
    y = add_op(g, "a", "add", [y, x])
    y = add_op(g, "s", "sigmoid", [y])
    g.set_output("y", y)
    check(g)


@pytest.mark.parametrize("dtype,tol", [("float32", 4e-7), ("float64", 2e-15)])
@pytest.mark.parametrize("op", ["sigmoid", "tanh", "elu", "selu"])
def test_transcendental_accuracy_over_the_whole_range(op, dtype, tol):
    """The inline exp/expm1/tanh: relative error (to max(1, |y|)) over [-100, 100] and densely near 0, with exact
    saturation far out."""
    import numpy as np

    import graphconv
    from graphconv.ir.graph import Graph, TensorType
    from graphconv.network import Network
    from graphconv.reference.executor import run_graph

    x = np.concatenate([np.linspace(-100, 100, 40001), np.linspace(-3, 3, 40001), np.geomspace(1e-30, 1e-2, 999),
                        -np.geomspace(1e-30, 1e-2, 999), [0.0]]).astype(dtype)[None]
    g = Graph(op)
    v = g.add_input("x", TensorType(("N", x.shape[1]), dtype))
    g.set_output("y", add_op(g, "f", op, [v]))
    model = graphconv.compile(Network(g, {}), backend="llvm", dtype=dtype, threads=1, opt_level=0)
    got = model(x)
    want = run_graph(g, {"x": x.astype(np.float64)}, {}, dtype="float64")["y"]
    err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    assert err.max() <= tol, (float(err.max()), float(x[0, err.argmax()]))
    small = np.abs(x[0]) < 1e-2  # no cancellation near 0: relative error stays small there too
    rel = np.abs(got[0, small] - want[0, small]) / np.maximum(np.abs(want[0, small]), 1e-300)
    assert rel.max() <= 8 * tol
