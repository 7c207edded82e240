"""Gradients of the conv family (conv2d, conv_transpose2d, dense, channel_matmul): finite differences in float64
against the autodiff gradients, and the exported training graph in onnxruntime against the float32 reference, for
every option the ops accept."""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import pytest

from graphconv.errors import OpError
from graphconv.ir.graph import Graph, TensorType
from graphconv.onnx.export import build_model
from graphconv.ops import REGISTRY
from graphconv.ops.build import add_op
from graphconv.train.autodiff import Loss, differentiate
from graphconv.weights import init_weights

from .grad_helpers import assert_gradients, assert_onnx_matches

FLIP_W = np.arange(2 * 3 * 3 * 2, dtype=np.float64).reshape(2, 3, 3, 2) / 10 - 1


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def one_layer(op: str, shape: tuple[int, ...], **attrs) -> Graph:
    """x [N, *shape] -> op -> output "y"."""
    g = Graph(op)
    x = g.add_input("x", TensorType(("N", *shape), "float32"))
    g.set_output("y", add_op(g, "layer", op, [x], **attrs))
    return g


def chain(shape: tuple[int, ...], *layers: tuple[str, dict]) -> Graph:
    """x -> layer0 -> layer1 -> ... -> output "y"."""
    g = Graph("chain")
    v = g.add_input("x", TensorType(("N", *shape), "float32"))
    for k, (op, attrs) in enumerate(layers):
        v = add_op(g, f"layer{k}", op, [v], **attrs)
    g.set_output("y", v)
    return g


def random_weights(g: Graph, seed: int) -> dict[str, np.ndarray]:
    """Normal weights (std 0.5) for every parameter not written in the spec, by name."""
    rng = np.random.default_rng(seed)
    return {name: 0.5 * rng.standard_normal(p.value.type.concrete(1))
            for name, p in sorted(g.params.items()) if p.data is None}


def random_input(shape: tuple[int, ...], batch: int, seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed + 1).standard_normal((batch, *shape))}


def check(g: Graph, shape: tuple[int, ...], batch: int, name: str, *, losses=None, inputs_grad: bool = True):
    """Finite differences and onnxruntime on the same graph, weights and inputs; returns the training graph."""
    seed = _seed(name)
    w, x = random_weights(g, seed), random_input(shape, batch, seed)
    losses = losses or [Loss("y", "mse")]
    assert_gradients(g, w, x, losses=losses, inputs_grad=inputs_grad, seed=seed % 1000)
    assert_onnx_matches(g, w, x, losses=losses, inputs_grad=inputs_grad, seed=seed % 1000)
    return differentiate(g, losses, inputs=inputs_grad)


def ops_of(tg) -> list[str]:
    return [n.op for n in tg.graph.nodes]


# (id, per-sample input shape, batch, attributes)
CONV2D = [
    ("plain", (3, 6, 7), 2, dict(out_channels=4, kernel=3)),
    ("batch1", (2, 5, 5), 1, dict(out_channels=3, kernel=2)),
    ("stride2-pad-dilation", (2, 9, 8), 3, dict(out_channels=3, kernel=3, stride=2, padding=1, dilation=2)),
    ("asymmetric-pad", (3, 7, 6), 1, dict(out_channels=2, kernel=[3, 2], stride=[2, 1], padding=[2, 0, 1, 3])),
    ("pad-wider-than-kernel", (2, 5, 4), 2, dict(out_channels=2, kernel=2, padding=[3, 2, 0, 3], stride=[1, 2])),
    ("same-stride2", (2, 8, 7), 2, dict(out_channels=3, kernel=3, stride=2, padding="same")),
    ("same-stride2-even-kernel-dilation", (2, 7, 9), 3, dict(out_channels=2, kernel=[4, 2], stride=2,
                                                              dilation=[1, 2], padding="same")),
    ("same-stride1", (2, 5, 6), 2, dict(out_channels=2, kernel=[3, 4], padding="same")),
    ("uncovered-rows", (2, 8, 10), 2, dict(out_channels=3, kernel=3, stride=3)),
    ("uncovered-rows-dilation", (2, 9, 8), 3, dict(out_channels=2, kernel=2, stride=[3, 2], dilation=[2, 3],
                                                    padding=[1, 0, 0, 0])),
    ("1x1-stride2", (3, 7, 6), 2, dict(out_channels=4, kernel=1, stride=2)),
    ("groups2", (4, 6, 6), 2, dict(out_channels=6, kernel=3, groups=2, padding=1)),
    ("groups3-stride-nobias", (6, 7, 7), 3, dict(out_channels=3, kernel=[2, 3], groups=3, stride=2, bias=False)),
    ("groups2-all", (4, 9, 8), 2, dict(out_channels=4, kernel=3, groups=2, stride=2, dilation=2,
                                        padding=[2, 1, 0, 2], flip=True)),
    ("depthwise", (3, 6, 6), 2, dict(kernel=3, depthwise=True, padding=1)),
    ("depthwise-multiplier-stride", (2, 7, 6), 3, dict(kernel=3, depthwise=True, out_channels=4, stride=2)),
    ("depthwise-same-nobias", (3, 7, 7), 1, dict(kernel=5, depthwise=True, stride=2, padding="same",
                                                 bias=False)),
    ("nobias", (3, 5, 6), 2, dict(out_channels=2, kernel=3, bias=False)),
    ("flip", (3, 7, 6), 2, dict(out_channels=3, kernel=[3, 2], flip=True, stride=2, padding=[1, 0, 0, 1])),
    ("flip-dilation-nobias", (2, 8, 8), 1, dict(out_channels=2, kernel=[2, 3], flip=True, dilation=2, bias=False)),
    # the weight written in the spec is fixed: only the bias and x get gradients
    ("flip-fixed-weight", (3, 6, 5), 2, dict(weight=FLIP_W, flip=True)),
]


