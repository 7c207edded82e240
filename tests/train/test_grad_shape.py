"""Gradients of the elementwise ops (add, mul, sub, div with broadcasting, concat) and the shape ops (identity,
flatten, reshape, transpose, slice, pad): finite differences in float64 against the autodiff gradients, and the
exported training graph in onnxruntime against the float32 reference, for every option; then the backward ops
themselves (neg, slice_grad, pad_grad): misuse, float32 and float64."""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import pytest

from graphconv.errors import OpError
from graphconv.ir.graph import Graph, TensorType, Value
from graphconv.ops import REGISTRY, RefContext
from graphconv.ops.build import add_op
from graphconv.train.autodiff import Loss, differentiate

from .grad_helpers import assert_gradients, assert_onnx_matches

BATCH = 2
X = (3, 4, 5)  # per-sample [C, H, W]


class Net:
    """A graph built by hand, with random inputs and trainable parameters (seeded), and a loss on output "y"."""

    def __init__(self, seed: int):
        self.g = Graph("grad_test")
        self.inputs: dict[str, np.ndarray] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)

    def _data(self, shape, nonzero: bool) -> np.ndarray:
        if nonzero:  # divisors: magnitudes 0.5 to 1.5, either sign
            return self.rng.uniform(0.5, 1.5, shape) * self.rng.choice([-1.0, 1.0], shape)
        return self.rng.standard_normal(shape)

    def input(self, shape=X, *, batch: bool = True, nonzero: bool = False) -> Value:
        """A graph input [N, *shape], or of exactly `shape` with batch=False (an operand without a batch axis)."""
        name = f"x{len(self.inputs)}"
        full = (BATCH, *shape) if batch else tuple(shape)
        self.inputs[name] = self._data(full, nonzero)  # the batched input comes first: it sets the batch size
        return self.g.add_input(name, TensorType(("N", *shape) if batch else tuple(shape), "float32"))

    def param(self, shape, *, nonzero: bool = False) -> Value:
        name = f"p{len(self.weights)}"
        self.weights[name] = self._data(shape, nonzero)
        return self.g.add_param(name, TensorType(tuple(shape), "float32"), "trainable")

    def op(self, op: str, *inputs: Value, **attrs) -> Value:
        return add_op(self.g, f"n{len(self.g.nodes)}", op, list(inputs), **attrs)


def unary(op: str, x=X, **attrs) -> Callable[[Net], Value]:
    """op on an input [N, *x]."""
    return lambda net: net.op(op, net.input(x), **attrs)


def binary(op: str, a, b, *, nonzero_b: bool = False) -> Callable[[Net], Value]:
    """op(a, b) with each operand ("x", per-sample shape) for an input [N, ...], ("w", shape) for an input without
    a batch axis, or ("p", shape) for a parameter."""
    def operand(net, spec, nonzero):
        kind, shape = spec
        if kind == "p":
            return net.param(shape, nonzero=nonzero)
        return net.input(shape, batch=kind == "x", nonzero=nonzero)

    def build(net):
        x = operand(net, a, False)
        return net.op(op, x, operand(net, b, nonzero_b))
    return build


def add3(net):
    return net.op("add", net.input(), net.param((3, 1, 1)), net.param((1, 3, 1, 1)))


def mul3(net):
    return net.op("mul", net.input(), net.param((1, 4, 5)), net.param((3, 4, 1)))


def mul_twice(net):
    """The same value twice in one product: x·x."""
    x = net.input()
    return net.op("mul", x, x)


def shared_relu(net):
    """x read by relu and by the add after it: the gradient sums both contributions."""
    x = net.input()
    return net.op("add", net.op("relu", x), x)


def shared_sub_div(net):
    """x and a parameter read by sub, div and mul."""
    x, b = net.input(), net.param((3, 1, 1), nonzero=True)
    return net.op("mul", net.op("sub", x, b), net.op("div", x, b))


