"""Pooling: max/avg/lp sliding-window pools and the global pools, against onnxruntime and loop implementations that
follow PyTorch's CPU kernels."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from graphconv.ops import REGISTRY
from graphconv.ops.schema import Window

from .helpers import build, close, op_error, ort_run, randn, run, tt

X = randn(2, 3, 7, 8, seed=9)


def torch_out_size(size, k, pad_lo, pad_hi, s, d, ceil):
    """PyTorch's pooling_output_shape, with separate pads on each side."""
    out = (size + pad_lo + pad_hi - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + pad_lo:
        out -= 1
    return out


def loop_pool(x, kind, kernel, stride, pads, ceil, dilation=(1, 1), count_include_pad=True, p=2.0):
    """One output element at a time, as PyTorch's CPU max/avg pool kernels (and |x|^p sums for lp)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    top, left, bottom, right = pads
    oh = torch_out_size(h, kh, top, bottom, sh, dh, ceil)
    ow = torch_out_size(w, kw, left, right, sw, dw, ceil)
    y = np.zeros((n, c, oh, ow))
    for b, ch, i, j in itertools.product(range(n), range(c), range(oh), range(ow)):
        hs, ws = i * sh - top, j * sw - left
        if kind == "max":
            vals = [x[b, ch, hs + a * dh, ws + e * dw] for a in range(kh) for e in range(kw)
                    if 0 <= hs + a * dh < h and 0 <= ws + e * dw < w]
            y[b, ch, i, j] = max(vals)
            continue
        he, we = min(hs + kh, h + bottom), min(ws + kw, w + right)
        pool_size = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
        window = x[b, ch, hs:he, ws:we].astype(np.float64)
        if kind == "avg":
            y[b, ch, i, j] = window.sum() / (pool_size if count_include_pad else (he - hs) * (we - ws))
        else:
            y[b, ch, i, j] = (np.abs(window) ** p).sum() ** (1 / p)
    return y


GRID = list(itertools.product([2, 3, (3, 2)], [None, 1, 2, (2, 3)], [0, 1, [1, 0, 0, 1]], [False, True]))


def _onnx_attrs(a, ceil):
    return dict(kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=list(a["padding"]),
                ceil_mode=int(ceil))


@pytest.mark.parametrize("kernel, stride, padding, ceil", GRID)
@pytest.mark.parametrize("dilation", [1, 2])
def test_max_pool(kernel, stride, padding, ceil, dilation):
    y, built, _ = run("max_pool2d", [X], kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                      ceil_mode=ceil)
    a = built.attrs
    close(y, ort_run("MaxPool", [X], dict(_onnx_attrs(a, ceil), dilations=list(a["dilation"]))))
    close(y, loop_pool(X, "max", a["kernel"], a["stride"], a["padding"], ceil, a["dilation"]))


@pytest.mark.parametrize("kernel, stride, padding, ceil", GRID)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool(kernel, stride, padding, ceil, count_include_pad):
    y, built, _ = run("avg_pool2d", [X], kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil,
                      count_include_pad=count_include_pad)
    a = built.attrs
    close(y, ort_run("AveragePool", [X], dict(_onnx_attrs(a, ceil), count_include_pad=int(count_include_pad))))
    close(y, loop_pool(X, "avg", a["kernel"], a["stride"], a["padding"], ceil,
                       count_include_pad=count_include_pad))


@pytest.mark.parametrize("kernel, stride, padding, ceil", GRID)
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool_matches_onnxruntime(kernel, stride, padding, ceil, p):
    y, built, _ = run("lp_pool2d", [X], kernel=kernel, p=float(p), stride=stride, padding=padding, ceil_mode=ceil)
    close(y, ort_run("LpPool", [X], dict(_onnx_attrs(built.attrs, ceil), p=p)))


@pytest.mark.parametrize("p", [0.5, 1.5, 4.0])
def test_lp_pool_fractional_p_matches_loop(p):
    y, built, _ = run("lp_pool2d", [X], kernel=3, p=p, stride=2, padding=1, ceil_mode=True)
    a = built.attrs
    close(y, loop_pool(X, "lp", a["kernel"], a["stride"], a["padding"], True, p=p))


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d", "lp_pool2d"])
def test_float64(name):
    x64 = X.astype(np.float64)
    y, built, _ = run(name, [x64], kernel=3, stride=2, padding=1, ceil_mode=True)
    assert y.dtype == np.float64 and built.out.dtype == "float64"
    kind = name.split("_")[0]
    a = built.attrs
    np.testing.assert_allclose(y, loop_pool(x64, kind, a["kernel"], a["stride"], a["padding"], True),
                               rtol=1e-12, atol=1e-12)


def test_avg_pool_ceil_mode_divisor_by_hand():
    # one row 1..6, kernel 1x3, stride 2, one column of zero padding each side, ceil_mode: the padded row is
    # [0 1 2 3 4 5 6 0]; the four windows start at 0, 2, 4, 6 and the last runs one past the padded input
    x = np.arange(1.0, 7.0, dtype=np.float32).reshape(1, 1, 1, 6)
    given = dict(kernel=(1, 3), stride=2, padding=[0, 1], ceil_mode=True)
    y, built, _ = run("avg_pool2d", [x], **given)
    assert built.out == tt(1, 1, 4)
    # the divisor counts padding but not the overhang: 3, 3, 3 and 2 (= the 6 and the right padding)
    np.testing.assert_array_equal(y[0, 0, 0], [1.0, 3.0, 5.0, 3.0])
    y, _, _ = run("avg_pool2d", [x], count_include_pad=False, **given)
    np.testing.assert_array_equal(y[0, 0, 0], [1.5, 3.0, 5.0, 6.0])
    y, _, _ = run("max_pool2d", [-x], **given)  # the padding never wins, even over negative values
    np.testing.assert_array_equal(y[0, 0, 0], [-1.0, -2.0, -4.0, -6.0])
    y, _, _ = run("lp_pool2d", [x], **given)
    np.testing.assert_allclose(y[0, 0, 0], np.sqrt([1 + 4, 4 + 9 + 16, 16 + 25 + 36, 36]), rtol=1e-6)


def test_max_pool_by_hand():
    x = np.arange(16.0, dtype=np.float32).reshape(1, 1, 4, 4)
    y, built, _ = run("max_pool2d", [x], kernel=2)
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])
    assert built.attrs["stride"] == (2, 2)
    y, _, _ = run("max_pool2d", [x], kernel=2, stride=1, dilation=2)
    np.testing.assert_array_equal(y[0, 0], [[10, 11], [14, 15]])


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("size, pads", [(7, (1, 1, 1, 1)), (8, (0, 0, 1, 1))])
def test_same_padding_matches_onnx_same_upper(name, size, pads):
    x = randn(1, 2, size, size, seed=10)
    y, built, _ = run(name, [x], kernel=3, stride=2, padding="same")
    assert built.attrs["padding"] == pads and built.out == tt(2, 4, 4)
    extra = {"count_include_pad": 1} if name == "avg_pool2d" else {}
    onnx_op = "MaxPool" if name == "max_pool2d" else "AveragePool"
    close(y, ort_run(onnx_op, [x], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER", **extra)))


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d", "lp_pool2d"])
@pytest.mark.parametrize("given, in_hw, out_hw", [
    (dict(kernel=2), (8, 8), (4, 4)),
    (dict(kernel=3, stride=2), (7, 7), (3, 3)),
    (dict(kernel=3, stride=2, ceil_mode=True), (8, 8), (4, 4)),
    (dict(kernel=3, stride=2), (8, 8), (3, 3)),
    (dict(kernel=3, stride=2, padding=1), (112, 112), (56, 56)),
    (dict(kernel=(2, 3), stride=(1, 2), padding=[1, 0, 0, 1]), (5, 6), (5, 3)),
    (dict(kernel=2, stride=2, padding=1, ceil_mode=True), (5, 5), (3, 3)),  # a window may not start in padding
    (dict(kernel=3, padding="same"), (7, 5), (3, 2)),
])
def test_shapes(name, given, in_hw, out_hw):
    built = build(name, [tt(16, *in_hw)], **given)
    assert built.out == tt(16, *out_hw)


def test_max_pool_dilated_shape_and_window():
    built = build("max_pool2d", [tt(4, 10, 10)], kernel=3, dilation=2)
    assert built.out == tt(4, 2, 2)
    assert built.op.window(built.attrs) == Window((5, 5), (3, 3))
    avg = build("avg_pool2d", [tt(4, 10, 10)], kernel=(2, 3), stride=1)
    assert avg.op.window(avg.attrs) == Window((2, 3), (1, 1))


@pytest.mark.parametrize("name, given, attr, text", [
    ("max_pool2d", dict(kernel=3, padding=2), "padding", r"padding \[2, 2, 2, 2\] is more than half the 3×3 window"),
    ("max_pool2d", dict(kernel=3, dilation=2, padding=3), "padding", "more than half the 5×5 window"),
    ("avg_pool2d", dict(kernel=3, padding=[0, 0, 0, 2]), "padding", r"at most 1 rows and 1 columns"),
    ("lp_pool2d", dict(kernel=(4, 2), padding=[2, 2]), "padding", "more than half the 4×2 window"),
    ("avg_pool2d", dict(kernel=2, padding="full"), "padding", "expected same, valid"),
    ("max_pool2d", dict(), "kernel", "missing required attribute 'kernel'"),
    ("max_pool2d", dict(kernel=0), "kernel", ">= 1"),
    ("max_pool2d", dict(kernel=2, stride=[1, 2, 3]), "stride", "a list of 2 integers"),
    ("avg_pool2d", dict(kernel=2, dilation=2), "dilation", "avg_pool2d has no attribute 'dilation'"),
    ("lp_pool2d", dict(kernel=2, p=0), "p", "> 0"),
    ("lp_pool2d", dict(kernel=2, count_include_pad=False), "count_include_pad", "has no attribute"),
    ("avg_pool2d", dict(kernel=2, ceil_mode=1), "ceil_mode", "true or false"),
])
def test_attribute_errors(name, given, attr, text):
    e = op_error(name, [tt(4, 8, 8)], **given)
    assert e.attr == attr and re.search(text, e.message), e.message


def test_padding_up_to_half_the_window_is_fine():
    assert build("max_pool2d", [tt(1, 5, 5)], kernel=2, padding=1).out == tt(1, 3, 3)
    # the limit is half the *effective* (dilated) window: 5 // 2 = 2 for kernel 3, dilation 2
    assert build("max_pool2d", [tt(1, 5, 5)], kernel=3, dilation=2, padding=2, stride=1).out == tt(1, 5, 5)


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d", "lp_pool2d"])
def test_window_larger_than_input(name):
    e = op_error(name, [tt(2, 3, 3)], kernel=5)
    assert "5×5 window does not fit the padded 3×3 input f32[N, 2, 3, 3]" in e.message
    e = op_error(name, [tt(2, 3)], kernel=2)
    assert "rank-4" in e.message and "f32[N, 2, 3]" in e.message and e.arg == 0


def test_positional_order():
    assert [a.name for a in REGISTRY["max_pool2d"].attrs] == ["kernel", "stride", "padding", "dilation", "ceil_mode"]
    assert [a.name for a in REGISTRY["avg_pool2d"].attrs] == ["kernel", "stride", "padding", "ceil_mode",
                                                             "count_include_pad"]
    assert [a.name for a in REGISTRY["lp_pool2d"].attrs] == ["kernel", "p", "stride", "padding", "ceil_mode"]
    for name in ("max_pool2d", "avg_pool2d", "lp_pool2d"):
        assert REGISTRY[name].fusion == "out_fusable"


# -- global pools -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, onnx_op, fn", [("global_avg_pool", "GlobalAveragePool", np.mean),
                                               ("global_max_pool", "GlobalMaxPool", np.max)])
def test_global_pools(name, onnx_op, fn):
    y, built, _ = run(name, [X])
    assert built.out == tt(3, 1, 1)
    close(y, ort_run(onnx_op, [X]))
    y64, _, _ = run(name, [X.astype(np.float64)])
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64[1, 2, 0, 0], fn(X[1, 2].astype(np.float64)), rtol=1e-12)
    assert built.op.window(built.attrs) == Window(global_=True)
    assert built.op.fusion == "reduction"
    e = op_error(name, [tt(3, 7)])
    assert "rank-4" in e.message and e.arg == 0
