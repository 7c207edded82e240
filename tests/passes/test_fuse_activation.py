"""fuse_activation and the epilogue it builds: structure, numerics, shape checks and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

from graphconv.errors import OpError
from graphconv.ir.graph import TensorType
from graphconv.onnx.export import export_onnx
from graphconv.ops import REGISTRY, epilogue
from graphconv.passes.fuse_activation import FuseActivation

from .helpers import add_op, assert_same_function, graph_with_input, ops, program, run_pass

FUSE = FuseActivation()
ACTS = [("relu", {}), ("leaky_relu", dict(alpha=0.2)), ("clip", dict(min=0.0, max=6.0)), ("sigmoid", {}),
        ("tanh", {}), ("elu", dict(alpha=0.5)), ("selu", {})]


@pytest.mark.parametrize("act, attrs", ACTS)
@pytest.mark.parametrize("layer, lattrs, shape", [
    ("conv2d", dict(out_channels=4, kernel=3, padding=1), (3, 6, 6)),
    ("dense", dict(units=5), (7,)),
    ("conv_transpose2d", dict(out_channels=2, kernel=2, stride=2), (3, 4, 4)),
    ("max_pool2d", dict(kernel=2), (3, 6, 6)),
])
def test_activation_fuses(act, attrs, layer, lattrs, shape):
    g, x = graph_with_input(shape=shape)
    y = add_op(g, "layer", layer, [x], **lattrs)
    g.set_output("y", add_op(g, "act", act, [y], **attrs))
    before = program(g)
    after, result = run_pass(FUSE, before)
    assert ops(after.graph) == [layer]
    node = after.graph.nodes[0]
    assert node.attrs["epilogue"] == ((act, tuple(REGISTRY[act].check_attrs(attrs).items()), None),)
    assert result.counts == {"activations fused": 1}
    assert after.graph.outputs["y"] is node.output
    assert_same_function(before, after)


def test_residual_add_and_relu_fuse_into_the_second_conv():
    g, x = graph_with_input(shape=(4, 6, 6))
    y = add_op(g, "c1", "conv2d", [x], out_channels=4, kernel=3, padding=1)
    y = add_op(g, "r1", "relu", [y])
    y = add_op(g, "c2", "conv2d", [y], out_channels=4, kernel=3, padding=1)
    s = add_op(g, "short", "conv2d", [x], out_channels=4, kernel=1)  # computed after c2: the pass re-sorts
    y = add_op(g, "add", "add", [s, y])
    g.set_output("y", add_op(g, "r2", "relu", [y]))
    before = program(g)
    after, result = run_pass(FUSE, before)
    assert result.counts == {"activations fused": 2, "residual adds fused": 1}
    names = [n.name for n in after.graph.nodes]
    assert names == ["c1", "short", "c2"]
    c2 = after.graph.nodes[2]
    assert [v.name for v in c2.inputs] == ["c1", "short"]
    assert c2.attrs["epilogue"] == (("add", (), 1), ("relu", (), None))
    assert epilogue.describe(c2.attrs, c2.inputs) == "add(%short), relu"
    assert_same_function(before, after)


def test_shortcut_conv_absorbs_the_add_when_it_is_the_single_reader():
    """Either side of the add may take it; the first out_fusable producer in order does."""
    g, x = graph_with_input(shape=(4, 6, 6))
    a = add_op(g, "a", "conv2d", [x], out_channels=4, kernel=1)
    b = add_op(g, "b", "max_pool2d", [x], kernel=3, stride=1, padding=1)
    g.set_output("y", add_op(g, "add", "add", [b, a]))
    before = program(g)
    after, result = run_pass(FUSE, before)
    assert ops(after.graph) == ["conv2d", "max_pool2d"] or ops(after.graph) == ["max_pool2d", "conv2d"]
    assert result.counts == {"residual adds fused": 1}
    assert_same_function(before, after)


def test_not_fused_when_the_value_is_needed_elsewhere():
    g, x = graph_with_input()
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("pre", y)
    g.set_output("post", add_op(g, "act", "relu", [y]))
    assert not run_pass(FUSE, program(g))[1].changed
    g, x = graph_with_input()
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("a", add_op(g, "act", "relu", [y]))
    g.set_output("b", add_op(g, "act2", "sigmoid", [y]))
    assert not run_pass(FUSE, program(g))[1].changed


def test_not_fused_for_non_commutative_broadcast_or_shape_changing_operands():
    g, x = graph_with_input(shape=(4, 6, 6))
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3, padding=1)
    g.set_output("y", add_op(g, "sub", "sub", [x, y]))  # sub: not commutative
    assert not run_pass(FUSE, program(g))[1].changed
    g, x = graph_with_input(shape=(4, 6, 6))
    y = add_op(g, "conv", "conv2d", [x], out_channels=1, kernel=3, padding=1)
    g.set_output("y", add_op(g, "add", "add", [y, x]))  # would broadcast the result to 4 channels
    assert not run_pass(FUSE, program(g))[1].changed
    g, x = graph_with_input(shape=(4, 6, 6))
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3, padding=1)
    g.set_output("y", add_op(g, "add", "add", [y, y]))  # reads the value twice
    assert not run_pass(FUSE, program(g))[1].changed


def test_batchnorm_and_softmax_are_not_absorbed():
    g, x = graph_with_input()
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("y", add_op(g, "bn", "batchnorm", [y]))
    assert not run_pass(FUSE, program(g))[1].changed
    g, x = graph_with_input(shape=(7,))
    y = add_op(g, "fc", "dense", [x], units=3)
    g.set_output("y", add_op(g, "sm", "softmax", [y]))
    assert not run_pass(FUSE, program(g))[1].changed


def test_decided_by_fusion_kind_not_by_name(monkeypatch):
    g, x = graph_with_input()
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("y", add_op(g, "act", "relu", [y]))
    monkeypatch.setattr(type(REGISTRY["relu"]), "fusion", "opaque")
    assert not run_pass(FUSE, program(g))[1].changed
    monkeypatch.setattr(type(REGISTRY["relu"]), "fusion", "elementwise")
    monkeypatch.setattr(type(REGISTRY["conv2d"]), "fusion", "opaque")
    assert not run_pass(FUSE, program(g))[1].changed


def test_fused_export_is_standard_onnx():
    g, x = graph_with_input(shape=(4, 6, 6))
    y = add_op(g, "c", "conv2d", [x], out_channels=4, kernel=3, padding=1)
    y = add_op(g, "add", "add", [y, x])
    g.set_output("y", add_op(g, "r6", "clip", [y], min=0.0, max=6.0))
    after, _ = run_pass(FUSE, program(g))
    model = export_onnx(after.graph, weights=after.weights)
    assert [(n.op_type, n.name) for n in model.graph.node] == [("Conv", "c/Conv"), ("Add", "c/Add"), ("Clip", "c"),
                                                               ("Identity", "output.y")]
    import onnxruntime as ort
    xs = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    (got,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": xs})
    from .helpers import outputs
    want = outputs(after, 2)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_epilogue_shape_inference_errors():
    conv = REGISTRY["conv2d"]
    attrs = conv.resolve(conv.check_attrs(dict(out_channels=4, kernel=3)), [TensorType(("N", 3, 6, 6))])
    t = [TensorType(("N", 3, 6, 6))]
    with pytest.raises(OpError, match="epilogue step 'softmax' is not an elementwise"):
        epilogue.infer(conv, {**attrs, "epilogue": (("softmax", (("axis", 1),), None),)}, t)
    with pytest.raises(OpError, match=r"epilogue operands \[0\] do not name the node's extra inputs 1\.\.1"):
        epilogue.infer(conv, {**attrs, "epilogue": (("add", (), 0),)}, t + [TensorType(("N", 4, 4, 4))])
    with pytest.raises(OpError, match=r"changes the output from f32\[N, 4, 4, 4\] to f32\[2, N, 4, 4, 4\]"):
        epilogue.infer(conv, {**attrs, "epilogue": (("add", (), 1),)}, t + [TensorType((2, "N", 4, 4, 4))])
    with pytest.raises(OpError, match="global_avg_pool cannot carry an epilogue"):
        epilogue.infer(REGISTRY["global_avg_pool"], {"epilogue": (("relu", (), None),)}, t)


def test_verifier_rejects_a_malformed_epilogue():
    from graphconv.ir.verify import lint
    g, x = graph_with_input()
    y = add_op(g, "conv", "conv2d", [x], out_channels=4, kernel=3)
    g.set_output("y", y)
    g.nodes[0].attrs["epilogue"] = (("tanh", (), 3),)
    assert lint(g) == ["node conv: malformed epilogue (('tanh', (), 3),): OpError: epilogue operands [3] do not name "
                       "the node's extra inputs 0..0"]
