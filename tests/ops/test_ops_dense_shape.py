"""dense, flatten, reshape, transpose, pad, identity."""

from __future__ import annotations

import re

import numpy as np
import pytest

from .helpers import build, close, op_error, ort_run, randn, run, tt, type_of


# -- dense ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_matches_onnxruntime_gemm(bias, dtype):
    x = randn(3, 7, seed=3, dtype=dtype)
    y, built, ps = run("dense", [x], units=5, bias=bias, bias_init="uniform")
    assert y.dtype == dtype
    inputs = [x, ps["weight"]] + ([ps["bias"]] if bias else [])
    close(y, ort_run("Gemm", inputs, dict(transB=1)))


def test_dense_hand_computed_with_fixed_weight():
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    y, built, _ = run("dense", [x], weight=[[1, 0, 0], [1, 1, 1]], bias=[0.5, -1.0])
    np.testing.assert_array_equal(y, [[1.5, 5.0]])
    assert built.attrs == {"units": 2, "bias": True}
    assert built.params[0].data is not None and built.params[1].data is not None


def test_dense_shape_params_macs():
    built = build("dense", [tt(512)], units=10)
    assert built.out == tt(10)
    assert [(p.name, p.shape, p.role, p.init.name) for p in built.params] == [
        ("weight", (10, 512), "trainable", "he_normal"), ("bias", (10,), "trainable", "zeros")]
    assert built.op.macs(built.attrs, [tt(512)], built.out) == 5120
    assert built.op.fusion == "out_fusable"
    assert [p.name for p in build("dense", [tt(4)], units=2, bias=False).params] == ["weight"]


def test_dense_rank4_hints_flatten():
    e = op_error("dense", [tt(64, 7, 7)], units=10)
    assert "rank-2" in e.message and "f32[N, 64, 7, 7]" in e.message
    assert e.hint == "insert flatten before dense" and e.arg == 0


@pytest.mark.parametrize("given, attr, text", [
    (dict(), "units", "missing required attribute 'units'"),
    (dict(units=0), "units", r"integer >= 1, got 0"),
    (dict(units=3, weight=[1.0, 2.0]), "weight", "must be 2-d"),
    (dict(units=3, weight=np.zeros((3, 5))), "weight", r"has shape \[3, 5\], but this layer needs \[3, 4\]"),
    (dict(units=3, bias=[1.0, 2.0]), "bias", r"has shape \[2\], but this layer needs \[3\]"),
    (dict(units=3, bias="yes"), "bias", "expected true or false or a tensor literal"),
    (dict(units=3, init="kaiming"), "init", "unknown initializer"),
])
def test_dense_attribute_errors(given, attr, text):
    e = op_error("dense", [tt(4)], **given)
    assert e.attr == attr and re.search(text, e.message), e.message


# -- flatten ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 6), (2, 3, 4)])
def test_flatten(shape):
    x = randn(*shape, seed=4)
    y, built, _ = run("flatten", [x])
    assert built.out == tt(int(np.prod(shape[1:])))
    np.testing.assert_array_equal(y, ort_run("Flatten", [x], dict(axis=1)))
    y64, _, _ = run("flatten", [x.astype(np.float64)])
    assert y64.dtype == np.float64 and built.op.fusion == "injective"


def test_flatten_rejects_rank1_and_attributes():
    assert "rank 2 or more" in op_error("flatten", [tt()]).message
    assert op_error("flatten", [tt(3)], axis=1).attr == "axis"


# -- reshape ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target, expect", [
    ([64, 49], (64, 49)), ([-1], (3136,)), ([16, -1, 7], (16, 28, 7)), (3136, (3136,)), ([4, 4, 4, 49], (4, 4, 4, 49)),
])
def test_reshape_shapes(target, expect):
    built = build("reshape", [tt(64, 7, 7)], shape=target)
    assert built.out == tt(*expect)
    assert built.attrs["shape"] == expect  # -1 is resolved


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reshape_matches_onnxruntime(dtype):
    x = randn(2, 4, 3, 2, seed=5, dtype=dtype)
    y, _, _ = run("reshape", [x], shape=[3, -1])
    np.testing.assert_array_equal(y, ort_run("Reshape", [x, np.array([2, 3, -1], np.int64)]))
    assert y.dtype == dtype