@pytest.mark.parametrize("shape, batch, attrs", [c[1:] for c in CONV2D], ids=[c[0] for c in CONV2D])
def test_conv2d(shape, batch, attrs, request):
    g = one_layer("conv2d", shape, **attrs)
    tg = check(g, shape, batch, request.node.name)
    fixed = "weight" in attrs
    assert ops_of(tg).count("conv2d_grad_weight") == (0 if fixed else 1)
    assert ("grad:layer.weight" in tg.graph.outputs) != fixed
    assert ("grad:layer.bias" in tg.graph.outputs) == (attrs.get("bias", True) is not False)


def test_conv2d_frozen_weight_only_dx():
    shape = (3, 7, 7)
    g = one_layer("conv2d", shape, out_channels=4, kernel=3, stride=2, padding=1, frozen=True)
    tg = check(g, shape, 2, "conv2d-frozen")
    assert ops_of(tg).count("conv2d_grad_input") == 1
    assert "conv2d_grad_weight" not in ops_of(tg) and "reduce_sum" not in ops_of(tg)
    assert [k for k in tg.graph.outputs if k.startswith("grad:")] == ["grad:x"]


def test_conv2d_input_not_wanted():
    """The network's input needs no gradient: only the parameters' are built."""
    shape = (2, 6, 6)
    g = one_layer("conv2d", shape, out_channels=3, kernel=3, groups=1, stride=2)
    tg = check(g, shape, 2, "conv2d-no-dx", inputs_grad=False)
    assert "conv2d_grad_input" not in ops_of(tg)
    assert sorted(tg.grads) == ["layer.bias", "layer.weight"]


def test_conv2d_chain():
    """dx of the second layer is the first layer's dy; channels mix through groups and strides."""
    shape = (4, 9, 9)
    g = chain(shape, ("conv2d", dict(out_channels=6, kernel=3, groups=2, padding="same", stride=2)),
              ("conv2d", dict(out_channels=3, kernel=2, dilation=2, padding=[1, 0, 0, 1])),
              ("conv_transpose2d", dict(out_channels=2, kernel=3, stride=2, padding=1, output_padding=1)))
    check(g, shape, 2, "conv-chain")


