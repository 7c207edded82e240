"""Training on the llvm backend: the training ops' kernels against the float64 reference (float32 and float64,
threads 1 and 2, batch 1 and 3, deterministic), the static region of the memory plan, state updated in place in
the weights blob (and the copy fallback), re-packed state weights, and whole TrainStep runs against the reference
and onnxruntime runners."""

from __future__ import annotations

import types

import numpy as np
import pytest

import graphconv
from graphconv.errors import GraphconvError
from graphconv.ir.graph import Graph, Init, TensorType
from graphconv.llvm.codegen import state_plan
from graphconv.llvm.train import LLVMRunner
from graphconv.network import Network
from graphconv.passes.plan_memory import check_plan, plan
from graphconv.reference.executor import run_graph
from graphconv.train.autodiff import Loss
from graphconv.train.optim import Optimizer
from graphconv.train.step import TrainStep, build_training_graph
from graphconv.weights import init_weights

from .helpers import add_op, seeded_weights

TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-12)}


def _compare(g: Graph, weights: dict, feeds: list[dict], *, dtype: str, threads=(1, 2), tol=None) -> list[dict]:
    """Compile `g` at -O0 (no pass touches it) for each thread count and compare every output with the float64
    reference on each feed; returns the outputs of the last thread count (for determinism checks)."""
    tol = tol or TOL[dtype]
    net = Network(g, weights)
    results = []
    for t in threads:
        model = graphconv.compile(net, backend="llvm", threads=t, opt_level=0, dtype=dtype)
        results = []
        for feed in feeds:
            ref = run_graph(g, {k: v.astype(np.float64) for k, v in feed.items()}, weights, dtype="float64")
            got = model.run({k: v.astype(dtype) for k, v in feed.items()})
            for name, want in ref.items():
                assert got[name].shape == want.shape, (name, got[name].shape, want.shape)
                np.testing.assert_allclose(got[name], want.astype(dtype), **tol,
                                           err_msg=f"{name}, {dtype}, threads={t}, batch={len(feed[g.inputs[0].name])}")
            again = model.run({k: v.astype(dtype) for k, v in feed.items()})
            for name in got:  # deterministic from run to run
                np.testing.assert_array_equal(got[name], again[name], err_msg=name)
            results.append(got)
    return results


def _feeds(g: Graph, batches=(1, 3), seed=0, **fixed) -> list[dict]:
    out = []
    for b in batches:
        rng = np.random.default_rng(seed + b)
        feed = {}
        for v in g.inputs:
            feed[v.name] = fixed[v.name] if v.name in fixed else rng.standard_normal(v.type.concrete(b)) * 2 + 0.5
        out.append(feed)
    return out


# -- kernels ------------------------------------------------------------------------------------------------------

def _bn_graph(shape) -> Graph:
    """Every batchnorm training op on one x: statistics, normalization, running updates, the gradients."""
    g = Graph("bn_ops")
    c = shape[0]
    x = g.add_input("x", TensorType(("N", *shape)))
    dy = g.add_input("dy", TensorType(("N", *shape)))
    stats = add_op(g, "bn@stats", "bn_stats", [x])
    g.set_output("stats", stats)
    g.set_output("y", add_op(g, "bn", "bn_train", [x, stats]))
    g.set_output("y_plain", add_op(g, "bnp", "bn_train", [x, stats], affine=False))
    w = g.values["bn.weight"]
    rm = g.add_param("bn.running_mean", TensorType((c,)), "buffer", Init("zeros"))
    rv = g.add_param("bn.running_var", TensorType((c,)), "buffer", Init("ones"))
    g.set_output("rm", add_op(g, "rm@new", "bn_running", [rm, stats], stat="mean", momentum=0.1))
    g.set_output("rv", add_op(g, "rv@new", "bn_running", [rv, stats], stat="var", momentum=0.3))
    g.set_output("dx", add_op(g, "gi", "bn_grad_input", [dy, x, stats, w], eps=1e-3))
    g.set_output("dx_plain", add_op(g, "gi2", "bn_grad_input", [dy, x, stats]))
    g.set_output("dw", add_op(g, "gw", "bn_grad_weight", [dy, x, stats]))
    axes = [0, *range(2, len(shape) + 1)]
    g.set_output("db", add_op(g, "gb", "reduce_sum", [dy], axes=axes))
    g.set_output("dfrozen", add_op(g, "gf", "bn_frozen_grad", [dy, rv, w]))
    g.set_output("dfrozen_plain", add_op(g, "gf2", "bn_frozen_grad", [dy, rv], eps=0.1))
    return g


