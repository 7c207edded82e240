"""Helpers of the pass tests: build small graphs, run one pass, compare before and after on the reference
executor."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

from graphconv.ir.graph import Graph, TensorType
from graphconv.ir.verify import verify
from graphconv.ops.build import add_op
from graphconv.passes.base import PassResult, Program
from graphconv.reference.executor import run_graph
from graphconv.weights import init_weights

RTOL, ATOL = 1e-4, 1e-5
# every zoo spec (and its variants) at a small input size, as the ONNX zoo tests choose them: key -> (spec, parameters)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "onnx"))
from test_export_zoo import SPECS, ZOO  # noqa: E402


def zoo_graph(key: str) -> Graph:
    """The graph of a zoo variant (no weights)."""
    from graphconv.spec import load_graph

    spec, params = ZOO[key]
    return load_graph(str(SPECS / f"{spec}.gc"), params)


def zoo_specs_covered() -> bool:
    return {p.stem for p in SPECS.glob("*.gc")} == {spec for spec, _ in ZOO.values()}


def graph_with_input(name: str = "g", shape=(3, 8, 8), dtype: str = "float32"):
    g = Graph(name)
    return g, g.add_input("x", TensorType(("N", *shape), dtype))


def program(g: Graph, *, training: bool = False, seed: int = 0, weights: dict | None = None) -> Program:
    """A program with seeded weights; batchnorm statistics and affine parameters are made non-trivial so folding
    is really exercised."""
    if weights is not None:
        return Program(g, dict(weights), training)
    w = init_weights(g, seed)
    rng = np.random.default_rng(seed + 1)
    for name, p in g.params.items():
        if p.value.type.rank == 1 and p.data is None:  # batchnorm statistics and scales, biases
            lo, hi = (0.5, 2.0) if name.endswith(("running_var", ".weight")) else (-1.0, 1.0)
            w[name] = rng.uniform(lo, hi, w[name].shape).astype(w[name].dtype)
    return Program(g, w, training)


def run_pass(p, prog: Program) -> tuple[Program, PassResult]:
    """Run pass `p` on a copy of `prog`; the copy must verify. Returns (new program, result)."""
    new = Program(copy.deepcopy(prog.graph), dict(prog.weights), prog.training)
    result = p.run(new)
    verify(new.graph)
    return new, result


def outputs(prog: Program, batch: int = 2, seed: int = 0, dtype: str = "float32") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = {v.name: rng.standard_normal(v.type.concrete(batch)).astype(dtype) for v in prog.graph.inputs}
    return run_graph(prog.graph, xs, prog.weights, dtype=dtype)


def assert_same_function(before: Program, after: Program, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Before and after agree on the reference executor (float32, rtol 1e-4) at batch 1 and 3."""
    for batch in (1, 3):
        a, b = outputs(before, batch), outputs(after, batch)
        assert list(a) == list(b)
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=atol, err_msg=k)


def ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


__all__ = ["SPECS", "ZOO", "add_op", "assert_same_function", "graph_with_input", "ops", "outputs", "program",
           "run_pass", "zoo_graph", "zoo_specs_covered"]