@pytest.mark.parametrize("target, text", [
    ([100, 3], r"cannot reshape f32\[N, 64, 7, 7\] \(3136 elements per sample\) to \[N, 100, 3\] \(300 elements\)"),
    ([5, -1], r"cannot reshape f32\[N, 64, 7, 7\] \(3136 elements per sample\) to \[N, 5, -1\]: 3136 is not "
              r"divisible by 5"),
    ([-1, -1], "more than one -1"),
    ([0, 3136], "has a 0 dimension"),
    ([-2, 3136], "integers >= -1"),
    ([], "expected a list of integers"),
])
def test_reshape_errors(target, text):
    e = op_error("reshape", [tt(64, 7, 7)], shape=target)
    assert e.attr == "shape" and re.search(text, e.message), e.message


def test_reshape_requires_shape():
    assert op_error("reshape", [tt(4)]).attr == "shape"


# -- channel_matmul ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_matmul_is_a_1x1_convolution(dtype):
    x = randn(2, 6, 5, 4, seed=4, dtype=dtype)
    y, built, ps = run("channel_matmul", [x], units=3)
    want, _, _ = run("conv2d", [x], params={"weight": ps["weight"].reshape(3, 6, 1, 1), "bias": ps["bias"]},
                     out_channels=3, kernel=1)
    close(y, want)
    assert built.out == tt(3, 5, 4, dtype=np.dtype(dtype).name) and built.op.fusion == "out_fusable"
    assert built.op.macs(built.attrs, [tt(6, 5, 4)], built.out) == 6 * 3 * 5 * 4
    assert [p.shape for p in built.params] == [(3, 6), (3,)]


def test_channel_matmul_rank2_is_dense_and_errors():
    x = randn(4, 7, seed=5)
    y, _, ps = run("channel_matmul", [x], units=2, bias=False)
    close(y, x @ ps["weight"].T)
    e = op_error("channel_matmul", [tt()], units=2)
    assert "channel_matmul expects an input [N, C, ...] of rank 2 or more, got f32[N]" in e.message
    e = op_error("channel_matmul", [tt(3)])
    assert e.attr == "units" and e.message == "channel_matmul: missing required attribute 'units'"


# -- transpose --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("perm, expect", [
    ([0, 2, 1, 3, 4], (4, 2, 5, 6)), ([0, 1, 2, 3, 4], (2, 4, 5, 6)), ([0, 4, 3, 2, 1], (6, 5, 4, 2)),
    ([0, 3, 1, 4, 2], (5, 2, 6, 4)),
])
def test_transpose_shapes(perm, expect):
    built = build("transpose", [tt(2, 4, 5, 6)], perm=perm)
    assert built.out == tt(*expect)
    assert built.attrs == {"perm": tuple(perm)}
    assert built.op.fusion == "injective" and built.params == []
    assert build("transpose", [tt(3, 7)], perm=[0, 2, 1]).out == tt(7, 3)
    assert build("transpose", [tt(3, 7, dtype="float64")], perm=[0, 2, 1]).out == tt(7, 3, dtype="float64")


