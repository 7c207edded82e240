"""The same gradients and the same training step from every backend: random composed networks
(graphconv.testing.random_cnn) and the lenet5 spec, differentiated and compiled by the llvm backend (float32 and
float64) and exported to onnxruntime, against the float64 reference executor."""

from __future__ import annotations

import numpy as np
import pytest

import graphconv
from graphconv.network import Network
from graphconv.reference.executor import run_graph
from graphconv.testing.random_cnn import random_cnn
from graphconv.train.autodiff import Loss, differentiate
from graphconv.train.gradcheck import training_feed
from graphconv.train.optim import Optimizer
from graphconv.train.step import TrainStep

SEEDS = range(12)
# The plain suite checks the first seeds; the slow run (tools/run_slow_tests.sh) all twelve random networks.
FAST_SEEDS = {"gradients": 6, "step": 3}


def _seeds(which: str) -> list:
    return [pytest.param(s, marks=() if s < FAST_SEEDS[which] else pytest.mark.slow) for s in SEEDS]


def _close(got, want, rtol, atol, what):
    err = float(np.max(np.abs(got - want), initial=0.0))
    bound = atol + rtol * float(np.max(np.abs(want), initial=0.0))
    assert err <= bound, f"{what}: differs by {err:.3g} (allowed {bound:.3g})"


@pytest.mark.parametrize("seed", _seeds("gradients"))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_llvm_gradients_match_the_reference(seed, dtype):
    case = random_cnn(seed, dtype=dtype)
    tg = differentiate(case.graph, [Loss("logits", label_smoothing=0.1)], inputs=True)
    feed = training_feed(tg, case.inputs, seed=seed, dtype=dtype)
    want = run_graph(tg.graph, feed, case.weights, dtype="float64")
    # float32 rounding: a gradient that cancels to ~0 (the bias of a convolution a training-mode batchnorm follows)
    # is rounding noise of the size of its terms, so the float32 reference's own distance from float64 sets a floor
    noise = {k: float(np.max(np.abs(v - want[k]), initial=0.0))
             for k, v in run_graph(tg.graph, feed, case.weights, dtype="float32").items()} if dtype == "float32" else {}
    for threads in (1, 2):
        model = graphconv.compile(Network(tg.graph, case.weights), backend="llvm", dtype=dtype, threads=threads,
                                  opt_level=0)
        got = model.run(feed)
        for name, ref in want.items():
            if dtype == "float64":
                _close(got[name], ref, 1e-9, 1e-12, f"{name} ({case.description})")
            else:
                _close(got[name], ref, 1e-4, 1e-5 + 4 * noise[name], f"{name} ({case.description})")


@pytest.mark.parametrize("seed", _seeds("step"))
def test_one_training_step_is_the_same_on_every_backend(seed):
    case = random_cnn(seed, dtype="float32")
    net = Network(case.graph, {k: v.astype(np.float32) for k, v in case.weights.items()})
    classes = int(case.graph.outputs["logits"].type.shape[1])
    target = np.eye(classes, dtype=np.float32)[np.arange(case.inputs["x"].shape[0]) % classes]
    opt = Optimizer("sgd", momentum=0.9, nesterov=True, weight_decay=5e-4)
    states = {}
    for backend, dtype in (("reference", "float64"), ("reference", "float32"), ("llvm", "float64"),
                           ("llvm", "float32"), ("onnx", "float32")):
        step = TrainStep(net, [Loss("logits")], opt, backend=backend, dtype=dtype, seed=seed)
        for _ in range(2):
            step.run({"x": case.inputs["x"]}, {"logits": target}, lr=0.05)
        states[backend, dtype] = step.state()
    ref = states["reference", "float64"]
    for name, want in ref.items():
        _close(states["llvm", "float64"][name], want, 1e-9, 1e-12, f"llvm float64 {name}")
        # float32 rounding sets a floor where a gradient cancels to ~0 (see the gradient test above)
        noise = float(np.max(np.abs(states["reference", "float32"][name] - want), initial=0.0))
        _close(states["llvm", "float32"][name], want, 1e-4, 1e-5 + 4 * noise, f"llvm float32 {name}")
        # the exported ONNX step gives the llvm backend's updated weights
        _close(states["onnx", "float32"][name], states["llvm", "float32"][name], 1e-4, 1e-5 + 4 * noise,
               f"onnx {name}")


def test_lenet5_steps_agree():
    net = graphconv.load("specs/lenet5.gc", seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((16, 1, 32, 32), dtype=np.float32)
    target = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]
    # momentum SGD: the update is linear in the gradient (Adam's m/sqrt(v) would turn the rounding noise of gradients
    # that are ~0 into full-size steps, different on every backend)
    opt = Optimizer("sgd", momentum=0.9, weight_decay=5e-4)
    losses, states = {}, {}
    for backend in ("reference", "llvm", "onnx"):
        step = TrainStep(net, [Loss("logits")], opt, backend=backend, threads=2)
        losses[backend] = [step.run({"image": x}, {"logits": target}, lr=0.05).loss for _ in range(3)]
        states[backend] = step.state()
    np.testing.assert_allclose(losses["llvm"], losses["reference"], rtol=1e-5)
    np.testing.assert_allclose(losses["onnx"], losses["reference"], rtol=1e-5)
    for name, want in states["reference"].items():
        _close(states["llvm"][name], want, 1e-4, 1e-5, f"llvm {name}")
        _close(states["onnx"][name], want, 1e-4, 1e-5, f"onnx {name}")
