"""Helpers for the LLVM backend's tests: build small graphs, compile them, compare with the reference executor.

    g, x = graph_with_input(shape=(16, 9, 9))
    y = add_op(g, "c", "conv2d", [x], out_channels=32, kernel=3)
    g.set_output("y", y)
    check(g)          # every batch size, thread count and optimization level against the reference
"""

from __future__ import annotations

import numpy as np

import graphconv
from graphconv.ir.graph import Graph, TensorType
from graphconv.network import Network
from graphconv.ops.build import add_op  # noqa: F401 - re-exported for the tests
from graphconv.reference.executor import run_graph
from graphconv.weights import init_weights

RTOL, ATOL = 1e-4, 1e-5


def graph_with_input(name: str = "g", shape=(3, 8, 8), dtype: str = "float32"):
    g = Graph(name)
    return g, g.add_input("x", TensorType(("N", *shape), dtype))


def seeded_weights(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Initialized weights with non-trivial batchnorm statistics and biases (so folding and bias code are really
    exercised)."""
    w = init_weights(g, seed)
    rng = np.random.default_rng(seed + 1)
    for name, p in g.params.items():
        if p.value.type.rank == 1 and p.data is None:
            lo, hi = (0.5, 2.0) if name.endswith(("running_var", ".weight")) else (-1.0, 1.0)
            w[name] = rng.uniform(lo, hi, w[name].shape).astype(w[name].dtype)
    return w


def inputs_for(g: Graph, batch: int, seed: int = 0, dtype: str = "float32") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(v.type.concrete(batch)).astype(dtype) for v in g.inputs}


def check(g: Graph, *, weights: dict | None = None, batches=(1, 3), threads=(1, 2), levels=(0, 2, 3),
          dtype: str = "float32", rtol: float = RTOL, atol: float = ATOL, seed: int = 0) -> None:
    """Compile `g` with the llvm backend for each thread count and optimization level and compare every output
    with the reference executor (float64 reference, cast) at each batch size."""
    net = Network(g, weights if weights is not None else seeded_weights(g, seed))
    for level in levels:
        for t in threads:
            model = graphconv.compile(net, backend="llvm", threads=t, opt_level=level, dtype=dtype)
            for batch in batches:
                xs = inputs_for(g, batch, seed + batch, dtype)
                ref = run_graph(g, {k: v.astype(np.float64) for k, v in xs.items()}, net.weights, dtype="float64")
                got = model.run(xs)
                assert set(got) == set(ref)
                for name in ref:
                    want = ref[name].astype(dtype)
                    assert got[name].shape == want.shape, (name, got[name].shape, want.shape)
                    np.testing.assert_allclose(got[name], want, rtol=rtol, atol=atol,
                                               err_msg=f"output {name}, -O{level}, threads={t}, batch={batch}")


def single(op: str, shape=(16, 8, 8), inputs: int = 1, **attrs) -> Graph:
    """A graph of one op on `inputs` inputs of `shape` (after the batch dimension)."""
    g = Graph(op)
    xs = [g.add_input(f"x{i}" if inputs > 1 else "x", TensorType(("N", *shape))) for i in range(inputs)]
    g.set_output("y", add_op(g, "layer", op, xs, **attrs))
    return g
