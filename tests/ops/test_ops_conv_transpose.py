"""conv_transpose2d: attributes, shapes, parameters, and numerics against onnxruntime ConvTranspose and a loop."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from graphconv.ir.graph import Init
from graphconv.ops.schema import Window

from .helpers import build, close, op_error, ort_run, randn, run, tt


def loop_conv_transpose(x, w, b, stride, pads, out_pad, dilation, groups):
    """Scatter every input pixel through the kernel into a big enough buffer, then crop: the definition."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    o = og * groups
    (sh, sw), (dh, dw), (oph, opw) = stride, dilation, out_pad
    top, left, bottom, right = pads
    full_h = (h - 1) * sh + (kh - 1) * dh + 1 + oph
    full_w = (wd - 1) * sw + (kw - 1) * dw + 1 + opw
    y = np.zeros((n, o, full_h, full_w))
    cg = c // groups
    for b_, ci, r, s, i, j, oo in itertools.product(range(n), range(c), range(h), range(wd), range(kh), range(kw),
                                                    range(og)):
        g = ci // cg
        y[b_, g * og + oo, r * sh + i * dh, s * sw + j * dw] += x[b_, ci, r, s] * w[ci, oo, i, j]
    y = y[:, :, top:full_h - bottom, left:full_w - right]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y


