"""Optimizers in the training graph: several steps of each against the update rules of torch.optim written out in
numpy (on the gradients the autodiff pass computes), and the training step on onnxruntime against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from graphconv.errors import GraphconvError, TrainingError
from graphconv.ir.graph import Graph, TensorType
from graphconv.ir.verify import verify
from graphconv.network import Network
from graphconv.ops.build import add_op
from graphconv.reference.executor import run_graph
from graphconv.train.autodiff import Loss, differentiate
from graphconv.train.optim import Optimizer
from graphconv.train.step import TrainStep, build_training_graph


def _net(dtype="float64", dropout=0.0):
    g = Graph("opt")
    x = g.add_input("x", TensorType(("N", 4, 3, 3), dtype))
    h = add_op(g, "bn1", "batchnorm", [x])
    if dropout:
        h = add_op(g, "drop", "dropout", [h], rate=dropout)
    # bn2 uses its running statistics, so bn1's bias matters (after a batch-statistics batchnorm it would not)
    g.set_output("y", add_op(g, "bn2", "batchnorm", [h], frozen=True))
    rng = np.random.default_rng(0)
    w = {n: (rng.normal(size=p.value.type.shape) * 0.5 + (1.0 if n.endswith(("weight", "var")) else 0.0))
         for n, p in g.params.items()}
    for n in w:
        if n.endswith("running_var"):
            w[n] = np.abs(w[n]) + 0.5
    return Network(g, w)


def _data(batch=4, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, 4, 3, 3)), rng.normal(size=(batch, 4, 3, 3))


def _numpy_optimizer(opt: Optimizer, weights, grads_of, steps, lrs):
    """torch.optim's documented algorithms (SGD with dampening 0, Adam, AdamW), on our gradients."""
    w = {k: v.copy() for k, v in weights.items()}
    state: dict[str, dict[str, np.ndarray]] = {}
    for t in range(1, steps + 1):
        lr = lrs[t - 1]
        grads = grads_of(w)
        for name, g in grads.items():
            p = w[name]
            s = state.setdefault(name, {})
            if opt.kind == "sgd":
                d = g + opt.decay * p
                if opt.momentum:
                    s["buf"] = d.copy() if "buf" not in s else opt.momentum * s["buf"] + d
                    d = d + opt.momentum * s["buf"] if opt.nesterov else s["buf"]
                w[name] = p - lr * d
            else:
                if opt.kind == "adamw":
                    p = p * (1 - lr * opt.decay)
                else:
                    g = g + opt.decay * p
                s["m"] = opt.beta1 * s.get("m", 0) + (1 - opt.beta1) * g
                s["v"] = opt.beta2 * s.get("v", 0) + (1 - opt.beta2) * g * g
                bc1, bc2 = 1 - opt.beta1 ** t, 1 - opt.beta2 ** t
                w[name] = p - (lr / bc1) * s["m"] / (np.sqrt(s["v"]) / np.sqrt(bc2) + opt.eps)
    return w


OPTIMIZERS = {
    "sgd": Optimizer("sgd", momentum=0.0),
    "sgd-decay": Optimizer("sgd", momentum=0.0, weight_decay=0.01),
    "momentum": Optimizer("sgd", momentum=0.9, weight_decay=5e-4),
    "nesterov": Optimizer("sgd", momentum=0.8, nesterov=True, weight_decay=1e-3),
    "adam": Optimizer("adam"),
    "adam-l2": Optimizer("adam", weight_decay=0.01, beta1=0.8, beta2=0.99, eps=1e-6),
    "adamw": Optimizer("adamw"),
}


@pytest.mark.parametrize("which", OPTIMIZERS)
def test_updates_follow_torch_optim(which):
    opt = OPTIMIZERS[which]
    net = _net()
    x, t = _data()
    lrs = [0.1, 0.05, 0.02, 0.01]
    step = TrainStep(net, [Loss("y", "mse")], opt, dtype="float64")
    for lr in lrs:
        step.run({"x": x}, {"y": t}, lr=lr)
    got = step.weights()

    tg = differentiate(net.graph, [Loss("y", "mse")])
    trainable = list(tg.grads)

    def grads_of(w):
        # running statistics do not influence training-mode gradients; they only advance
        out = run_graph(tg.graph, {"x": x, "y@target": t}, {**net.weights, **w}, dtype="float64")
        return {n: out[tg.grads[n]] for n in trainable}

    want = _numpy_optimizer(opt, {n: net.weights[n] for n in trainable}, grads_of, len(lrs), lrs)
    for n in trainable:
        np.testing.assert_allclose(got[n], want[n], rtol=1e-10, atol=1e-12, err_msg=n)
        assert not np.allclose(got[n], net.weights[n])  # it did move


def test_running_statistics_advance_every_step():
    net = _net()
    x, t = _data()
    step = TrainStep(net, [Loss("y", "mse")], Optimizer("sgd", momentum=0.0), dtype="float64")
    step.run({"x": x}, {"y": t}, lr=0.0)
    mean = x.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(step.weights()["bn1.running_mean"], 0.9 * net.weights["bn1.running_mean"] + 0.1 * mean,
                               rtol=1e-12)


