"""Gradients of the activations (relu, leaky_relu, elu, selu, sigmoid, tanh, clip, softmax, log_softmax, dropout):
finite differences in float64 against the autodiff gradients, and the exported training graph in onnxruntime
against the float32 reference, for every option; then the backward ops themselves (activation_grad,
softmax_grad): misuse, float32 and float64."""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import pytest

from graphconv.errors import OpError, TrainingError
from graphconv.ir.graph import Graph, TensorType, Value
from graphconv.ops import REGISTRY, RefContext
from graphconv.ops.build import add_op
from graphconv.reference.executor import run_graph
from graphconv.train.autodiff import Loss, TrainingGraph, add_backward, add_losses

from .grad_helpers import assert_gradients, assert_onnx_matches

BATCH = 2


def away(x: np.ndarray, kinks, gap: float = 0.05) -> np.ndarray:
    """x with the elements near a kink moved `gap` away from it: central differences must not straddle one."""
    for k in kinks:
        near = np.abs(x - k) < gap
        x = np.where(near, k + np.where(x >= k, gap, -gap), x)
    return x


class Net:
    """A graph built by hand, with its random inputs (seeded) and a loss on its output "y"."""

    def __init__(self, seed: int):
        self.g = Graph("grad_test")
        self.inputs: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)

    def input(self, shape, low=-2.0, high=2.0, kinks=(0.0,), name="x") -> Value:
        self.inputs[name] = away(self.rng.uniform(low, high, (BATCH, *shape)), kinks)
        return self.g.add_input(name, TensorType(("N", *shape), "float32"))

    def op(self, op: str, *inputs: Value, **attrs) -> Value:
        return add_op(self.g, f"n{len(self.g.nodes)}", op, list(inputs), **attrs)


def unary(op: str, shape=(3, 4, 5), low=-2.0, high=2.0, kinks=(0.0,), **attrs) -> Callable[[Net], Value]:
    return lambda net: net.op(op, net.input(shape, low, high, kinks), **attrs)


def chain(*layers: tuple[str, dict], shape=(3, 4, 5), kinks=(0.0,)) -> Callable[[Net], Value]:
    def build(net):
        v = net.input(shape, kinks=kinks)
        for op, attrs in layers:
            v = net.op(op, v, **attrs)
        return v
    return build


def shared_relu(net):
    """x read by relu and by the add after it: x's gradient sums both contributions."""
    x = net.input((3, 4, 4))
    return net.op("add", net.op("relu", x), x)


def shared_three(net):
    """x read by three activations whose results are combined."""
    x = net.input((2, 3, 3))
    return net.op("add", net.op("mul", net.op("tanh", x), net.op("sigmoid", x)), net.op("elu", x, alpha=0.5))


def shared_softmax(net):
    """Softmax's output read twice: by the loss path and by a product with itself."""
    s = net.op("softmax", net.input((5, 3)), axis=1)
    return net.op("mul", s, s)