BN_SHAPES = [(5, 3, 7), (37,), (4,), (20, 1, 1), (16, 4, 4)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=["x".join(map(str, s)) for s in BN_SHAPES])
def test_batchnorm_training_kernels(shape, dtype):
    g = _bn_graph(shape)
    _compare(g, seeded_weights(g), _feeds(g), dtype=dtype)


REDUCE_CASES = [((5, 3, 7), [0, 2, 3], False), ((5, 3, 7), [0], False), ((5, 3, 7), [2, 3], True),
                ((5, 3, 7), [1], False), ((5, 3, 7), [0, 1, 2, 3], False), ((5, 3, 7), [0, 2], True),
                ((5, 3, 37), [3], False), ((37,), [0], False), ((40,), [0], True), ((3, 40), [0, 1], False)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reduce_sum(dtype):
    g = Graph("reduce")
    xs = {}
    for k, (shape, axes, keep) in enumerate(REDUCE_CASES):
        if shape not in xs:
            xs[shape] = g.add_input(f"x{len(xs)}", TensorType(("N", *shape)))
        g.set_output(f"r{k}", add_op(g, f"r{k}", "reduce_sum", [xs[shape]], axes=axes, keep=keep))
    _compare(g, {}, _feeds(g), dtype=dtype)


def _loss_graph(classes: int) -> Graph:
    g = Graph("losses")
    z = g.add_input("z", TensorType(("N", classes)))
    t = g.add_input("t", TensorType(("N", classes)))
    p = g.add_input("p", TensorType(("N", 3, 5, 7)))
    q = g.add_input("q", TensorType(("N", 3, 5, 7)))
    for k, (ls, scale) in enumerate([(0.0, 1.0), (0.1, 0.3)]):
        g.set_output(f"ce{k}", add_op(g, f"ce{k}", "softmax_cross_entropy", [z, t], label_smoothing=ls,
                                      scale=scale))
        g.set_output(f"dce{k}", add_op(g, f"dce{k}", "softmax_cross_entropy_grad", [z, t], label_smoothing=ls,
                                       scale=scale))
    g.set_output("mse", add_op(g, "mse", "mse_loss", [p, q], scale=0.7))
    g.set_output("dmse", add_op(g, "dmse", "mse_loss_grad", [p, q], scale=0.7))
    g.set_output("mse_rows", add_op(g, "mse_rows", "mse_loss", [z, t]))
    return g


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("classes", [10, 37, 3])
def test_loss_kernels(classes, dtype):
    g = _loss_graph(classes)
    feeds = []
    for b in (1, 3):
        rng = np.random.default_rng(b)
        onehot = np.eye(classes)[rng.integers(0, classes, b)]
        feeds.append({"z": rng.standard_normal((b, classes)) * 3, "t": onehot,
                      "p": rng.standard_normal((b, 3, 5, 7)), "q": rng.standard_normal((b, 3, 5, 7))})
    _compare(g, {}, feeds, dtype=dtype)


def test_cross_entropy_large_logits():
    """Logits around ±1000: the max is subtracted before exp."""
    g = _loss_graph(10)
    rng = np.random.default_rng(3)
    feed = {"z": rng.standard_normal((4, 10)) * 1000, "t": np.full((4, 10), 0.1),
            "p": rng.standard_normal((4, 3, 5, 7)), "q": rng.standard_normal((4, 3, 5, 7))}
    out = _compare(g, {}, [feed], dtype="float32", threads=(2,), tol=dict(rtol=1e-4, atol=1e-3))
    assert all(np.all(np.isfinite(v)) for v in out[0].values())


def _optim_graph(shape) -> Graph:
    """Every update op on parameters of `shape` (no batch dimension: the whole graph is static)."""
    g = Graph("optim")
    t = TensorType(tuple(shape))
    gr = g.add_input("g", t)
    lr = g.add_input("lr", TensorType((1,)))
    step = g.add_input("step", TensorType((1,)))
    w = g.add_param("w", t, "trainable", Init("normal"))
    buf = g.add_param("buf", t, "buffer", Init("normal"))
    m = g.add_param("m", t, "buffer", Init("normal"))
    v = g.add_param("v.running_var", t, "buffer", Init("ones"))  # seeded_weights: positive
    g.set_output("sgd", add_op(g, "sgd", "sgd_step", [w, gr, lr]))
    g.set_output("sgd_wd", add_op(g, "sgd_wd", "sgd_step", [w, gr, lr], weight_decay=0.01))
    b2 = add_op(g, "buf2", "sgd_buffer", [buf, gr, w], momentum=0.9, weight_decay=0.001)
    g.set_output("buf2", b2)
    g.set_output("mom", add_op(g, "mom", "sgd_momentum_step", [w, gr, b2, lr], momentum=0.9))
    g.set_output("nesterov", add_op(g, "nest", "sgd_momentum_step", [w, gr, b2, lr], momentum=0.8,
                                    weight_decay=0.01, nesterov=True))
    m2 = add_op(g, "m2", "adam_moment", [m, gr, w], beta=0.9)
    v2 = add_op(g, "v2", "adam_moment", [v, gr, w], beta=0.999, square=True, weight_decay=0.02)
    g.set_output("m2", m2)
    g.set_output("v2", v2)
    g.set_output("adam", add_op(g, "adam", "adam_step", [w, m2, v2, lr, step]))
    g.set_output("adamw", add_op(g, "adamw", "adam_step", [w, m2, v2, lr, step], beta1=0.8, beta2=0.99, eps=1e-6,
                                 weight_decay=0.05, decoupled=True))
    return g


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(37,), (4, 3, 3, 3), (2,)])
def test_optimizer_kernels(shape, dtype):
    g = _optim_graph(shape)
    w = seeded_weights(g)
    w["v.running_var"] = np.abs(init_weights(g, 1)["m"]) + 0.01
    feeds = []
    for k, t in enumerate((1.0, 7.0)):
        rng = np.random.default_rng(k)
        feeds.append({"g": rng.standard_normal(shape), "lr": np.array([0.05]), "step": np.array([t])})
    _compare(g, w, feeds, dtype=dtype)