CONV_T = [
    ("plain", (3, 4, 5), 2, dict(out_channels=2, kernel=3)),
    ("batch1-nobias", (2, 3, 3), 1, dict(out_channels=3, kernel=2, bias=False)),
    ("stride2-pad-outpad", (2, 4, 3), 3, dict(out_channels=3, kernel=3, stride=2, padding=1, output_padding=1)),
    ("asymmetric-all-groups2", (4, 3, 4), 2, dict(out_channels=6, kernel=[3, 2], stride=[2, 3],
                                                  padding=[1, 0, 2, 1], output_padding=[1, 2], groups=2)),
    ("dilation-stride-outpad", (3, 4, 3), 2, dict(out_channels=2, kernel=3, stride=2, dilation=2,
                                                  output_padding=1, bias=False)),
    # output_padding >= stride (allowed below the dilation): more windows fit dy than x has rows
    ("outpad-beyond-stride", (2, 4, 4), 2, dict(out_channels=2, kernel=2, stride=1, dilation=3,
                                                output_padding=[2, 1], padding=[0, 1, 1, 0])),
    ("outpad-beyond-stride-nobias", (2, 4, 4), 1, dict(out_channels=2, kernel=3, stride=1, dilation=3,
                                                       output_padding=[1, 2], padding=[1, 0, 3, 1], bias=False)),
    ("groups3", (3, 5, 4), 3, dict(out_channels=6, kernel=2, stride=2, groups=3, padding=[0, 1, 1, 0])),
    ("depthwise", (3, 4, 4), 2, dict(out_channels=3, kernel=3, groups=3, stride=2, padding=1)),
    ("pad-crops-much", (2, 5, 5), 2, dict(out_channels=2, kernel=3, stride=2, padding=[3, 2, 2, 3])),
]


@pytest.mark.parametrize("shape, batch, attrs", [c[1:] for c in CONV_T], ids=[c[0] for c in CONV_T])
def test_conv_transpose2d(shape, batch, attrs, request):
    g = one_layer("conv_transpose2d", shape, **attrs)
    tg = check(g, shape, batch, request.node.name)
    assert "conv_transpose2d_grad_input" in ops_of(tg) and "conv2d_grad_weight" in ops_of(tg)


def test_conv_transpose2d_frozen_weight_only_dx():
    shape = (2, 4, 3)
    g = one_layer("conv_transpose2d", shape, out_channels=2, kernel=3, stride=2, output_padding=1, frozen=True)
    tg = check(g, shape, 2, "convT-frozen")
    assert "conv2d_grad_weight" not in ops_of(tg) and "reduce_sum" not in ops_of(tg)
    assert list(tg.grads) == ["x"]


DENSE = [
    ("dense", "dense", (7,), 3, dict(units=5)),
    ("dense-batch1-nobias", "dense", (4,), 1, dict(units=3, bias=False)),
    ("channel_matmul-2d", "channel_matmul", (6,), 2, dict(units=3)),
    ("channel_matmul-3d-nobias", "channel_matmul", (4, 5), 2, dict(units=2, bias=False)),
    ("channel_matmul-4d", "channel_matmul", (3, 4, 5), 3, dict(units=4)),
    ("channel_matmul-5d", "channel_matmul", (3, 2, 2, 3), 1, dict(units=2)),
]


@pytest.mark.parametrize("op, shape, batch, attrs", [c[1:] for c in DENSE], ids=[c[0] for c in DENSE])
def test_dense(op, shape, batch, attrs, request):
    tg = check(one_layer(op, shape, **attrs), shape, batch, request.node.name)
    assert {"dense_grad_input", "dense_grad_weight"} <= set(ops_of(tg))


def test_dense_frozen_weight_only_dx():
    shape = (6,)
    tg = check(one_layer("dense", shape, units=4, frozen=True), shape, 2, "dense-frozen")
    assert "dense_grad_weight" not in ops_of(tg) and list(tg.grads) == ["x"]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_dense_head_cross_entropy(smoothing):
    """A classifier head: two dense layers, softmax cross-entropy (optionally smoothed) on the logits."""
    g = Graph("head")
    x = g.add_input("x", TensorType(("N", 6), "float32"))
    h = add_op(g, "fc1", "dense", [x], units=5)
    g.set_output("y", add_op(g, "fc2", "dense", [h], units=4, bias=False))
    tg = check(g, (6,), 3, f"head-{smoothing}", losses=[Loss("y", "cross_entropy", label_smoothing=smoothing)])
    assert sorted(tg.grads) == ["fc1.bias", "fc1.weight", "fc2.weight", "x"]


def test_conv_then_channel_matmul():
    shape = (2, 6, 5)
    g = chain(shape, ("conv2d", dict(out_channels=3, kernel=3, stride=2, padding="same")),
              ("channel_matmul", dict(units=4)))
    check(g, shape, 2, "conv-channel_matmul")


# -- the gradient ops themselves ------------------------------------------------------------------------------------

def _types(*shapes):
    return [TensorType(tuple(s), "float32") for s in shapes]


