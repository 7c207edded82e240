"""The autodiff pass: training-mode rewrites, losses, which tensors get gradients, accumulation, errors; gradient
checks of batchnorm in training (batch statistics), frozen batchnorm and the losses."""

from __future__ import annotations

import numpy as np
import pytest

from graphconv.errors import TrainingError
from graphconv.ir.graph import Graph, TensorType
from graphconv.ir.verify import verify
from graphconv.ops.build import add_op
from graphconv.reference.executor import run_graph
from graphconv.train.autodiff import LOSS, Loss, differentiate
from graphconv.train.gradcheck import training_feed

from .grad_helpers import assert_gradients, assert_onnx_matches


def _bn_graph(shape=("N", 3, 4, 4), *, frozen=False, affine=True, dtype="float64"):
    g = Graph("bn")
    x = g.add_input("x", TensorType(shape, dtype))
    g.set_output("y", add_op(g, "bn", "batchnorm", [x], frozen=frozen, affine=affine, momentum=0.2))
    return g


def _weights(g: Graph, seed=0):
    rng = np.random.default_rng(seed)
    w = {}
    for name, p in g.params.items():
        shape = p.value.type.shape
        if name.endswith("running_var"):
            w[name] = rng.random(shape) + 0.5
        elif name.endswith("running_mean"):
            w[name] = rng.normal(size=shape) * 0.3
        else:
            w[name] = rng.normal(size=shape) + (1.0 if name.endswith("weight") else 0.0)
    return w


def _x(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape)


# -- training mode ------------------------------------------------------------------------------------------------

def test_dropout_becomes_a_mask_input_and_rate_zero_the_identity():
    g = Graph("d")
    x = g.add_input("x", TensorType(("N", 5), "float32"))
    h = add_op(g, "drop", "dropout", [x], rate=0.25)
    y = add_op(g, "drop0", "dropout", [h], rate=0.0)
    g.set_output("y", y)
    tg = differentiate(g, [Loss("y", "mse")], wrt=[], inputs=True)
    verify(tg.graph)
    ops = {n.name: n.op for n in tg.graph.nodes}
    assert ops["drop"] == "mul" and ops["drop0"] == "identity"
    assert tg.masks == {"drop@mask": 0.25}
    assert [v.name for v in tg.graph.inputs] == ["x", "drop@mask", "y@target"]
    # the original graph is untouched
    assert [n.op for n in g.nodes] == ["dropout", "dropout"]