def test_kernels_give_the_same_bits_for_every_thread_count():
    """Each output element is reduced by one thread in a fixed order: 1 and 2 threads agree bit for bit."""
    g = _bn_graph((16, 4, 4))
    for name, (shape, axes, keep) in {"r": ((16, 4, 4), [0, 2, 3], False), "s": ((16, 4, 4), [0], False)}.items():
        g.set_output(name, add_op(g, name, "reduce_sum", [g.values["dy"]], axes=axes, keep=keep))
    z = g.add_input("z", TensorType(("N", 10)))
    g.set_output("ce", add_op(g, "ce", "softmax_cross_entropy", [z, z]))
    net = Network(g, seeded_weights(g))
    feed = {k: v.astype(np.float32) for k, v in _feeds(g, batches=(5,))[0].items()}
    outs = [graphconv.compile(net, backend="llvm", threads=t, opt_level=0).run(feed) for t in (1, 2)]
    for name in outs[0]:
        np.testing.assert_array_equal(outs[0][name], outs[1][name], err_msg=name)


ACTIVATIONS = [("relu", {}), ("leaky_relu", {"alpha": 0.1}), ("elu", {"alpha": 0.7}), ("selu", {}),
               ("sigmoid", {}), ("tanh", {}), ("clip", {"min": -0.5, "max": 1.0}), ("clip", {"min": 0.2})]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(5, 3, 7), (37,)])
def test_activation_grad_and_neg(shape, dtype):
    g = Graph("act_grads")
    dy = g.add_input("dy", TensorType(("N", *shape)))
    x = g.add_input("x", TensorType(("N", *shape)))
    for k, (fn, attrs) in enumerate(ACTIVATIONS):
        g.set_output(f"{fn}{k}", add_op(g, f"g{k}", "activation_grad", [dy, x], fn=fn, **attrs))
    g.set_output("neg", add_op(g, "neg", "neg", [dy]))
    _compare(g, {}, _feeds(g), dtype=dtype)


