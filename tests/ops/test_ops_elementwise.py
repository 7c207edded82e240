"""add, mul, sub, div (broadcasting) and concat."""

from __future__ import annotations

import re

import numpy as np
import pytest

from graphconv.ops import REGISTRY

from .helpers import build, close, op_error, ort_run, randn, run, tt


@pytest.mark.parametrize("name, onnx_op", [("add", "Add"), ("mul", "Mul"), ("sub", "Sub"), ("div", "Div")])
@pytest.mark.parametrize("shapes", [
    [(2, 3, 4, 5), (2, 3, 4, 5)],
    [(2, 3, 4, 5), (2, 3, 1, 1)],
    [(2, 3, 4, 5), (2, 1, 4, 5)],
    [(2, 3, 1, 5), (2, 1, 4, 1)],
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_matches_onnxruntime(name, onnx_op, shapes, dtype):
    a, b = (randn(*s, seed=i, dtype=dtype) for i, s in enumerate(shapes))
    y, built, _ = run(name, [a, b])
    assert y.dtype == dtype
    close(y, ort_run(onnx_op, [a, b]))
    assert built.out == tt(*np.broadcast_shapes(*shapes)[1:], dtype=np.dtype(dtype).name)


@pytest.mark.parametrize("name, fn", [("add", lambda a, b, c: a + b + c), ("mul", lambda a, b, c: a * b * c)])
def test_three_inputs(name, fn):
    xs = [randn(2, 3, seed=i) for i in range(3)]
    y, _, _ = run(name, xs)
    close(y, fn(*xs))


def test_mul_by_hand():
    y, _, _ = run("mul", [np.array([[1.0, 2.0]], np.float32), np.array([[3.0, -1.0]], np.float32)])
    np.testing.assert_array_equal(y, [[3.0, -2.0]])
    assert REGISTRY["mul"].fusion == "broadcast"


@pytest.mark.parametrize("name", ["add", "mul", "sub", "div"])
def test_binary_errors(name):
    e = op_error(name, [tt(64, 28, 28), tt(32, 28, 28)])
    assert "f32[N, 64, 28, 28] and f32[N, 32, 28, 28] do not match" in e.message
    e = op_error(name, [tt(4), tt(4, dtype="float64")])
    assert "different dtypes" in e.message
    assert "at least 2 inputs" in op_error(name, [tt(4)]).message


def test_sub_div_by_hand_and_order():
    a, b = np.array([[6.0, 1.0, 0.0, -2.0]], np.float32), np.array([[3.0, 4.0, 0.0, 0.0]], np.float32)
    y, _, _ = run("sub", [a, b])
    np.testing.assert_array_equal(y, [[3.0, -3.0, 0.0, -2.0]])
    y, _, _ = run("div", [a, b])
    np.testing.assert_array_equal(y, [[2.0, 0.25, np.nan, -np.inf]])
    assert REGISTRY["sub"].inputs == ("a", "b") and not REGISTRY["sub"].variadic
    assert REGISTRY["div"].fusion == "broadcast"


def test_sub_div_take_two_inputs_in_a_spec():
    from graphconv.errors import SpecError
    from graphconv.spec import load_graph_text
    with pytest.raises(SpecError) as e:
        load_graph_text("network t {\n  input x: f32[N, 4]\n  y = sub(x, x, x)\n  output y\n}\n", path="t.gc")
    assert "t.gc:3:17: error: 'sub' takes 2 tensor inputs, got 3" in str(e.value)


# -- concat -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis, shapes", [
    (1, [(2, 3, 4, 5), (2, 6, 4, 5)]),
    (1, [(2, 3, 4, 5), (2, 1, 4, 5), (2, 2, 4, 5)]),
    (2, [(2, 3, 4, 5), (2, 3, 2, 5)]),
    (-1, [(2, 3, 4, 5), (2, 3, 4, 1)]),
    (1, [(2, 3), (2, 7)]),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_concat_matches_onnxruntime(axis, shapes, dtype):
    xs = [randn(*s, seed=i, dtype=dtype) for i, s in enumerate(shapes)]
    y, built, _ = run("concat", xs, axis=axis)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ort_run("Concat", xs, dict(axis=axis)))
    assert built.attrs["axis"] == axis % len(shapes[0])


def test_concat_shape_by_hand():
    built = build("concat", [tt(64, 28, 28), tt(32, 28, 28), tt(16, 28, 28)])
    assert built.out == tt(112, 28, 28)
    assert built.op.fusion == "injective" and built.op.variadic and built.op.min_inputs == 2


def test_concat_mismatch_names_all_shapes():
    e = op_error("concat", [tt(64, 28, 28), tt(32, 14, 14)])
    assert e.message == ("concat: along axis 1 every other dimension must match; got f32[N, 64, 28, 28] and "
                         "f32[N, 32, 14, 14]")
    assert e.arg == 1
    e = op_error("concat", [tt(8, 4, 4), tt(8, 4, 4), tt(8, 4, 5)])
    assert "f32[N, 8, 4, 4], f32[N, 8, 4, 4] and f32[N, 8, 4, 5]" in e.message and e.arg == 2


@pytest.mark.parametrize("in_types, given, attr, arg, text", [
    ([tt(8, 4, 4), tt(8, 4)], {}, None, 1, r"different ranks: f32\[N, 8, 4, 4\] and f32\[N, 8, 4\]"),
    ([tt(8), tt(8)], {"axis": 0}, "axis", None, "axis 0 is the batch dimension"),
    ([tt(8), tt(8)], {"axis": -2}, "axis", None, "axis -2 is the batch dimension"),
    ([tt(8), tt(8)], {"axis": 2}, "axis", None, r"axis 2 is out of range for rank-2 inputs"),
    ([tt(8), tt(8, dtype="float64")], {}, None, None, "different dtypes"),
    ([tt(8)], {}, None, None, "at least 2 inputs"),
    ([tt(8), tt(8)], {"axis": 1.0}, "axis", None, "expected an integer"),
])
def test_concat_errors(in_types, given, attr, arg, text):
    e = op_error("concat", in_types, **given)
    assert e.attr == attr and e.arg == arg and re.search(text, e.message), e.message