def test_batchnorm_uses_batch_statistics_and_outputs_running_updates():
    g = _bn_graph()
    tg = differentiate(g, [Loss("y", "mse")])
    verify(tg.graph)
    assert [n.op for n in tg.graph.nodes][:4] == ["bn_stats", "bn_running", "bn_running", "bn_train"]
    assert tg.updates == {"bn.running_mean": "update:bn.running_mean", "bn.running_var": "update:bn.running_var"}
    w = _weights(g)
    x = _x((4, 3, 4, 4))
    out = run_graph(tg.graph, training_feed(tg, {"x": x}), w, dtype="float64")
    axes = (0, 2, 3)
    mean, var = x.mean(axis=axes), x.var(axis=axes, ddof=1)
    np.testing.assert_allclose(out["update:bn.running_mean"], 0.8 * w["bn.running_mean"] + 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(out["update:bn.running_var"], 0.8 * w["bn.running_var"] + 0.2 * var, rtol=1e-12)
    # training-mode output equals the reference executor's own training mode
    want = run_graph(g, {"x": x}, w, dtype="float64", training=True)["y"]
    np.testing.assert_allclose(out["y"], want, rtol=1e-12, atol=1e-12)


def test_frozen_batchnorm_keeps_its_statistics_and_gets_no_parameter_gradients():
    g = _bn_graph(frozen=True)
    tg = differentiate(g, [Loss("y", "mse")], inputs=True)
    assert [n.op for n in tg.graph.nodes][0] == "batchnorm"
    assert set(tg.grads) == {"x"} and not tg.updates


def test_only_tensors_that_reach_the_loss_get_gradients():
    g = Graph("two")
    x = g.add_input("x", TensorType(("N", 4), "float64"))
    a = add_op(g, "a", "batchnorm", [x])
    b = add_op(g, "b", "batchnorm", [x])
    g.set_output("ya", a)
    g.set_output("yb", b)
    tg = differentiate(g, [Loss("ya", "mse")])
    assert set(tg.grads) == {"a.weight", "a.bias"}
    # nothing is computed for the input when it is not asked for
    assert not any(n.op == "bn_grad_input" for n in tg.graph.nodes)


def test_gradients_of_a_value_with_several_readers_add_up():
    g = Graph("fan")
    x = g.add_input("x", TensorType(("N", 4), "float64"))
    a = add_op(g, "a", "batchnorm", [x])
    b = add_op(g, "b", "batchnorm", [x])
    g.set_output("ya", a)
    g.set_output("yb", b)
    losses = [Loss("ya", "mse"), Loss("yb", "cross_entropy", weight=0.3)]
    tg = differentiate(g, losses, inputs=True)
    assert any(n.name == "x@grad" and n.op == "add" for n in tg.graph.nodes)
    w = _weights(g)
    assert_gradients(g, w, {"x": _x((5, 4))}, losses=losses)
    assert_onnx_matches(g, w, {"x": _x((5, 4))}, losses=losses)


def test_weighted_losses_add_up_to_the_total():
    g = Graph("two")
    x = g.add_input("x", TensorType(("N", 4), "float64"))
    g.set_output("ya", add_op(g, "a", "batchnorm", [x]))
    g.set_output("yb", add_op(g, "b", "batchnorm", [x]))
    w = _weights(g)
    feed = {"x": _x((5, 4)), "ya@target": _x((5, 4), seed=2), "yb@target": _x((5, 4), seed=3)}
    parts = []
    for out in ("ya", "yb"):
        tg = differentiate(g, [Loss(out, "mse")], wrt=[])
        parts.append(run_graph(tg.graph, {k: feed[k] for k in ("x", f"{out}@target")}, w, dtype="float64")[LOSS][0])
    tg = differentiate(g, [Loss("ya", "mse", weight=1.0), Loss("yb", "mse", weight=0.3)], wrt=[])
    total = run_graph(tg.graph, feed, w, dtype="float64")[LOSS][0]
    assert total == pytest.approx(parts[0] + 0.3 * parts[1], rel=1e-12)


# -- errors -------------------------------------------------------------------------------------------------------

def test_loss_errors_are_clear():
    g = _bn_graph()
    with pytest.raises(TrainingError, match="has no output 'logits'.*its outputs: y"):
        differentiate(g, [Loss("logits")])
    with pytest.raises(TrainingError, match="unknown loss 'hinge'"):
        differentiate(g, [Loss("y", "hinge")])
    with pytest.raises(TrainingError, match="two losses on output 'y'"):
        differentiate(g, [Loss("y", "mse"), Loss("y", "mse")])
    with pytest.raises(TrainingError, match="label smoothing applies to cross_entropy"):
        differentiate(g, [Loss("y", "mse", label_smoothing=0.1)])
    with pytest.raises(TrainingError, match=r"cross_entropy on output 'y' \(f64\[N, 3, 4, 4\]\).*logits \[N, classes\]"):
        differentiate(g, [Loss("y")])
    with pytest.raises(TrainingError, match="at least one loss"):
        differentiate(g, [])


def test_an_op_without_a_gradient_rule_is_named_with_its_layer():
    g = Graph("blk")
    x = g.add_input("x", TensorType(("N", 16, 2, 2), "float64"))
    h = add_op(g, "tb", "to_blocked", [x], block=16)
    y = add_op(g, "fb", "from_blocked", [h], block=16)
    g.set_output("y", y)
    with pytest.raises(TrainingError, match="cannot differentiate layer 'fb' \\(from_blocked\\).*no gradient rule"):
        differentiate(g, [Loss("y", "mse")], inputs=True)


def test_an_optimized_graph_with_fused_epilogues_is_refused():
    g = _bn_graph()
    g.nodes[0].attrs["epilogue"] = (("relu", {}, None),)
    with pytest.raises(TrainingError, match="fused epilogue"):
        differentiate(g, [Loss("y", "mse")])


# -- gradient checks ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [("N", 3, 4, 5), ("N", 6)], ids=["nchw", "nc"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batchnorm_training_gradients(shape, affine):
    g = _bn_graph(shape, affine=affine)
    x = _x((3, *shape[1:]))
    w = _weights(g)
    assert_gradients(g, w, {"x": x}, losses=[Loss("y", "mse")])
    assert_onnx_matches(g, w, {"x": x}, losses=[Loss("y", "mse")])


def test_frozen_batchnorm_gradient():
    g = _bn_graph(frozen=True)
    w = _weights(g)
    x = _x((2, 3, 4, 4))
    assert_gradients(g, w, {"x": x}, losses=[Loss("y", "mse")])
    assert_onnx_matches(g, w, {"x": x}, losses=[Loss("y", "mse")])


def _identity_graph(shape):
    g = Graph("id")
    x = g.add_input("x", TensorType(shape, "float64"))
    g.set_output("y", x)
    return g


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_cross_entropy_value_and_gradient(smoothing, weight):
    g = _identity_graph(("N", 7))
    z = _x((5, 7)) * 3
    loss = Loss("y", "cross_entropy", weight=weight, label_smoothing=smoothing)
    tg = differentiate(g, [loss], wrt=[], inputs=True)
    labels = np.array([0, 3, 6, 2, 2])
    onehot = np.eye(7)[labels]
    out = run_graph(tg.graph, {"x": z, "y@target": onehot}, {}, dtype="float64")
    # PyTorch's CrossEntropyLoss(label_smoothing=s), written out
    logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    nll = -logp[np.arange(5), labels]
    smooth = -logp.mean(axis=1)
    want = weight * np.mean((1 - smoothing) * nll + smoothing * smooth)
    assert out[LOSS][0] == pytest.approx(want, rel=1e-12)
    p = np.exp(logp)
    target = onehot * (1 - smoothing) + smoothing / 7
    np.testing.assert_allclose(out["grad:x"], weight * (p - target) / 5, rtol=1e-10, atol=1e-14)
    assert_gradients(g, {}, {"x": z}, losses=[loss])
    assert_onnx_matches(g, {}, {"x": z}, losses=[loss])


def test_mse_value_and_gradient():
    g = _identity_graph(("N", 2, 3))
    x = _x((4, 2, 3))
    loss = Loss("y", "mse", weight=0.5)
    tg = differentiate(g, [loss], wrt=[], inputs=True)
    t = _x((4, 2, 3), seed=7)
    out = run_graph(tg.graph, {"x": x, "y@target": t}, {}, dtype="float64")
    assert out[LOSS][0] == pytest.approx(0.5 * np.mean((x - t) ** 2), rel=1e-12)
    np.testing.assert_allclose(out["grad:x"], 0.5 * 2 * (x - t) / x.size, rtol=1e-12)
    assert_gradients(g, {}, {"x": x}, losses=[loss])
    assert_onnx_matches(g, {}, {"x": x}, losses=[loss])


def test_specs_cannot_call_ops_only_training_graphs_hold():
    from graphconv.errors import SpecError
    from graphconv.spec import load_graph_text

    text = "network n {\n  input x: f32[N, 4]\n  y = x -> neg\n  output y\n}\n"
    with pytest.raises(SpecError, match=r"<string>:3:\d+: error: .*neg"):
        load_graph_text(text)
    # their attribute words (activation names of activation_grad) do not become bare words either
    text = "network n {\n  input x: f32[N, 4]\n  y = relu\n  output y\n}\n"
    with pytest.raises(SpecError, match="'relu' is a layer, not a value"):
        load_graph_text(text)