SOFTMAX_CASES = [((10,), 1), ((4, 6, 5), 1), ((4, 6, 5), 2), ((4, 6, 21), 3), ((3, 40), 2)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_grad(log, dtype):
    g = Graph("softmax_grads")
    for k, (shape, axis) in enumerate(SOFTMAX_CASES):
        dy = g.add_input(f"dy{k}", TensorType(("N", *shape)))
        y = g.add_input(f"y{k}", TensorType(("N", *shape)))
        g.set_output(f"s{k}", add_op(g, f"s{k}", "softmax_grad", [dy, y], axis=axis, log=log))
    _compare(g, {}, _feeds(g), dtype=dtype)


# -- the memory plan's static region --------------------------------------------------------------------------------

def _wide_grad_graph(features: int = 4096) -> tuple[Graph, dict]:
    """A dense-sized bias gradient: reduce_sum over the batch of [N, features], then SGD on a [features] parameter."""
    g = Graph("wide")
    dy = g.add_input("dy", TensorType(("N", features)))
    lr = g.add_input("lr", TensorType((1,)))
    b = g.add_param("b", TensorType((features,)), "trainable", Init("zeros"))
    grad = add_op(g, "db", "reduce_sum", [dy], axes=[0])
    scaled = add_op(g, "db2", "mul", [grad, grad])  # another static value, alive with the first
    g.set_output("update:b", add_op(g, "b@new", "sgd_step", [b, scaled, lr]))
    g.set_output("y", add_op(g, "y", "relu", [dy]))
    return g, {"b": np.zeros(features, np.float32)}


def test_static_values_are_not_scaled_by_the_batch():
    g, state = _wide_grad_graph(4096)
    mp_old = plan(g)
    mp = plan(g, static_apart=True)
    assert not check_plan(g, mp) and not check_plan(g, mp.to_meta())
    assert mp.static == {"db", "db2"} and mp.static_bytes == 2 * 4096 * 4
    assert mp.arena_bytes == 0 and mp_old.arena_bytes == 2 * 4096 * 4  # per sample before, N times over
    runner = LLVMRunner(types.SimpleNamespace(graph=g, updates={"b": "update:b"}), state, "float32", threads=1)
    lay = runner.layout
    assert lay.arena_static == 2 * 4096 * 4 and lay.arena_per_sample == 0
    # 64 samples: 32 KiB of arena instead of 2 MiB
    assert lay.arena_bytes(64, 1) == 32768 + lay.scratch_per_thread
    rng = np.random.default_rng(0)
    for batch in (1, 5):
        dy = rng.standard_normal((batch, 4096)).astype(np.float32)
        before = runner.get_state()["b"]
        out = runner.run({"dy": dy, "lr": np.array([0.5], np.float32)})
        s = dy.astype(np.float64).sum(axis=0)
        np.testing.assert_allclose(runner.get_state()["b"], before - 0.5 * s * s, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(out["y"], np.maximum(dy, 0))
        assert set(out) == {"y"}


def test_static_region_leaves_inference_plans_alone():
    """Without static intermediate values (every inference network here), static_apart changes nothing."""
    for path in ("specs/resnet18.gc", "specs/googlenet.gc"):
        net = graphconv.load(path, num_classes=10, seed=0)
        a, b = plan(net.graph, concat_in_place=True), plan(net.graph, concat_in_place=True, static_apart=True)
        assert a == b and not b.static and a.to_meta() == b.to_meta()


def test_check_plan_polices_the_static_region():
    g, _ = _wide_grad_graph(64)
    mp = plan(g, static_apart=True)
    bad = plan(g, static_apart=True)
    bad.static_bytes = 64
    assert any("ends past the static region" in p for p in check_plan(g, bad))
    meta = mp.to_meta()
    meta["static"] = meta["static"] + ["y"]
    assert any("'y' is in the static region" in p for p in check_plan(g, meta))


def test_training_graph_arena():
    """A batchnorm training graph: the [3, C] statistics and the [C] gradients are static; the arena for N samples
    grows by the per-sample part only."""
    g = _bnbn(16, (8, 8))
    tg = build_training_graph(g, [Loss("y", "mse")], Optimizer("sgd"))
    runner = LLVMRunner(tg, _state(tg, g), "float32", threads=1)
    lay = runner.layout
    mp_old = plan(runner.graph)
    mp = plan(runner.graph, static_apart=True)
    assert {"bn1@stats", "bn2@stats", "bn1@bn_grad_weight1", "bn2@reduce_sum3"} <= mp.static
    assert mp.static_bytes > 0
    assert lay.arena_static == mp.static_bytes
    assert lay.arena_bytes(64, 1) < mp_old.arena_bytes * 64
    assert lay.arena_bytes(64, 1) - lay.arena_bytes(1, 1) == 63 * lay.arena_per_sample
    assert not lay.state_copied and set(lay.state) == set(tg.updates)
    assert not any(name.startswith("update:") for name, _ in lay.outputs)


# -- state in place -----------------------------------------------------------------------------------------------

def _bnbn(c: int = 6, hw=(4, 5), frozen_second: bool = False) -> Graph:
    g = Graph("bnbn")
    x = g.add_input("x", TensorType(("N", c, *hw)))
    y = add_op(g, "bn1", "batchnorm", [x])
    g.set_output("y", add_op(g, "bn2", "batchnorm", [y], frozen=frozen_second))
    return g


def _state(tg, g) -> dict:
    w = seeded_weights(g)
    return {name: w.get(name, np.zeros(p.value.type.shape, np.float32)) for name, p in tg.graph.params.items()
            if p.data is None}


def _sample(g: Graph, batch: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    xs = {v.name: (rng.standard_normal(v.type.concrete(batch)) * 1.5 + 0.3).astype(np.float32) for v in g.inputs}
    ts = {}
    for name, v in g.outputs.items():
        shape = v.type.concrete(batch)
        if len(shape) == 2:  # class probabilities for cross-entropy
            ts[name] = np.eye(shape[1], dtype=np.float32)[rng.integers(0, shape[1], shape[0])]
        else:
            ts[name] = rng.standard_normal(shape).astype(np.float32)
    return xs, ts


def _steps(step: TrainStep, g: Graph, n: int = 3, batch: int = 3) -> list[float]:
    losses = []
    for k in range(n):
        xs, ts = _sample(g, batch, k)
        losses.append(step.run(xs, ts, lr=0.1 * (k + 1)).loss)
    return losses


def _agree(a: dict, b: dict, rtol: float, atol: float) -> None:
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k], np.float64), np.asarray(b[k], np.float64), rtol=rtol, atol=atol,
                                   err_msg=k)