def concat(*shapes, axis=1) -> Callable[[Net], Value]:
    return lambda net: net.op("concat", *(net.input(s) for s in shapes), axis=axis)


def concat_twice(net):
    x = net.input()
    return net.op("concat", x, net.op("tanh", x), x, axis=2)


def ce_concat(net):
    return net.op("concat", net.input((2,)), net.input((4,)))


def ce_slice_flatten(net):
    flat = net.op("flatten", net.input((2, 4)))
    return net.op("slice", flat, start=-1, end=1, step=-1)


def reshape_rank1(net):
    """An [N] input reshaped to [N, 1, 1]: its gradient cannot be a reshape back (no empty target shape)."""
    return net.op("mul", net.op("reshape", net.input(()), shape=[1, 1]), net.param((1, 3)))


def pad_then_slice(net):
    x = net.op("pad", net.input(), pads=[1, 2], mode="edge")
    return net.op("slice", net.op("transpose", x, perm=[0, 1, 3, 2]), axis=2, start=1, step=2)


# (id, build, loss kind)
CASES = [
    # elementwise
    ("add", binary("add", ("x", X), ("x", X)), "mse"),
    ("add-bias-c11", binary("add", ("x", X), ("p", (3, 1, 1))), "mse"),
    ("add-bias-1c11", binary("add", ("x", X), ("p", (1, 3, 1, 1))), "mse"),
    ("add-row-w", binary("add", ("x", X), ("w", (5,))), "mse"),
    ("add-first-broadcast", binary("add", ("x", (1, 4, 1)), ("x", X)), "mse"),
    ("add3", add3, "mse"),
    ("mul", binary("mul", ("x", X), ("x", X)), "mse"),
    ("mul-c11", binary("mul", ("x", X), ("p", (3, 1, 1))), "mse"),
    ("mul-1c11", binary("mul", ("x", X), ("p", (1, 3, 1, 1))), "mse"),
    ("mul-w", binary("mul", ("x", X), ("w", (5,))), "mse"),
    ("mul3", mul3, "mse"),
    ("mul-same", mul_twice, "mse"),
    ("sub", binary("sub", ("x", X), ("x", X)), "mse"),
    ("sub-c11", binary("sub", ("x", X), ("p", (3, 1, 1))), "mse"),
    ("sub-1c11-first", binary("sub", ("p", (1, 3, 1, 1)), ("x", X)), "mse"),
    ("sub-w", binary("sub", ("x", X), ("w", (5,))), "mse"),
    ("div", binary("div", ("x", X), ("x", X), nonzero_b=True), "mse"),
    ("div-c11", binary("div", ("x", X), ("p", (3, 1, 1)), nonzero_b=True), "mse"),
    ("div-1c11", binary("div", ("x", X), ("p", (1, 3, 1, 1)), nonzero_b=True), "mse"),
    ("div-w", binary("div", ("x", X), ("w", (5,)), nonzero_b=True), "mse"),
    ("div-broadcast-numerator", binary("div", ("p", (3, 1, 1)), ("x", X), nonzero_b=True), "mse"),
    ("concat", concat(X, (2, 4, 5)), "mse"),
    ("concat-last", concat(X, X, (3, 4, 2), axis=-1), "mse"),
    ("concat-axis2", concat(X, (3, 1, 5), axis=2), "mse"),
    ("concat-2d", concat((3,), (1,), (2,)), "mse"),
    ("concat-same", concat_twice, "mse"),
    ("shared-relu", shared_relu, "mse"),
    ("shared-sub-div", shared_sub_div, "mse"),
    ("ce-concat", ce_concat, "cross_entropy"),
    ("ce-mul-w", binary("mul", ("x", (6,)), ("w", (6,))), "cross_entropy"),
    # shape
    ("identity", unary("identity"), "mse"),
    ("flatten", unary("flatten"), "mse"),
    ("flatten-2d", unary("flatten", x=(7,)), "mse"),
    ("reshape", unary("reshape", shape=[4, -1]), "mse"),
    ("reshape-up", unary("reshape", shape=[-1, 2, 2, 5]), "mse"),
    ("reshape-rank1", reshape_rank1, "mse"),
    ("transpose", unary("transpose", perm=[0, 3, 1, 2]), "mse"),
    ("transpose-cycle", unary("transpose", perm=[0, 2, 3, 1]), "mse"),
    ("transpose-5d", unary("transpose", x=(2, 3, 2, 3), perm=[0, 2, 1, 4, 3]), "mse"),
    ("slice-end", unary("slice", end=2), "mse"),
    ("slice-chunk", unary("slice", x=(8, 2, 2), start=4), "mse"),
    ("slice-step", unary("slice", axis=3, start=1, end=-2, step=3), "mse"),
    ("slice-step-to-end", unary("slice", axis=3, step=2), "mse"),
    ("slice-back", unary("slice", axis=-2, step=-2), "mse"),
    ("slice-back-start", unary("slice", axis=3, start=-2, end=0, step=-1), "mse"),
    ("slice-reverse", unary("slice", axis=-1, step=-1), "mse"),
    ("slice-back-step3", unary("slice", axis=3, start=3, step=-3), "mse"),
    ("slice-clamped", unary("slice", axis=2, start=-100, end=100), "mse"),
    ("pad", unary("pad", pads=1), "mse"),
    ("pad-value", unary("pad", pads=[1, 2, 0, 3], value=1.5), "mse"),
    ("pad-reflect", unary("pad", pads=[2, 1, 3, 0], mode="reflect"), "mse"),
    ("pad-reflect-max", unary("pad", pads=[3, 4], mode="reflect"), "mse"),
    ("pad-reflect-one-side", unary("pad", pads=[0, 0, 1, 2], mode="reflect"), "mse"),
    ("pad-edge", unary("pad", pads=2, mode="edge"), "mse"),
    ("pad-edge-uneven", unary("pad", pads=[0, 3, 5, 0], mode="edge"), "mse"),
    ("pad-edge-1x1", unary("pad", x=(2, 1, 1), pads=[1, 2], mode="edge"), "mse"),
    ("pad-edge-slice-transpose", pad_then_slice, "mse"),
    ("ce-slice-flatten", ce_slice_flatten, "cross_entropy"),
]