# (id, build, loss kind)
CASES = [
    ("relu", unary("relu"), "mse"),
    ("leaky_relu", unary("leaky_relu"), "mse"),
    ("leaky_relu-alpha", unary("leaky_relu", alpha=0.2), "mse"),
    ("leaky_relu-negative-alpha", unary("leaky_relu", alpha=-0.5), "mse"),
    ("elu", unary("elu"), "mse"),
    ("elu-alpha", unary("elu", alpha=0.7), "mse"),
    ("elu-large", unary("elu", low=-6.0, high=30.0, alpha=2.0), "mse"),  # exp(x) of the unused branch stays finite
    ("selu", unary("selu"), "mse"),
    ("sigmoid", unary("sigmoid", low=-4.0, high=4.0, kinks=()), "mse"),
    ("tanh", unary("tanh", low=-3.0, high=3.0, kinks=()), "mse"),
    ("clip", unary("clip", kinks=(-0.5, 0.7), min=-0.5, max=0.7), "mse"),
    ("clip-min", unary("clip", kinks=(-0.5,), min=-0.5), "mse"),
    ("clip-max", unary("clip", kinks=(0.3,), max=0.3), "mse"),
    ("relu6", unary("clip", low=-2.0, high=8.0, kinks=(0.0, 6.0), min=0.0, max=6.0), "mse"),
    ("softmax", unary("softmax", kinks=()), "mse"),
    ("softmax-last", unary("softmax", kinks=(), axis=-1), "mse"),
    ("softmax-axis2", unary("softmax", kinks=(), axis=2), "mse"),
    ("softmax-2d", unary("softmax", shape=(6,), kinks=()), "mse"),
    ("log_softmax", unary("log_softmax", kinks=()), "mse"),
    ("log_softmax-last", unary("log_softmax", kinks=(), axis=-1), "mse"),
    ("log_softmax-axis2", unary("log_softmax", shape=(3, 4), kinks=(), axis=2), "mse"),
    ("log_softmax-5d", unary("log_softmax", shape=(2, 3, 2, 3), kinks=(), axis=-2), "mse"),
    ("dropout", unary("dropout", rate=0.3), "mse"),  # a product with the mask input in training
    ("dropout-rate0", unary("dropout", rate=0.0), "mse"),  # the identity
    ("ce-log_softmax", unary("log_softmax", shape=(6,), kinks=()), "cross_entropy"),
    ("ce-tanh", unary("tanh", shape=(6,), kinks=()), "cross_entropy"),
    ("ce-leaky_relu", unary("leaky_relu", shape=(5,), alpha=0.1), "cross_entropy"),
    ("ce-clip-dropout", chain(("clip", {"min": -1.0, "max": 1.0}), ("dropout", {"rate": 0.5}), shape=(7,),
                              kinks=(-1.0, 1.0)), "cross_entropy"),
    ("chain", chain(("selu", {}), ("sigmoid", {}), ("log_softmax", {"axis": 1})), "mse"),
    ("shared-relu", shared_relu, "mse"),
    ("shared-three", shared_three, "mse"),
    ("shared-softmax", shared_softmax, "mse"),
]


def make(name: str, build) -> tuple[Graph, dict[str, np.ndarray]]:
    net = Net(zlib.crc32(name.encode()))
    net.g.set_output("y", build(net))
    return net.g, net.inputs


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gradients(case):
    name, build, loss = case
    g, inputs = make(name, build)
    assert_gradients(g, {}, inputs, losses=[Loss("y", loss)])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_onnx_matches(case):
    name, build, loss = case
    g, inputs = make(name, build)
    assert_onnx_matches(g, {}, inputs, losses=[Loss("y", loss)])


def test_kinks_follow_pytorch():
    """At a kink, the derivative PyTorch uses: relu and leaky_relu take the x <= 0 side, clip passes the gradient
    at its bounds."""
    ctx = RefContext()
    dy = np.ones(3)
    x = np.array([-1.0, 0.0, 1.0])
    grad = REGISTRY["activation_grad"]

    def run(**attrs):
        attrs = grad.check_attrs(attrs)
        return grad.reference(attrs, [dy, x], {}, ctx)

    np.testing.assert_array_equal(run(fn="relu"), [0, 0, 1])
    np.testing.assert_array_equal(run(fn="leaky_relu", alpha=0.1), [0.1, 0.1, 1])
    np.testing.assert_array_equal(run(fn="clip", min=0.0, max=1.0), [0, 1, 1])
    np.testing.assert_array_equal(run(fn="clip", min=-1.0, max=0.0), [1, 1, 0])


# -- dropout's own rule (training graphs replace dropout before differentiating) -------------------------------

def _dropout_graph(rate: float) -> TrainingGraph:
    g = Graph("drop")
    x = g.add_input("x", TensorType(("N", 4), "float32"))
    g.set_output("y", add_op(g, "drop", "dropout", [x], rate=rate))
    return TrainingGraph(g, [Loss("y", "mse")])