def _cross_entropy_net() -> Graph:
    g = Graph("ce")
    x = g.add_input("x", TensorType(("N", 10)))
    y = add_op(g, "bn1", "batchnorm", [x])
    g.set_output("logits", add_op(g, "bn2", "batchnorm", [y], frozen=True))
    return g


def _residual_net() -> Graph:
    g = Graph("res")
    x = g.add_input("x", TensorType(("N", 6, 4, 5)))
    y = add_op(g, "bn1", "batchnorm", [x])
    y = add_op(g, "act", "elu", [y], alpha=0.5)
    y = add_op(g, "res", "add", [y, x])
    y = add_op(g, "sq", "mul", [y, y])
    g.set_output("y", add_op(g, "bn2", "batchnorm", [y]))
    return g


def _log_softmax_net() -> Graph:
    g = Graph("lsm")
    x = g.add_input("x", TensorType(("N", 10)))
    y = add_op(g, "bn1", "batchnorm", [x])
    y = add_op(g, "t", "tanh", [y])
    g.set_output("y", add_op(g, "sm", "log_softmax", [y], axis=1))
    return g


CASES = {
    "sgd": (lambda: _bnbn(), [Loss("y", "mse")], Optimizer("sgd", momentum=0.0)),
    "momentum": (lambda: _bnbn(), [Loss("y", "mse")], Optimizer("sgd", momentum=0.9)),
    "nesterov": (lambda: _bnbn(), [Loss("y", "mse")], Optimizer("sgd", momentum=0.9, nesterov=True,
                                                                 weight_decay=1e-3)),
    "adam": (lambda: _bnbn(frozen_second=True), [Loss("y", "mse")], Optimizer("adam", weight_decay=1e-3)),
    "adamw": (lambda: _cross_entropy_net(), [Loss("logits", label_smoothing=0.1)], Optimizer("adamw")),
    "residual": (_residual_net, [Loss("y", "mse")], Optimizer("sgd", momentum=0.5)),
    "log_softmax": (_log_softmax_net, [Loss("y", "mse", weight=2.0)], Optimizer("adam")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_train_step_matches_the_reference(case):
    """Three steps: the whole state (weights, running statistics, optimizer buffers) and the losses agree with the
    float64 reference (float32 build) and bit for bit with itself on another run; the float64 build agrees to
    1e-10."""
    make, losses, opt = CASES[case]
    g = make()
    net = Network(g, seeded_weights(g))
    ref = TrainStep(net, losses, opt, backend="reference", dtype="float64")
    ref_losses = _steps(ref, g)
    for dtype, tol in (("float32", dict(rtol=1e-4, atol=1e-5)), ("float64", dict(rtol=1e-10, atol=1e-12))):
        step = TrainStep(net, losses, opt, backend="llvm", dtype=dtype, threads=2)
        assert not step.runner.layout.state_copied  # every update in place
        got = _steps(step, g)
        np.testing.assert_allclose(got, ref_losses, **tol)
        _agree(step.state(), ref.state(), **tol)


@pytest.mark.parametrize("case", ["momentum", "adamw"])
def test_train_step_matches_onnxruntime(case):
    make, losses, opt = CASES[case]
    g = make()
    net = Network(g, seeded_weights(g))
    ort_step = TrainStep(net, losses, opt, backend="onnx")
    step = TrainStep(net, losses, opt, backend="llvm", threads=1)
    np.testing.assert_allclose(_steps(step, g), _steps(ort_step, g), rtol=1e-4, atol=1e-5)
    _agree(step.state(), ort_step.state(), rtol=1e-4, atol=1e-5)


def test_train_step_is_deterministic_and_batch_sizes_vary():
    make, losses, opt = CASES["momentum"]
    g = make()
    net = Network(g, seeded_weights(g))
    runs = []
    for _ in range(2):
        step = TrainStep(net, losses, opt, backend="llvm", threads=2)
        out = []
        for k, batch in enumerate((3, 1, 4)):
            xs, ts = _sample(g, batch, k)
            r = step.run(xs, ts, lr=0.05)
            out.append((r.loss, r.outputs["y"]))
        runs.append((out, step.state()))
    for (l1, y1), (l2, y2) in zip(runs[0][0], runs[1][0]):
        assert l1 == l2
        np.testing.assert_array_equal(y1, y2)
    for k in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][k], runs[1][1][k])


