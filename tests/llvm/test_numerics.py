"""Numerics of the llvm backend (issue 8): NaN and ±Inf in the inputs come out where the reference executor puts
them (no fast-math, no maxnum that drops a NaN), and results across thread counts agree within rtol 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

import graphconv
from graphconv.network import Network
from graphconv.reference.executor import run_graph
from graphconv.spec import load_graph_text
from graphconv.weights import init_weights

SPEC = """network t() {
  input x: f32[N, 16, 8, 8]
  relu_ = x -> relu
  max_pool = x -> max_pool2d(2)
  max_pool_ceil = x -> max_pool2d(3, stride=2, padding=1, ceil_mode=true)
  conv_relu_pool = x -> conv2d(16, 3, padding=1) -> relu -> max_pool2d(2, stride=1)
  global_max = x -> global_max_pool
  global_avg = x -> global_avg_pool
  leaky = x -> leaky_relu
  clipped = x -> clip(min=-1, max=1)
  sig = x -> sigmoid
  avg_pool = x -> avg_pool2d(2)
  soft = x -> softmax(axis=1)
  elu_ = x -> elu
  head = x -> global_avg_pool -> flatten -> dense(3)
  residual = add(x -> conv2d(16, 1), x) -> relu
  output relu_, max_pool, max_pool_ceil, conv_relu_pool, global_max, global_avg, leaky, clipped, sig
  output avg_pool, soft, elu_, head, residual
}"""


def _input(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    flat = x.reshape(-1)
    spots = rng.choice(flat.size, 12, replace=False)
    flat[spots[:4]] = np.nan
    flat[spots[4:8]] = np.inf
    flat[spots[8:]] = -np.inf
    return x


@pytest.mark.parametrize("level", [0, 2, 3])
@pytest.mark.parametrize("threads", [1, 2])
def test_nan_and_infinity_propagate_as_in_the_reference(level, threads):
    g = load_graph_text(SPEC)
    w = init_weights(g, 0)
    model = graphconv.compile(Network(g, w), backend="llvm", opt_level=level, threads=threads)
    for seed in range(3):
        x = _input(seed)
        with np.errstate(invalid="ignore", over="ignore"):
            want = run_graph(g, {"x": x}, w, dtype="float32")
        got = model.run({"x": x})
        for name, ref in want.items():
            out = got[name]
            assert np.array_equal(np.isnan(out), np.isnan(ref)), f"{name}: NaN in other places"
            assert np.array_equal(np.isposinf(out), np.isposinf(ref)), f"{name}: +inf in other places"
            assert np.array_equal(np.isneginf(out), np.isneginf(ref)), f"{name}: -inf in other places"
            finite = np.isfinite(ref)
            np.testing.assert_allclose(out[finite], ref[finite], rtol=1e-4, atol=1e-5, err_msg=name)


def test_the_nan_cases_are_real():
    """The input really puts NaN and infinities into the outputs checked above (so the test checks something)."""
    g = load_graph_text(SPEC)
    with np.errstate(invalid="ignore", over="ignore"):
        want = run_graph(g, {"x": _input(0)}, init_weights(g, 0), dtype="float32")
    for name in ("relu_", "max_pool", "max_pool_ceil", "conv_relu_pool", "global_max", "avg_pool", "residual"):
        assert np.isnan(want[name]).any(), name
    assert np.isposinf(want["max_pool"]).any() and np.isneginf(want["relu_"]).sum() == 0


def test_thread_counts_agree_within_1e_5():
    net = graphconv.load("specs/resnet18.gc", size=64, num_classes=10, seed=0)
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    one = graphconv.compile(net, backend="llvm", threads=1).run({"image": x})["logits"]
    two = graphconv.compile(net, backend="llvm", threads=2).run({"image": x})["logits"]
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-5 * float(np.abs(one).max()))


def test_onnxruntime_differs_only_where_docs_onnx_md_says():
    """docs/onnx.md: onnxruntime's MaxPool skips a NaN its window also holds numbers with; every other op here
    propagates NaN and infinities as the reference does."""
    g = load_graph_text(SPEC)
    w = init_weights(g, 0)
    model = graphconv.compile(Network(g, w), backend="onnx", threads=1)
    differ = set()
    for seed in range(3):
        x = _input(seed)
        with np.errstate(invalid="ignore", over="ignore"):
            want = run_graph(g, {"x": x}, w, dtype="float32")
        got = model.run({"x": x})
        differ |= {name for name, ref in want.items()
                   if not (np.array_equal(np.isnan(got[name]), np.isnan(ref))
                           and np.array_equal(np.isinf(got[name]), np.isinf(ref)))}
    assert differ <= {"max_pool", "max_pool_ceil", "conv_relu_pool", "global_max"}