CASES = [
    # (in_channels, out, kernel, stride, padding, output_padding, dilation, groups)
    (3, 4, 3, 1, 0, 0, 1, 1),
    (3, 4, 3, 2, 1, 1, 1, 1),
    (4, 6, (2, 3), (2, 1), (1, 0), (1, 0), 1, 2),
    (4, 4, 3, 2, (1, 0, 0, 2), 0, 2, 4),  # depthwise, asymmetric padding, dilation
    (2, 3, 3, 3, 2, (2, 1), (1, 2), 1),
    (6, 3, 1, 2, 0, 1, 1, 3),
    (2, 2, 4, 2, 1, 0, 1, 1),  # the DCGAN up-block: doubles H and W
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_onnxruntime(case, bias):
    c, o, k, s, p, op, d, g = case
    x = randn(2, c, 5, 4, seed=1)
    y, built, ps = run("conv_transpose2d", [x], out_channels=o, kernel=k, stride=s, padding=p, output_padding=op,
                       dilation=d, groups=g, bias=bias, init="glorot_uniform")
    a = built.attrs
    inputs = [x, ps["weight"]] + ([ps["bias"]] if bias else [])
    ref = ort_run("ConvTranspose", inputs, dict(kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                                                pads=list(a["padding"]), output_padding=list(a["output_padding"]),
                                                dilations=list(a["dilation"]), group=g))
    close(y, ref)


@pytest.mark.parametrize("case", CASES[:5])
def test_matches_loop_float64(case):
    c, o, k, s, p, op, d, g = case
    x = randn(1, c, 3, 4, seed=2, dtype=np.float64)
    y, built, ps = run("conv_transpose2d", [x], params={"bias": np.arange(o) * 0.5}, out_channels=o, kernel=k,
                       stride=s, padding=p, output_padding=op, dilation=d, groups=g,
                       init=Init("normal", (("std", 1.0),)))
    a = built.attrs
    assert y.dtype == np.float64
    ref = loop_conv_transpose(x, ps["weight"], ps["bias"], a["stride"], a["padding"], a["output_padding"],
                              a["dilation"], g)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_hand_computed():
    # 1 channel, 2x2 input, 2x2 kernel of ones, stride 2: every input pixel becomes a 2x2 block
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=np.float32)
    y, _, _ = run("conv_transpose2d", [x], out_channels=1, kernel=2, stride=2, bias=False,
                  weight=np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(y[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    # stride 1, 2x2 kernel [[1, 2], [3, 4]] on a single 1: the kernel itself; overlapping taps add up
    y, _, _ = run("conv_transpose2d", [np.ones((1, 1, 1, 2), np.float32)], kernel=2, bias=[10.0],
                  weight=[[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(y[0, 0], [[11, 13, 12], [13, 17, 14]])


def test_output_padding_beyond_the_data_is_bias():
    x = np.ones((1, 1, 2, 2), np.float32)
    y, _, _ = run("conv_transpose2d", [x], kernel=1, stride=2, output_padding=1, weight=[[[[2.0]]]], bias=[0.5])
    np.testing.assert_array_equal(y[0, 0], [[2.5, 0.5, 2.5, 0.5], [0.5] * 4, [2.5, 0.5, 2.5, 0.5], [0.5] * 4])


@pytest.mark.parametrize("given, h, w, expect", [
    (dict(out_channels=8, kernel=3), 5, 5, (8, 7, 7)),
    (dict(out_channels=8, kernel=4, stride=2, padding=1), 16, 16, (8, 32, 32)),
    (dict(out_channels=8, kernel=3, stride=2, padding=1, output_padding=1), 14, 14, (8, 28, 28)),
    (dict(out_channels=8, kernel=3, stride=2, padding=1), 14, 14, (8, 27, 27)),
    (dict(out_channels=2, kernel=3, dilation=2, padding=[1, 0, 2, 3]), 4, 6, (2, 5, 7)),
    (dict(out_channels=2, kernel=(1, 5), stride=(1, 3), output_padding=(0, 2)), 4, 6, (2, 4, 22)),
])
def test_shapes(given, h, w, expect):
    built = build("conv_transpose2d", [tt(4, h, w)], **given)
    assert built.out == tt(*expect)


def test_params_macs_window_fusion():
    built = build("conv_transpose2d", [tt(8, 5, 5)], out_channels=6, kernel=3, stride=2, groups=2)
    assert [(p.name, p.shape, p.role) for p in built.params] == [("weight", (8, 3, 3, 3), "trainable"),
                                                                ("bias", (6,), "trainable")]
    assert built.params[0].init.name == "he_normal"
    assert built.out == tt(6, 11, 11)
    # every input element meets out/groups · kh · kw weights
    assert built.op.macs(built.attrs, [tt(8, 5, 5)], built.out) == 8 * 5 * 5 * 3 * 9
    assert built.op.window(built.attrs) == Window((2, 2), (1, 1), scale=(2.0, 2.0))
    assert built.op.fusion == "out_fusable"
    dilated = build("conv_transpose2d", [tt(1, 5, 5)], out_channels=1, kernel=3, dilation=2, stride=(1, 2))
    assert dilated.op.window(dilated.attrs) == Window((5, 3), (1, 1), scale=(1.0, 2.0))


def test_no_bias_and_ir_attrs():
    built = build("conv_transpose2d", [tt(2, 3, 3)], out_channels=4, kernel=2, bias=False, frozen=True)
    assert [p.name for p in built.params] == ["weight"]
    assert not {"weight", "init", "bias_init", "frozen"} & set(built.attrs)
    assert built.attrs["bias"] is False


def test_fixed_weight_gives_kernel_and_out_channels():
    w = np.arange(2 * 3 * 2 * 4, dtype=np.float64).reshape(2, 3, 2, 4)
    built = build("conv_transpose2d", [tt(2, 3, 3)], weight=w, bias=[1.0, 2.0, 3.0])
    assert built.attrs["kernel"] == (2, 4) and built.attrs["out_channels"] == 3 and built.attrs["bias"] is True
    weight, bias = built.params
    np.testing.assert_array_equal(weight.data, w)
    np.testing.assert_array_equal(bias.data, [1.0, 2.0, 3.0])
    grouped = build("conv_transpose2d", [tt(4, 3, 3)], weight=np.zeros((4, 3, 1, 1)), groups=2)
    assert grouped.attrs["out_channels"] == 6


@pytest.mark.parametrize("given, in_type, attr, text", [
    (dict(kernel=3), tt(2, 4, 4), "out_channels", "missing required attribute 'out_channels'"),
    (dict(out_channels=2), tt(2, 4, 4), "kernel", "missing required attribute 'kernel'"),
    (dict(out_channels=2, kernel=3, padding="same"), tt(2, 4, 4), "padding", "'same' is not supported"),
    (dict(out_channels=2, kernel=3, padding=-1), tt(2, 4, 4), "padding", "all >= 0"),
    (dict(out_channels=2, kernel=3, stride=2, output_padding=2), tt(2, 4, 4), "output_padding",
     r"output_padding \[2, 2\] must be smaller than the stride \[2, 2\] or the dilation \[1, 1\]"),
    (dict(out_channels=2, kernel=3, output_padding=1), tt(2, 4, 4), "output_padding", "smaller than the stride"),
    (dict(out_channels=2, kernel=3, output_padding=-1), tt(2, 4, 4), "output_padding", ">= 0"),
    (dict(out_channels=2, kernel=3, groups=3), tt(2, 4, 4), "groups", r"input channels \(2\) are not divisible"),
    (dict(out_channels=3, kernel=3, groups=2), tt(2, 4, 4), "out_channels", r"out_channels \(3\) is not divisible"),
    (dict(out_channels=2, kernel=1, padding=[1, 0, 1, 0]), tt(2, 2, 4), "padding", r"crops the whole output"),
    (dict(out_channels=2, kernel=3, weight=np.zeros((2, 2, 3))), tt(2, 4, 4), "weight", "must be 4-d"),
    (dict(out_channels=4, kernel=3, weight=np.zeros((2, 2, 3, 3))), tt(2, 4, 4), "weight",
     r"has shape \[2, 2, 3, 3\], but this layer needs \[2, 4, 3, 3\]"),
    (dict(out_channels=2, kernel=3, flip=True), tt(2, 4, 4), "flip", "has no attribute 'flip'"),
])
def test_attribute_errors(given, in_type, attr, text):
    e = op_error("conv_transpose2d", [in_type], **given)
    assert e.attr == attr
    assert re.search(text, e.message), e.message


def test_output_padding_allowed_below_dilation():
    built = build("conv_transpose2d", [tt(1, 3, 3)], out_channels=1, kernel=2, dilation=2, output_padding=1)
    assert built.out == tt(1, 6, 6)


def test_rank_error_names_shape():
    e = op_error("conv_transpose2d", [tt(16)], out_channels=2, kernel=3)
    assert "rank-4" in e.message and "f32[N, 16]" in e.message and e.arg == 0