def test_get_and_set_state_round_trip():
    make, losses, opt = CASES["adam"]
    g = make()
    net = Network(g, seeded_weights(g))
    step = TrainStep(net, losses, opt, backend="llvm", threads=1)
    _steps(step, g, n=2)
    saved = step.state()
    xs, ts = _sample(g, 3, 10)
    first = step.run(xs, ts, lr=0.1).loss
    after = step.state()
    assert any(not np.array_equal(after[k], saved[k]) for k in saved)
    step.set_state(saved, steps=2)
    _agree(step.state(), saved, rtol=0, atol=0)
    assert step.run(xs, ts, lr=0.1).loss == first
    _agree(step.state(), after, rtol=0, atol=0)
    # into a fresh runner: it continues exactly
    other = TrainStep(net, losses, opt, backend="llvm", threads=1)
    other.set_state(saved, steps=2)
    assert other.run(xs, ts, lr=0.1).loss == first
    _agree(other.state(), after, rtol=0, atol=0)
    assert set(step.weights()) == set(net.weights)
    with pytest.raises(GraphconvError, match="not part of the training state"):
        step.set_state({"nope": np.zeros(3)}, steps=0)
    with pytest.raises(GraphconvError, match="shape"):
        step.set_state({"bn1.weight": np.zeros(2)}, steps=0)