def make(name: str, build) -> Net:
    net = Net(zlib.crc32(name.encode()))
    net.g.set_output("y", build(net))
    return net


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gradients(case):
    name, build, loss = case
    net = make(name, build)
    assert_gradients(net.g, net.weights, net.inputs, losses=[Loss("y", loss)])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_onnx_matches(case):
    name, build, loss = case
    net = make(name, build)
    assert_onnx_matches(net.g, net.weights, net.inputs, losses=[Loss("y", loss)])


def _grad_ops(name: str, build) -> list[str]:
    tg = differentiate(make(name, build).g, [Loss("y", "mse")], inputs=True)
    return [n.op for n in tg.graph.nodes if "@" in n.name and not n.name.startswith("y@")]


def test_forward_ops_are_reused():
    """Where a forward op is exactly the gradient, the rule uses it, and equal shapes need no sum."""
    assert _grad_ops("t", unary("transpose", perm=[0, 2, 3, 1])) == ["transpose"]
    assert _grad_ops("r", unary("reshape", shape=[-1])) == ["reshape"]
    assert _grad_ops("c", concat(X, X)) == ["slice", "slice"]
    assert _grad_ops("a", binary("add", ("x", X), ("x", X))) == []
    assert _grad_ops("b", binary("add", ("x", X), ("p", (1, 3, 1, 1)))) == ["reduce_sum"]
    assert _grad_ops("w", binary("add", ("x", X), ("w", (5,)))) == ["reduce_sum"]
    # [C, 1, 1]: summed over H and W (kept), then over the batch axis it lacks
    assert _grad_ops("p", binary("add", ("x", X), ("p", (3, 1, 1)))) == ["reduce_sum", "reduce_sum"]