@pytest.mark.parametrize("perm, shape", [
    ([0, 2, 1, 3, 4], (2, 2, 3, 4, 5)),  # ShuffleNet's channel shuffle
    ([0, 3, 1, 2], (3, 2, 4, 5)),
    ([0, 2, 1], (2, 3, 4)),
    ([0, 1, 3, 2], (1, 3, 4, 5)),
    ([0], (4,)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_matches_onnxruntime(perm, shape, dtype):
    x = randn(*shape, seed=8, dtype=dtype)
    y, _, _ = run("transpose", [x], perm=perm)
    assert y.dtype == dtype and y.flags.c_contiguous
    np.testing.assert_array_equal(y, ort_run("Transpose", [x], dict(perm=perm)))


def test_transpose_channel_shuffle():
    """reshape [N, g, C/g, H, W] -> transpose [0, 2, 1, 3, 4] -> reshape [N, C, H, W] interleaves the groups."""
    x = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1) * np.ones((1, 1, 2, 2), np.float32)
    y, _, _ = run("reshape", [x], shape=[2, 3, 2, 2])
    y, _, _ = run("transpose", [y], perm=[0, 2, 1, 3, 4])
    y, _, _ = run("reshape", [y], shape=[6, 2, 2])
    np.testing.assert_array_equal(y[0, :, 0, 0], [0, 3, 1, 4, 2, 5])


@pytest.mark.parametrize("perm, in_type, text", [
    ([1, 0, 2, 3], tt(3, 4, 5), r"perm \[1, 0, 2, 3\] moves the batch dimension; perm\[0\] must be 0"),
    ([2, 1, 0], tt(3, 4), r"perm\[0\] must be 0 because the batch dimension stays first"),
    ([0, 1, 1, 3], tt(3, 4, 5), r"perm \[0, 1, 1, 3\] is not a permutation of the axes 0\.\.3"),
    ([0, 1, 2, 4], tt(3, 4, 5), "is not a permutation"),
    ([0, -1, 2, 1], tt(3, 4, 5), "is not a permutation"),
    ([1, 2, 3], tt(3, 4, 5), "is not a permutation"),
    ([0, 2, 1], tt(3, 4, 5), r"perm \[0, 2, 1\] has 3 axes, but the input f32\[N, 3, 4, 5\] has rank 4"),
    ([0, 1, 2, 3, 4], tt(3, 4, 5), "has 5 axes, but the input"),
    ([], tt(3, 4, 5), "expected a list of integers"),
    ("c", tt(3, 4, 5), "expected a list of integers"),
])
def test_transpose_errors(perm, in_type, text):
    e = op_error("transpose", [in_type], perm=perm)
    assert e.attr == "perm" and re.search(text, e.message), e.message


def test_transpose_batch_error_has_hint_and_perm_is_required():
    assert "[0, 2, 1, 3, 4]" in op_error("transpose", [tt(3, 4, 5)], perm=[3, 1, 2, 0]).hint
    assert op_error("transpose", [tt(3, 4)]).attr == "perm"


# -- slice ------------------------------------------------------------------------------------------------------

SLICES = [
    dict(end=2), dict(start=3), dict(start=1, end=-1), dict(start=-2), dict(step=2), dict(start=1, step=3),
    dict(step=-1), dict(start=-2, end=0, step=-1), dict(start=2, end=-100, step=-2), dict(start=-100, end=100),
    dict(axis=2, start=1, end=3), dict(axis=-1, step=-2), dict(axis=3, start=4, end=5),
]


@pytest.mark.parametrize("given", SLICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_slice_matches_python_and_onnxruntime(given, dtype):
    x = randn(2, 5, 4, 6, seed=3, dtype=dtype)
    y, built, _ = run("slice", [x], **given)
    index = [slice(None)] * 4
    index[given.get("axis", 1)] = slice(given.get("start"), given.get("end"), given.get("step", 1))
    np.testing.assert_array_equal(y, x[tuple(index)])
    assert y.flags.c_contiguous and built.out == type_of(y) and built.op.fusion == "injective"
    a = built.attrs
    assert 0 <= a["start"] < x.shape[a["axis"]] and (a["end"] is None or 0 <= a["end"] <= x.shape[a["axis"]])
    ends = [-(1 << 63) if a["end"] is None else a["end"]]
    got = ort_run("Slice", [x, np.array([a["start"]]), np.array(ends), np.array([a["axis"]]), np.array([a["step"]])])
    np.testing.assert_array_equal(got, y)
    # the resolved attributes describe the same slice
    assert build("slice", [type_of(x)], **a).attrs == a


def test_slice_chunk_halves_channels():
    x = np.arange(8, dtype=np.float32).reshape(1, 8, 1, 1)
    lo, _, _ = run("slice", [x], end=4)
    hi, _, _ = run("slice", [x], start=4)
    np.testing.assert_array_equal(np.concatenate([lo, hi], 1), x)
    assert build("slice", [tt(8, 3, 3)], start=4).attrs == {"start": 4, "end": 8, "axis": 1, "step": 1}
    assert build("slice", [tt(8, 3, 3)], step=-1).attrs == {"start": 7, "end": None, "axis": 1, "step": -1}


@pytest.mark.parametrize("given, in_type, attr, text", [
    (dict(axis=0), tt(4, 3), "axis", "slice: axis 0 is the batch dimension"),
    (dict(axis=-3), tt(4, 3), "axis", "slice: axis -3 is the batch dimension"),
    (dict(axis=3), tt(4, 3), "axis", r"slice: axis 3 is out of range for the input f32\[N, 4, 3\] \(rank 3\)"),
    (dict(start=2, end=2), tt(4, 3), "start", r"slice: \[2:2:1\] of axis 1 \(size 4\) of f32\[N, 4, 3\] is empty"),
    (dict(start=5), tt(4, 3), "start", r"\[5::1\] of axis 1 \(size 4\)"),
    (dict(start=0, end=0, step=-1), tt(4, 3), "start", r"\[0:0:-1\] of axis 1 \(size 4\) of f32\[N, 4, 3\] is empty"),
    (dict(step=0), tt(4, 3), "step", "slice: step must not be 0"),
    (dict(start=1.5), tt(4, 3), "start", "expected an integer"),
    (dict(size=2), tt(4, 3), "size", "slice has no attribute 'size'"),
])
def test_slice_errors(given, in_type, attr, text):
    e = op_error("slice", [in_type], **given)
    assert e.attr == attr and re.search(text, e.message), e.message


def test_slice_batch_error_hint():
    assert "axis=1" in op_error("slice", [tt(4)], axis=0).hint


# -- pad --------------------------------------------------------------------------------------------------------

PAD_CASES = [1, [2, 1], [0, 1, 2, 3], [3, 0, 0, 2]]


@pytest.mark.parametrize("pads", PAD_CASES)
@pytest.mark.parametrize("mode, value", [("constant", 0.0), ("constant", -2.5), ("reflect", 0.0), ("edge", 0.0)])
def test_pad_matches_onnxruntime(pads, mode, value):
    x = randn(2, 3, 4, 5, seed=6)
    y, built, _ = run("pad", [x], pads=pads, mode=mode, value=value)
    top, left, bottom, right = built.attrs["pads"]
    onnx_pads = np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)
    ref = ort_run("Pad", [x, onnx_pads, np.array(value, np.float32)], dict(mode=mode))
    np.testing.assert_array_equal(y, ref)


def test_pad_hand_computed_and_float64():
    x = np.array([[[[1.0, 2.0, 3.0]]]])
    y, built, _ = run("pad", [x], pads=[0, 2, 0, 1], mode="reflect")
    np.testing.assert_array_equal(y[0, 0], [[3, 2, 1, 2, 3, 2]])
    assert y.dtype == np.float64 and built.out == tt(1, 1, 6, dtype="float64")
    y, _, _ = run("pad", [x], pads=[1, 1, 0, 0], mode="edge")
    np.testing.assert_array_equal(y[0, 0], [[1, 1, 2, 3], [1, 1, 2, 3]])
    y, _, _ = run("pad", [x], pads=[0, 1], value=9)
    np.testing.assert_array_equal(y[0, 0], [[9, 1, 2, 3, 9]])


@pytest.mark.parametrize("given, in_type, attr, text", [
    (dict(pads=2, mode="reflect"), tt(3, 2, 5), "pads",
     r"reflect padding \[2, 2, 2, 2\] must be smaller .* f32\[N, 3, 2, 5\]"),
    (dict(pads=[0, 5, 0, 0], mode="reflect"), tt(3, 8, 5), "pads", "must be smaller"),
    (dict(pads=-1), tt(3, 8, 8), "pads", "all >= 0"),
    (dict(pads=[1, 2, 3]), tt(3, 8, 8), "pads", "expected an integer, \\[pad_h, pad_w\\]"),
    (dict(pads="same"), tt(3, 8, 8), "pads", "'same' is not supported"),
    (dict(pads=1, mode="wrap"), tt(3, 8, 8), "mode", "one of constant, reflect, edge"),
    (dict(pads=1, mode="edge", value=1.0), tt(3, 8, 8), "value", "only applies to mode=constant"),
    (dict(), tt(3, 8, 8), "pads", "missing required attribute 'pads'"),
])
def test_pad_errors(given, in_type, attr, text):
    e = op_error("pad", [in_type], **given)
    assert e.attr == attr and re.search(text, e.message), e.message


def test_pad_rank():
    e = op_error("pad", [tt(8)], pads=1)
    assert "rank-4" in e.message and e.arg == 0


def test_pad_reflect_up_to_size_minus_one():
    assert build("pad", [tt(3, 2, 5)], pads=[1, 4], mode="reflect").out == tt(3, 4, 13)


# -- identity ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identity(dtype):
    x = randn(2, 3, 4, seed=7, dtype=dtype)
    y, built, _ = run("identity", [x])
    np.testing.assert_array_equal(y, x)
    assert y is not x and built.out == tt(3, 4, dtype=np.dtype(dtype).name)
    assert built.op.fusion == "elementwise"


# -- blocked layout ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [4, 16])
def test_to_and_from_blocked_round_trip(block):
    x = randn(2, 32, 3, 5, seed=6)
    y, built, _ = run("to_blocked", [x], block=block)
    assert y.shape == (2, 32 // block, 3, 5, block) and built.out == tt(32 // block, 3, 5, block)
    np.testing.assert_array_equal(y[1, 1, 2, 3], x[1, block:2 * block, 2, 3])  # one pixel's block of channels
    back, built, _ = run("from_blocked", [y], block=block)
    np.testing.assert_array_equal(back, x)
    assert built.out == tt(32, 3, 5)


def test_blocked_layout_errors():
    assert "not a multiple of the block 16" in op_error("to_blocked", [tt(24, 3, 3)]).message
    assert "rank-4" in op_error("to_blocked", [tt(16, 3)]).message
    assert "not in blocks of 16 channels" in op_error("from_blocked", [tt(2, 3, 3, 8)]).message


@pytest.mark.parametrize("attrs, shape", [(dict(out_channels=32, kernel=3), (16, 5, 5)),
                                          (dict(kernel=3, depthwise=True), (32, 5, 5))])
def test_conv_weights_pack_and_unpack(attrs, shape):
    from graphconv.ops import REGISTRY
    _, built, ps = run("conv2d", [randn(1, *shape)], **attrs)
    op, w = REGISTRY["conv2d"], ps["weight"]
    packed = op.pack_param(built.attrs, "weight", w, 16)
    assert packed.shape == op.packed_shape(built.attrs, "weight", w.shape, 16)
    np.testing.assert_array_equal(op.unpack_param(built.attrs, "weight", packed, 16), w)
    if built.attrs["groups"] == 1:  # [O/16, C/16, kh, kw, 16 in, 16 out]
        assert packed[1, 0, 2, 1, 5, 7] == w[16 + 7, 5, 2, 1]