def _late_reader_graph() -> tuple[Graph, dict]:
    """`w` is read after the node that computes its next value (so it cannot be updated in place), and `u`'s next
    value comes from a reduction that does not read it."""
    g = Graph("late")
    x = g.add_input("x", TensorType(("N", 8)))
    gw = g.add_input("gw", TensorType((8,)))
    lr = g.add_input("lr", TensorType((1,)))
    w = g.add_param("w", TensorType((8,)), "trainable", Init("normal"))
    u = g.add_param("u", TensorType((8,)), "buffer", Init("zeros"))
    g.set_output("update:w", add_op(g, "w@new", "sgd_step", [w, gw, lr]))
    g.set_output("y", add_op(g, "y", "mul", [x, w]))
    g.set_output("update:u", add_op(g, "u@new", "reduce_sum", [add_op(g, "xu", "mul", [x, u])], axes=[0]))
    g.set_output("update:z", add_op(g, "z@new", "relu", [gw]))  # z: nothing reads it, so the optimizer prunes it
    g.add_param("z", TensorType((8,)), "buffer", Init("zeros"))
    return g, {"w": np.linspace(-1, 1, 8).astype(np.float32), "u": np.linspace(0.5, 1, 8).astype(np.float32),
               "z": np.zeros(8, np.float32)}