# -- the backward ops ------------------------------------------------------------------------------------------

def T(*shape, dtype="float32") -> TensorType:
    return TensorType(("N", *shape), dtype)


@pytest.mark.parametrize("op,attrs,types,message", [
    ("slice_grad", {"axis": 1, "size": 5, "start": 0, "end": 2}, [T(3, 4)], "takes 2 elements of 5 along axis 1"),
    ("slice_grad", {"axis": 2, "size": 5, "start": 0}, [T(3)], "axis 2 is out of range"),
    ("slice_grad", {"axis": 1, "size": 5, "start": 0, "step": 0}, [T(5)], "step must not be 0"),
    ("slice_grad", {"axis": 1, "size": 5, "start": 5}, [T(1)], "start 5 is outside"),
    ("slice_grad", {"axis": 0, "size": 5, "start": 0}, [T(5)], "expected an integer >= 1"),
    ("pad_grad", {"pads": 1}, [T(3, 4)], "rank-4"),
    ("pad_grad", {"pads": [2, 0]}, [T(3, 4, 4)], "leave nothing"),
    ("pad_grad", {"pads": [2, 0], "mode": "reflect"}, [T(3, 5, 4)], "must be smaller than the unpadded size"),
    ("pad_grad", {"pads": 1, "mode": "wrap"}, [T(3, 5, 4)], "expected one of constant"),
])
def test_backward_op_misuse(op, attrs, types, message):
    d = REGISTRY[op]
    with pytest.raises(OpError, match=message):
        d.infer(d.check_attrs(attrs), types)


@pytest.mark.parametrize("op,attrs,shape", [
    ("neg", {}, (3, 4)),
    ("slice_grad", {"axis": 2, "size": 9, "start": 1, "end": 8, "step": 3}, (2, 3)),
    ("slice_grad", {"axis": 1, "size": 4, "start": 3, "end": None, "step": -2}, (2, 3)),
    ("pad_grad", {"pads": [1, 2, 0, 3], "mode": "constant"}, (2, 5, 7)),
    ("pad_grad", {"pads": [2, 1, 1, 2], "mode": "reflect"}, (2, 6, 6)),
    ("pad_grad", {"pads": [2, 1, 1, 2], "mode": "edge"}, (2, 6, 6)),
])
def test_backward_op_float32_and_float64(op, attrs, shape):
    d = REGISTRY[op]
    attrs = d.check_attrs(attrs)
    dy = np.random.default_rng(5).standard_normal((2, *shape))
    out = d.infer(attrs, [T(*shape)])
    y64 = d.reference(attrs, [dy], {}, RefContext())
    y32 = d.reference(attrs, [dy.astype(np.float32)], {}, RefContext())
    assert y64.dtype == np.float64 and y32.dtype == np.float32
    assert y64.shape == out.concrete(2)
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-6)


def test_pad_grad_is_the_adjoint_of_pad():
    """<pad(x), dy> = <x, pad_grad(dy)> for every mode: the border goes back onto the elements it copies."""
    rng = np.random.default_rng(7)
    x, pads = rng.standard_normal((2, 3, 4, 5)), [2, 1, 3, 4]
    for mode in ("constant", "reflect", "edge"):
        y = REGISTRY["pad"].reference({"pads": pads, "mode": mode, "value": 0.0}, [x], {}, RefContext())
        dy = rng.standard_normal(y.shape)
        dx = REGISTRY["pad_grad"].reference({"pads": pads, "mode": mode}, [dy], {}, RefContext())
        assert np.vdot(y, dy) == pytest.approx(np.vdot(x, dx), rel=1e-12)
