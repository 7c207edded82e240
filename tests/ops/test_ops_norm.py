"""batchnorm and lrn."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from graphconv.ops import REGISTRY

from .helpers import build, close, op_error, ort_run, randn, run, tt


def bn_stats(c, seed=0):
    rng = np.random.default_rng(seed)
    return dict(weight=rng.uniform(0.5, 2, c), bias=rng.normal(size=c), running_mean=rng.normal(size=c),
                running_var=rng.uniform(0.5, 2, c))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 6)])
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_batchnorm_inference_matches_onnxruntime(shape, eps):
    x = randn(*shape, seed=12)
    stats = bn_stats(shape[1])
    y, built, ps = run("batchnorm", [x], params=stats, eps=eps)
    ref = ort_run("BatchNormalization", [x, ps["weight"], ps["bias"], ps["running_mean"], ps["running_var"]],
                  dict(epsilon=eps))
    close(y, ref)
    assert built.out == tt(*shape[1:])


def test_batchnorm_without_affine():
    x = randn(2, 3, 4, 4, seed=13)
    stats = bn_stats(3)
    del stats["weight"], stats["bias"]
    y, built, ps = run("batchnorm", [x], params=stats, affine=False)
    assert set(ps) == {"running_mean", "running_var"}
    ref = ort_run("BatchNormalization", [x, np.ones(3, np.float32), np.zeros(3, np.float32), ps["running_mean"],
                                         ps["running_var"]], dict(epsilon=1e-5))
    close(y, ref)


def loop_batchnorm_training(x, w, b, eps):
    """Per channel: the batch mean and the biased variance over N (and H, W), one channel at a time."""
    y = np.empty(x.shape)
    for ch in range(x.shape[1]):
        vals = x[:, ch].astype(np.float64).ravel()
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / len(vals)
        y[:, ch] = (x[:, ch] - mean) / math.sqrt(var + eps) * w[ch] + b[ch]
    return y


@pytest.mark.parametrize("shape", [(3, 2, 3, 4), (5, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_training_uses_batch_statistics(shape, dtype):
    x = randn(*shape, seed=14, dtype=dtype) * 3 + 1
    stats = bn_stats(shape[1])
    y, _, ps = run("batchnorm", [x], params=stats, training=True)
    assert y.dtype == dtype
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else {}
    close(y, loop_batchnorm_training(x, ps["weight"], ps["bias"], 1e-5), **tol)


def test_frozen_batchnorm_uses_running_statistics_in_training():
    x = randn(3, 2, 3, 3, seed=15)
    stats = bn_stats(2)
    frozen, built, _ = run("batchnorm", [x], params=stats, training=True, frozen=True)
    inference, _, _ = run("batchnorm", [x], params=stats)
    np.testing.assert_array_equal(frozen, inference)
    assert built.attrs["frozen"] is True


def test_batchnorm_by_hand_and_float64():
    x = np.array([[[[1.0]], [[5.0]]]])
    y, _, _ = run("batchnorm", [x], params=dict(weight=[2.0, 1.0], bias=[0.0, 1.0], running_mean=[1.0, 1.0],
                                                running_var=[1.0, 4.0]), eps=0.0001)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.ravel(), [0.0, 1 + 4 / math.sqrt(4.0001)], rtol=1e-12)


def test_batchnorm_params():
    built = build("batchnorm", [tt(16, 8, 8)])
    assert [(p.name, p.shape, p.role, p.init.name) for p in built.params] == [
        ("weight", (16,), "trainable", "ones"), ("bias", (16,), "trainable", "zeros"),
        ("running_mean", (16,), "buffer", "zeros"), ("running_var", (16,), "buffer", "ones")]
    assert built.attrs == {"eps": 1e-5, "momentum": 0.1, "affine": True, "frozen": False}
    plain = build("batchnorm", [tt(16)], affine=False)
    assert [p.name for p in plain.params] == ["running_mean", "running_var"]
    assert REGISTRY["batchnorm"].fusion == "broadcast"
    assert built.op.macs(built.attrs, [tt(16, 8, 8)], built.out) == 0


@pytest.mark.parametrize("given, attr, text", [
    (dict(eps=0), "eps", "> 0"),
    (dict(momentum=1.5), "momentum", "<= 1"),
    (dict(momentum=-0.1), "momentum", ">= 0"),
    (dict(affine="yes"), "affine", "true or false"),
    (dict(init="ones"), "init", "batchnorm has no attribute 'init'"),
])
def test_batchnorm_attribute_errors(given, attr, text):
    e = op_error("batchnorm", [tt(4, 2, 2)], **given)
    assert e.attr == attr and re.search(text, e.message), e.message


def test_batchnorm_rank():
    e = op_error("batchnorm", [tt(4, 2)])
    assert "rank-4 or 2" in e.message and "f32[N, 4, 2]" in e.message and e.arg == 0
    assert "f32[N]" in op_error("batchnorm", [tt()]).message


# -- lrn --------------------------------------------------------------------------------------------------------

def loop_lrn(x, size, alpha, beta, bias):
    """ONNX LRN: channels c - floor((size-1)/2) .. c + ceil((size-1)/2), clipped to the tensor."""
    n, c, h, w = x.shape
    y = np.empty(x.shape)
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    for b, ch, i, j in itertools.product(range(n), range(c), range(h), range(w)):
        sq = sum(float(x[b, k, i, j]) ** 2 for k in range(max(0, ch - lo), min(c, ch + hi + 1)))
        y[b, ch, i, j] = x[b, ch, i, j] / (bias + alpha / size * sq) ** beta
    return y


@pytest.mark.parametrize("size, alpha, beta, bias", [
    (5, 1e-4, 0.75, 1.0), (3, 0.5, 0.75, 2.0), (4, 1.0, 0.5, 1.0), (1, 2.0, 1.0, 0.5), (2, 1.0, 2.0, 1.0),
    (9, 1.0, 0.75, 1.0),
])
def test_lrn(size, alpha, beta, bias):
    x = randn(2, 6, 3, 3, seed=16) * 2
    y, built, _ = run("lrn", [x], size=size, alpha=alpha, beta=beta, bias=bias)
    assert built.attrs["bias"] == bias  # a number, not a parameter flag
    # onnxruntime implements odd sizes only (and onnx's ReferenceEvaluator LRN loops over the batch instead of the
    # channels), so even sizes are checked against the loop implementation alone
    if size % 2:
        close(y, ort_run("LRN", [x], dict(size=size, alpha=alpha, beta=beta, bias=bias)))
    close(y, loop_lrn(x, size, alpha, beta, bias))
    y64, _, _ = run("lrn", [x.astype(np.float64)], size=size, alpha=alpha, beta=beta, bias=bias)
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, loop_lrn(x.astype(np.float64), size, alpha, beta, bias), rtol=1e-12)


def test_lrn_even_size_window_is_onnx_not_pytorch():
    # size 2: channel c sums c and c+1 (ONNX); PyTorch would sum c-1 and c
    x = np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 3, 1, 1)
    y, _, _ = run("lrn", [x], size=2, alpha=2.0, beta=1.0, bias=1.0)
    np.testing.assert_allclose(y.ravel(), [1 / (1 + 5), 2 / (1 + 13), 3 / (1 + 9)], rtol=1e-6)


def test_lrn_shape_and_errors():
    built = build("lrn", [tt(96, 55, 55)])
    assert built.out == tt(96, 55, 55) and built.params == [] and built.op.fusion == "opaque"
    assert built.attrs == {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}
    for given, attr in [(dict(size=0), "size"), (dict(alpha=-1.0), "alpha"), (dict(bias=0.0), "bias"),
                        (dict(beta="x"), "beta")]:
        assert op_error("lrn", [tt(8, 4, 4)], **given).attr == attr
    assert "rank-4" in op_error("lrn", [tt(8)]).message
