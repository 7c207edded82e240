"""upsample: nearest and bilinear (both align_corners), by scale or by size."""

from __future__ import annotations

import re

import numpy as np
import pytest

from graphconv.ops.schema import Window

from .helpers import build, close, op_error, ort_run, randn, run, tt

X = randn(2, 3, 5, 4, seed=17)


def ort_resize(x, size, mode, align_corners, scales=None):
    """onnxruntime Resize with our semantics; by output sizes, or by `scales` when given."""
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    if mode == "bilinear":
        attrs = {"mode": "linear", "coordinate_transformation_mode": "align_corners" if align_corners else "half_pixel"}
    if scales is not None:
        return ort_run("Resize", [x, None, np.array([1, 1, *scales], np.float32)], attrs)
    sizes = np.array([*x.shape[:2], *size], np.int64)
    return ort_run("Resize", [x, None, None, sizes], attrs)


def torch_bilinear_loop(x, oh, ow, align_corners):
    """PyTorch's upsample_bilinear2d CPU kernel, one output pixel at a time."""

    def source(i, in_n, out_n):
        if align_corners:
            src = i * (in_n - 1) / (out_n - 1) if out_n > 1 else 0.0
        else:
            src = max((i + 0.5) * in_n / out_n - 0.5, 0.0)
        i0 = int(src)
        i1 = i0 + (1 if i0 < in_n - 1 else 0)
        return i0, i1, src - i0

    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        h0, h1, lh = source(i, h, oh)
        for j in range(ow):
            w0, w1, lw = source(j, w, ow)
            y[:, :, i, j] = ((1 - lh) * ((1 - lw) * x[:, :, h0, w0] + lw * x[:, :, h0, w1])
                             + lh * ((1 - lw) * x[:, :, h1, w0] + lw * x[:, :, h1, w1]))
    return y


@pytest.mark.parametrize("mode, align", [("nearest", False), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("given", [dict(scale=2), dict(scale=(3, 1)), dict(scale=(1, 4)), dict(size=(10, 8)),
                                   dict(size=(7, 9)), dict(size=(3, 2)), dict(size=(5, 4))])
def test_matches_onnxruntime_and_loop(mode, align, given):
    y, built, _ = run("upsample", [X], mode=mode, align_corners=align, **given)
    size = built.attrs["size"]
    assert built.out == tt(3, *size)
    close(y, ort_resize(X, size, mode, align))
    if "scale" in given:
        close(y, ort_resize(X, size, mode, align, scales=built.attrs["scale"]))
    if mode == "bilinear":
        close(y, torch_bilinear_loop(X, *size, align))
    else:  # PyTorch 'nearest': source index floor(i * in / out)
        rows = [i * 5 // size[0] for i in range(size[0])]
        cols = [j * 4 // size[1] for j in range(size[1])]
        np.testing.assert_array_equal(y, X[:, :, rows][:, :, :, cols])


@pytest.mark.parametrize("mode, align", [("nearest", False), ("bilinear", False), ("bilinear", True)])
def test_float64(mode, align):
    x = X.astype(np.float64)
    y, built, _ = run("upsample", [x], size=(7, 9), mode=mode, align_corners=align)
    assert y.dtype == np.float64 and built.out.dtype == "float64"
    if mode == "bilinear":
        np.testing.assert_allclose(y, torch_bilinear_loop(x, 7, 9, align), rtol=1e-12, atol=1e-12)


def test_by_hand():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=np.float32)
    y, _, _ = run("upsample", [x], scale=2)
    np.testing.assert_array_equal(y[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    row = np.array([[[[0.0, 1.0]]]], dtype=np.float32)
    y, _, _ = run("upsample", [row], scale=(1, 2), mode="bilinear")
    np.testing.assert_array_equal(y[0, 0, 0], [0.0, 0.25, 0.75, 1.0])  # half-pixel centres, clamped at the edges
    y, _, _ = run("upsample", [row], size=(1, 3), mode="bilinear", align_corners=True)
    np.testing.assert_array_equal(y[0, 0, 0], [0.0, 0.5, 1.0])  # the corners map onto each other
    y, _, _ = run("upsample", [np.arange(5.0, dtype=np.float32).reshape(1, 1, 1, 5)], size=(1, 7))
    np.testing.assert_array_equal(y[0, 0, 0], [0, 0, 1, 2, 2, 3, 4])  # floor(i * 5 / 7)


def test_resolved_attributes_and_window():
    built = build("upsample", [tt(8, 4, 6)], scale=(2, 3))
    assert built.attrs == {"scale": (2, 3), "size": (8, 18), "mode": "nearest", "align_corners": False}
    assert built.op.window(built.attrs) == Window((1, 1), (1, 1), scale=(2.0, 3.0))
    by_size = build("upsample", [tt(8, 4, 6)], size=(6, 3), mode="bilinear")
    assert by_size.attrs["scale"] == (1.5, 0.5) and by_size.out == tt(8, 6, 3)
    assert by_size.op.window(by_size.attrs) == Window((2, 2), (1, 1), scale=(1.5, 0.5))
    assert built.op.fusion == "injective" and built.params == []


@pytest.mark.parametrize("given, attr, text", [
    (dict(), "scale", "exactly one of scale and size"),
    (dict(scale=2, size=8), "size", "exactly one of scale and size"),
    (dict(scale=0), "scale", ">= 1"),
    (dict(scale=1.5), "scale", "an integer or a list of 2 integers"),
    (dict(size=[4, 0]), "size", ">= 1"),
    (dict(scale=2, mode="bicubic"), "mode", "one of nearest, bilinear"),
    (dict(scale=2, align_corners=True), "align_corners", "only applies to mode=bilinear"),
])
def test_attribute_errors(given, attr, text):
    e = op_error("upsample", [tt(3, 4, 4)], **given)
    assert e.attr == attr and re.search(text, e.message), e.message


def test_rank():
    e = op_error("upsample", [tt(3, 4)], scale=2)
    assert "rank-4" in e.message and "f32[N, 3, 4]" in e.message and e.arg == 0