def test_state_plan_falls_back_to_a_copy():
    g, state = _late_reader_graph()
    updates = {"w": "update:w", "u": "update:u", "z": "update:z"}
    in_place, copied = state_plan(g, {"w": "update:w", "u": "update:u"})
    assert not in_place
    assert "layer 'y' reads it after its update" in copied["w"][1]
    assert "does not read it exactly once" in copied["u"][1]
    for threads in (1, 2):
        runner = LLVMRunner(types.SimpleNamespace(graph=g, updates=updates), state, "float32", threads=threads)
        assert set(runner.layout.state_copied) == {"w", "u"} and not runner.layout.state
        w, u = state["w"].astype(np.float64), state["u"].astype(np.float64)
        for k in range(3):
            rng = np.random.default_rng(k)
            x = rng.standard_normal((3, 8)).astype(np.float32)
            gw = rng.standard_normal(8).astype(np.float32)
            out = runner.run({"x": x, "gw": gw, "lr": np.array([0.1], np.float32)})
            np.testing.assert_allclose(out["y"], x * w, rtol=1e-6)  # the old w
            w, u = w - 0.1 * gw, (x * u).sum(axis=0)
            st = runner.get_state()
            np.testing.assert_allclose(st["w"], w, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(st["u"], u, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(st["z"], np.maximum(gw, 0))
            assert set(out) == {"y"}


def test_update_from_a_state_parameter_is_refused():
    g = Graph("swap")
    a = g.add_param("a", TensorType((4,)), "buffer", Init("zeros"))
    b = g.add_param("b", TensorType((4,)), "buffer", Init("zeros"))
    x = g.add_input("x", TensorType(("N", 4)))
    g.set_output("y", add_op(g, "y", "relu", [x]))
    g.set_output("update:a", b)
    g.set_output("update:b", a)
    from graphconv.llvm.kernel import CodegenError

    with pytest.raises(CodegenError, match="state parameter 'b' itself"):
        state_plan(g, {"a": "update:a", "b": "update:b"})


def _conv_step_graph(frozen: bool = False) -> Graph:
    """y = conv(x; w); w' = sgd_step(w, gw, lr): a state weight the conv kernel reads re-packed."""
    g = Graph("convstep")
    x = g.add_input("x", TensorType(("N", 16, 6, 7)))
    y = add_op(g, "c", "conv2d", [x], out_channels=24, kernel=3, padding="same")
    g.set_output("y", y)
    w = g.values["c.weight"]
    if not frozen:
        gw = g.add_input("gw", TensorType(tuple(w.type.shape)))
        lr = g.add_input("lr", TensorType((1,)))
        g.set_output("update:c.weight", add_op(g, "c.weight@new", "sgd_step", [w, gw, lr]))
    return g


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_weights_are_repacked_every_step(dtype):
    g = _conv_step_graph()
    state = init_weights(g, 0)
    runner = LLVMRunner(types.SimpleNamespace(graph=g, updates={"c.weight": "update:c.weight"}), state, dtype,
                        threads=2)
    assert runner.layout.repacked == ["c.weight"] and runner.layout.state == {"c.weight": "update:c.weight"}
    weights = {k: np.asarray(v, np.float64) for k, v in state.items()}
    tol = TOL[dtype]
    for k in range(3):
        rng = np.random.default_rng(k)
        x = rng.standard_normal((2, 16, 6, 7))
        gw = rng.standard_normal(weights["c.weight"].shape)
        feed = {"x": x, "gw": gw, "lr": np.array([0.05])}
        want = run_graph(g, feed, weights, dtype="float64")
        got = runner.run({k2: v.astype(dtype) for k2, v in feed.items()})
        np.testing.assert_allclose(got["y"], want["y"], **tol)
        weights["c.weight"] = want["update:c.weight"]
        np.testing.assert_allclose(runner.get_state()["c.weight"], weights["c.weight"], **tol)
    # a new weight from outside: the next run packs it
    new = np.random.default_rng(9).standard_normal(weights["c.weight"].shape)
    runner.set_state({"c.weight": new})
    x = np.ones((1, 16, 6, 7))
    feed = {"x": x, "gw": np.zeros_like(new), "lr": np.array([0.0])}
    want = run_graph(g, feed, {**weights, "c.weight": new}, dtype="float64")
    np.testing.assert_allclose(runner.run({k: v.astype(dtype) for k, v in feed.items()})["y"], want["y"], **tol)


def test_frozen_weight_set_from_outside_is_repacked():
    """A parameter the step does not update (no gather in the code) is re-packed by set_state itself."""
    g = _conv_step_graph(frozen=True)
    state = init_weights(g, 0)
    runner = LLVMRunner(types.SimpleNamespace(graph=g, updates={}), state, "float32", threads=1)
    assert runner.layout.repacked == []
    new = dict(state)
    new["c.weight"] = np.random.default_rng(1).standard_normal(state["c.weight"].shape).astype(np.float32)
    runner.set_state({"c.weight": new["c.weight"]})
    x = np.random.default_rng(2).standard_normal((2, 16, 6, 7))
    want = run_graph(g, {"x": x}, new, dtype="float64")["y"]
    np.testing.assert_allclose(runner.run({"x": x.astype(np.float32)})["y"], want, rtol=1e-4, atol=1e-4)


def test_training_graph_skips_inference_passes():
    """Batchnorm folding, fusion and the blocked layout would change what the backward pass reads: none runs."""
    make, losses, opt = CASES["momentum"]
    g = make()
    step = TrainStep(Network(g, seeded_weights(g)), losses, opt, backend="llvm", threads=1)
    ran = {r.name for r in step.runner.pass_log}
    assert not ran & {"fold_batchnorm", "fuse_activation", "assign_layout", "lower_pooling", "fold_1x1", "lower_1x1",
                      "fuse_pool", "remove_dropout"}
    assert {n.op for n in step.runner.graph.nodes} >= {"bn_stats", "bn_train", "bn_grad_input", "sgd_buffer"}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_train_step_larger(case):
    """Bigger shapes, batch 16, ten steps, against the float64 reference."""
    make, losses, opt = CASES[case]
    g = _bnbn(32, (14, 14), frozen_second=case == "adam") if case in ("sgd", "momentum", "nesterov", "adam") \
        else make()
    net = Network(g, seeded_weights(g))
    ref = TrainStep(net, losses, opt, backend="reference", dtype="float64")
    step = TrainStep(net, losses, opt, backend="llvm", threads=2)
    np.testing.assert_allclose(_steps(step, g, n=10, batch=16), _steps(ref, g, n=10, batch=16), rtol=1e-4,
                               atol=1e-5)
    _agree(step.state(), ref.state(), rtol=1e-3, atol=1e-4)


def test_missing_training_kernels_are_named_before_compiling(monkeypatch):
    from graphconv.llvm.kernel import KERNELS, CodegenError

    monkeypatch.delitem(KERNELS, "bn_grad_weight")
    monkeypatch.delitem(KERNELS, "sgd_buffer")
    make, losses, opt = CASES["momentum"]
    g = make()
    with pytest.raises(CodegenError, match=r"no kernel yet for bn_grad_weight, sgd_buffer \(e\.g\. layer"):
        TrainStep(Network(g, seeded_weights(g)), losses, opt, backend="llvm", threads=1)