@pytest.mark.parametrize("op, shapes, attrs, message", [
    ("conv2d_grad_input", [("N", 4, 3, 3), (4, 2, 3, 3)], dict(size=[6, 6]), "is not the output"),
    ("conv2d_grad_input", [("N", 4, 4, 4), (3, 2, 3, 3)], dict(size=[6, 6]), "does not fit the weight"),
    ("conv2d_grad_input", [("N", 4, 4, 4), (4, 2, 3, 3)], dict(size=[6, 6], groups=3), "does not fit the weight"),
    ("conv2d_grad_weight", [("N", 4, 6, 6), ("N", 3, 5, 5)], dict(kernel=3), "does not fit the windows"),
    ("conv2d_grad_weight", [("N", 4, 6, 6), ("N", 3, 4, 4)], dict(kernel=3, groups=2), "groups"),
    ("conv2d_grad_weight", [("N", 4, 6, 6), ("M", 3, 4, 4)], dict(kernel=3), "batch"),
    ("conv_transpose2d_grad_input", [("N", 2, 12, 12), (3, 2, 3, 3)], dict(size=[4, 4], stride=2),
     "is not the output"),
    ("conv_transpose2d_grad_input", [("N", 3, 6, 6), (3, 2, 3, 3)], dict(size=[4, 4]), "does not fit"),
    ("dense_grad_input", [("N", 5), (4, 3)], {}, "does not fit the weight"),
    ("dense_grad_weight", [("N", 5, 2), ("N", 4, 3)], {}, "do not fit"),
])
def test_grad_op_shape_errors(op, shapes, attrs, message):
    d = REGISTRY[op]
    with pytest.raises(OpError, match=message):
        d.infer(d.check_attrs(attrs), _types(*shapes))


def test_grad_op_attributes_are_validated():
    with pytest.raises(OpError, match="stride"):
        REGISTRY["conv2d_grad_weight"].check_attrs(dict(kernel=3, stride=0))
    with pytest.raises(OpError, match="size"):
        REGISTRY["conv2d_grad_input"].check_attrs({})
    with pytest.raises(OpError, match="padding"):
        REGISTRY["conv_transpose2d_grad_input"].check_attrs(dict(size=4, padding="same"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_grad_ops_keep_dtype(dtype):
    """The references compute in the inputs' dtype (float32 stays float32)."""
    rng = np.random.default_rng(0)
    dy = rng.standard_normal((2, 4, 3, 3)).astype(dtype)
    w = rng.standard_normal((4, 3, 2, 2)).astype(dtype)
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    outs = [REGISTRY["conv2d_grad_input"].reference(REGISTRY["conv2d_grad_input"].check_attrs(dict(size=4)),
                                                    [dy, w], {}, None),
            REGISTRY["conv2d_grad_weight"].reference(REGISTRY["conv2d_grad_weight"].check_attrs(dict(kernel=2)),
                                                     [x, dy], {}, None),
            REGISTRY["conv_transpose2d_grad_input"].reference(
                REGISTRY["conv_transpose2d_grad_input"].check_attrs(dict(size=3)), [x, w], {}, None),
            REGISTRY["dense_grad_input"].reference({}, [dy, w[:, :, 0, 0]], {}, None),
            REGISTRY["dense_grad_weight"].reference({}, [x[:, :, :3, :3], dy], {}, None)]
    assert [o.dtype for o in outs] == [np.dtype(dtype)] * 5
    assert [o.shape for o in outs] == [(2, 3, 4, 4), (4, 3, 2, 2), (2, 4, 3, 3), (2, 3, 3, 3), (4, 3)]


def test_exported_training_graph_is_valid_onnx():
    """The gradient ops' ONNX nodes pass the checker and strict shape inference (grouped, flipped, cropped)."""
    shape = (4, 9, 8)
    g = chain(shape, ("conv2d", dict(out_channels=4, kernel=3, groups=2, stride=2, dilation=2, padding=[2, 1, 0, 2],
                                     flip=True)),
              ("conv_transpose2d", dict(out_channels=2, kernel=2, stride=1, dilation=3, output_padding=[2, 1],
                                        groups=2)),
              ("channel_matmul", dict(units=3)))
    tg = differentiate(g, [Loss("y", "mse")], inputs=True)
    model = build_model(tg.graph, weights=init_weights(tg.graph, 0), dtype="float32")
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