def test_the_training_graph_has_one_update_per_state_parameter():
    net = _net()
    tg = build_training_graph(net.graph, [Loss("y", "mse")], Optimizer("adam"))
    verify(tg.graph)
    assert [v.name for v in tg.graph.inputs] == ["x", "y@target", "@lr", "@step"]
    trainable = [n for n, p in tg.graph.params.items() if p.role == "trainable"]
    assert trainable == ["bn1.weight", "bn1.bias"]
    running = ["bn1.running_mean", "bn1.running_var"]  # bn2 is frozen: its statistics stay
    moments = [f"{n}@{s}" for n in trainable for s in "mv"]
    assert sorted(tg.updates) == sorted(trainable + running + moments)
    assert not any(o.startswith("grad:") for o in tg.graph.outputs)
    # every update comes after every other reader of its parameter (backends update in place)
    pos = {n.name: i for i, n in enumerate(tg.graph.nodes)}
    users = tg.graph.consumers()
    for param, out in tg.updates.items():
        writer = tg.graph.outputs[out].producer
        assert all(pos[u.name] <= pos[writer.name] for u in users[param]), param


@pytest.mark.parametrize("which", ["momentum", "nesterov", "adam", "adamw"])
def test_onnx_step_gives_the_reference_state(which):
    net = _net("float32", dropout=0.3)
    x, t = _data(5)
    states = []
    for backend in ("reference", "onnx"):
        step = TrainStep(net, [Loss("y", "mse")], OPTIMIZERS[which], backend=backend, seed=3)
        losses = [step.run({"x": x}, {"y": t}, lr=0.05).loss for _ in range(3)]
        states.append((losses, step.state()))
    (l_ref, s_ref), (l_ort, s_ort) = states
    np.testing.assert_allclose(l_ort, l_ref, rtol=1e-5)
    assert s_ref.keys() == s_ort.keys()
    for k in s_ref:
        np.testing.assert_allclose(s_ort[k], s_ref[k], rtol=1e-4, atol=2e-5, err_msg=k)


def test_dropout_masks_depend_on_seed_and_step_only():
    net = _net("float32", dropout=0.5)
    a = TrainStep(net, [Loss("y", "mse")], seed=1)
    b = TrainStep(net, [Loss("y", "mse")], seed=1)
    c = TrainStep(net, [Loss("y", "mse")], seed=2)
    m = a.masks(3)["drop@mask"]
    assert set(np.unique(m)) == {0.0, 2.0}
    np.testing.assert_array_equal(m, b.masks(3)["drop@mask"])
    assert not np.array_equal(m, c.masks(3)["drop@mask"])
    a.steps = 1
    assert not np.array_equal(m, a.masks(3)["drop@mask"])


def test_state_round_trip_continues_exactly():
    net = _net("float32")
    x, t = _data()
    a = TrainStep(net, [Loss("y", "mse")], Optimizer("adam"))
    for _ in range(2):
        a.run({"x": x}, {"y": t}, lr=0.01)
    saved, steps = a.state(), a.steps
    b = TrainStep(net, [Loss("y", "mse")], Optimizer("adam"))
    b.set_state(saved, steps)
    ra, rb = a.run({"x": x}, {"y": t}, lr=0.01), b.run({"x": x}, {"y": t}, lr=0.01)
    assert ra.loss == rb.loss
    for k, v in a.state().items():
        np.testing.assert_array_equal(v, b.state()[k])


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="rmsprop"), "unknown optimizer 'rmsprop'"),
    (dict(momentum=1.0), "momentum must be in"),
    (dict(kind="adam", nesterov=True), "Nesterov momentum needs sgd"),
    (dict(weight_decay=-1.0), "weight decay must be >= 0"),
    (dict(kind="adam", beta2=1.0), "beta2 must be in"),
])
def test_bad_optimizer_settings(kwargs, message):
    with pytest.raises(TrainingError, match=message):
        Optimizer(**kwargs)


def test_bad_backend_and_device():
    net = _net("float32")
    with pytest.raises(GraphconvError, match="unknown training backend 'tvm'"):
        TrainStep(net, [Loss("y", "mse")], backend="tvm")
    with pytest.raises(GraphconvError, match="use backend 'onnx' with device 'cuda'"):
        TrainStep(net, [Loss("y", "mse")], backend="reference", device="cuda")


def test_onnx_training_is_float32():
    with pytest.raises(GraphconvError, match="onnxruntime runs in float32"):
        TrainStep(_net("float32"), [Loss("y", "mse")], backend="onnx", dtype="float64")


def test_a_batch_of_one_through_a_per_sample_batchnorm_is_refused():
    g = Graph("flat")
    x = g.add_input("x", TensorType(("N", 4), "float32"))
    g.set_output("y", add_op(g, "bn", "batchnorm", [x]))
    step = TrainStep(Network(g), [Loss("y", "mse")])
    with pytest.raises(TrainingError, match="batchnorm 'bn' sees one value per channel in a batch of one"):
        step.run({"x": np.ones((1, 4))}, {"y": np.ones((1, 4))}, lr=0.1)
    step.run({"x": np.arange(8.0).reshape(2, 4)}, {"y": np.ones((2, 4))}, lr=0.1)  # two samples are fine
    # a batch of one with spatial positions has a variance
    net = _net("float32")
    TrainStep(net, [Loss("y", "mse")]).run({"x": np.random.default_rng(0).normal(size=(1, 4, 3, 3))},
                                           {"y": np.zeros((1, 4, 3, 3))}, lr=0.1)


def test_network_names_never_collide_with_the_training_graph_names():
    g = Graph("names")
    x = g.add_input("lr", TensorType(("N", 3, 2, 2), "float32"))
    h = add_op(g, "step", "batchnorm", [x])
    g.set_output("loss", add_op(g, "target", "relu", [h]))
    step = TrainStep(Network(g), [Loss("loss", "mse")], Optimizer("adam"))
    r = step.run({"lr": np.random.default_rng(0).normal(size=(2, 3, 2, 2))}, {"loss": np.zeros((2, 3, 2, 2))},
                 lr=0.1)
    assert np.isfinite(r.loss) and set(r.outputs) == {"loss"}