def test_dropout_rate0_passes_the_gradient_through():
    tg = _dropout_graph(0.0)
    add_backward(tg, add_losses(tg), ["x"])  # no training-mode rewrite: dropout's rule runs
    x, t = np.random.default_rng(1).standard_normal((2, 3, 4))
    out = run_graph(tg.graph, {"x": x, "y@target": t}, {}, dtype="float64")
    np.testing.assert_allclose(out["grad:x"], 2 * (x - t) / x.size)


def test_dropout_with_a_rate_needs_training_mode():
    tg = _dropout_graph(0.3)
    with pytest.raises(TrainingError, match="training mode"):
        add_backward(tg, add_losses(tg), ["x"])


# -- the backward ops ------------------------------------------------------------------------------------------

T = TensorType(("N", 3, 4), "float32")


@pytest.mark.parametrize("op,attrs,types,message", [
    ("activation_grad", {"fn": "leaky_relu"}, [T, T], "alpha is required for leaky_relu"),
    ("activation_grad", {"fn": "relu", "alpha": 0.1}, [T, T], "alpha is not used for relu"),
    ("activation_grad", {"fn": "clip"}, [T, T], "clip needs min, max or both"),
    ("activation_grad", {"fn": "tanh", "max": 1.0}, [T, T], "clip's bounds, not tanh's"),
    ("activation_grad", {"fn": "clip", "min": 1.0, "max": 0.0}, [T, T], "min \\(1\\) is above max \\(0\\)"),
    ("activation_grad", {"fn": "gelu"}, [T, T], "expected one of relu"),
    ("activation_grad", {"fn": "relu"}, [T, TensorType(("N", 3, 5))], "saved f32\\[N, 3, 5\\] does not have"),
    ("activation_grad", {"fn": "relu"}, [T, TensorType(("N", 3, 4), "float64")], "different dtypes"),
    ("softmax_grad", {"axis": 3}, [T, T], "axis 3 is out of range"),
    ("softmax_grad", {"axis": 0}, [T, T], "expected an integer >= 1"),
    ("softmax_grad", {"axis": 1}, [T, TensorType(("N", 4, 3))], "does not have the shape"),
])
def test_backward_op_misuse(op, attrs, types, message):
    d = REGISTRY[op]
    with pytest.raises(OpError, match=message):
        d.infer(d.check_attrs(attrs), types)


@pytest.mark.parametrize("op,attrs", [
    ("activation_grad", {"fn": "relu"}), ("activation_grad", {"fn": "leaky_relu", "alpha": 0.3}),
    ("activation_grad", {"fn": "elu", "alpha": 0.8}), ("activation_grad", {"fn": "selu"}),
    ("activation_grad", {"fn": "sigmoid"}), ("activation_grad", {"fn": "tanh"}),
    ("activation_grad", {"fn": "clip", "min": -0.5}), ("activation_grad", {"fn": "clip", "max": 0.5}),
    ("softmax_grad", {"axis": 2}), ("softmax_grad", {"axis": 1, "log": True}),
])
def test_backward_op_float32_and_float64(op, attrs):
    d = REGISTRY[op]
    attrs = d.check_attrs(attrs)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((2, 3, 4)) for _ in d.inputs]
    if op == "softmax_grad":  # y must be a softmax (or log_softmax) output
        y = np.exp(xs[1]) / np.exp(xs[1]).sum(axis=attrs["axis"], keepdims=True)
        xs[1] = np.log(y) if attrs["log"] else y
    y64 = d.reference(attrs, xs, {}, RefContext())
    y32 = d.reference(attrs, [x.astype(np.float32) for x in xs], {}, RefContext())
    assert y64.dtype == np.float64 and y32.dtype == np.float32
    assert d.infer(attrs, [T, T]) == T
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-6)
