"""A training step, compiled for a backend: the training graph (autodiff + optimizer) and the state it updates.

    step = TrainStep(net, [Loss("logits")], Optimizer("sgd", momentum=0.9), backend="reference")
    result = step.run({"image": x}, {"logits": onehot}, lr=0.01)   # StepResult(loss, outputs)
    net.weights.update(step.weights())

The state is every non-fixed parameter of the training graph: the network's weights and buffers (batchnorm running
statistics) and the optimizer's (momentum buffers, Adam moments). Each run feeds the batch, the targets, fresh
dropout masks (drawn here from the seed and the step number, so every backend applies the same masks and a resumed
run continues exactly) and the learning rate; the backend returns the loss, the network's outputs and the next
state, which replaces the current one.

Backends ("reference", "onnx", "llvm") implement `Runner`: `run(feed) -> outputs` with the state kept inside (on the
device for onnxruntime with CUDA, in the weights blob for LLVM), `get_state()` and `set_state(values)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from ..errors import GraphconvError, TrainingError
from ..ir.graph import Graph
from .autodiff import LOSS, Loss, TrainingGraph, differentiate
from .optim import Optimizer, add_optimizer

__all__ = ["TrainStep", "StepResult", "Runner", "build_training_graph", "STEP_BACKENDS"]

STEP_BACKENDS = ("reference", "onnx", "llvm")


def build_training_graph(graph: Graph, losses: Sequence[Loss], optimizer: Optimizer) -> TrainingGraph:
    """The whole step as one graph: training mode, losses, backward, updates."""
    tg = differentiate(graph, losses)
    add_optimizer(tg, optimizer)
    return tg


@dataclass
class StepResult:
    loss: float
    outputs: dict[str, np.ndarray]  # the network's outputs for the batch (training mode)


class Runner(Protocol):
    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def get_state(self) -> dict[str, np.ndarray]: ...

    def set_state(self, values: Mapping[str, np.ndarray]) -> None: ...


class ReferenceRunner:
    """The numpy reference executor; the state is a dict of arrays."""

    def __init__(self, tg: TrainingGraph, state: dict[str, np.ndarray], dtype: str):
        from ..reference.executor import prepare_weights

        self.tg, self.dtype = tg, dtype
        self.state = prepare_weights(tg.graph, state, dtype)

    def run(self, feed):
        from ..reference.executor import run_graph

        out = run_graph(self.tg.graph, feed, self.state, dtype=self.dtype)
        for param, name in self.tg.updates.items():
            self.state[param] = out.pop(name)
        return out

    def get_state(self):
        return {k: v.copy() for k, v in self.state.items() if self.tg.graph.params[k].data is None}

    def set_state(self, values):
        for k, v in values.items():
            self.state[k] = np.asarray(v, self.dtype).copy()


class OnnxRunner:
    """onnxruntime on the exported step (the state parameters are graph inputs and their next values outputs);
    with IO binding the state stays where onnxruntime put it (the GPU with device="cuda") between steps."""

    def __init__(self, tg: TrainingGraph, state: dict[str, np.ndarray], dtype: str, *, device: str = "cpu",
                 threads: int | None = None):
        self.tg, self.dtype, self.device_name, self.threads = tg, dtype, device, threads
        self.device = "cuda" if device == "cuda" else "cpu"
        self.names = list(tg.updates)
        # parameters the step reads but never changes (frozen weights) are initializers of the session
        self.constants = {k: np.array(v, dtype=dtype) for k, v in state.items() if k not in tg.updates}
        self.values: dict[str, Any] = {}
        self._build(state)
        self.set_state(state)

    def _build(self, state) -> None:
        import onnxruntime as ort

        from ..onnx.export import build_model
        from ..onnx.runtime import choose_providers

        model = build_model(self.tg.graph, weights={**state, **self.constants}, dtype=self.dtype, state=self.names)
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        self.session = ort.InferenceSession(model.SerializeToString(), so,
                                            providers=choose_providers(self.device_name))
        self.outputs = [o.name for o in self.session.get_outputs()]

    def set_state(self, values):
        import onnxruntime as ort

        changed = {k: v for k, v in values.items() if k in self.constants
                   and not np.array_equal(np.asarray(v, self.dtype), self.constants[k])}
        if changed:  # new frozen values: they are baked into the session
            self.constants.update({k: np.array(v, dtype=self.dtype) for k, v in changed.items()})
            self._build({**self.get_state(), **values})
        for k in self.names:
            if k in values:
                arr = np.ascontiguousarray(values[k], dtype=self.dtype)
                self.values[k] = ort.OrtValue.ortvalue_from_numpy(arr, self.device, 0)

    def get_state(self):
        out = {k: v.copy() for k, v in self.constants.items()}
        out.update({k: v.numpy().copy() for k, v in self.values.items()})
        return out

    def run(self, feed):
        io = self.session.io_binding()
        for name, arr in feed.items():
            io.bind_cpu_input(name, np.ascontiguousarray(arr, dtype=self.dtype))
        for name, value in self.values.items():
            io.bind_ortvalue_input(name, value)
        for name in self.outputs:
            io.bind_output(name, self.device)
        self.session.run_with_iobinding(io)
        got = dict(zip(self.outputs, io.get_outputs()))
        for param, name in self.tg.updates.items():
            self.values[param] = got.pop(name)
        return {k: v.numpy() for k, v in got.items()}


class TrainStep:
    """One optimizer step per `run` call (see the module docstring)."""

    def __init__(self, net: Any, losses: Sequence[Loss], optimizer: Optimizer | None = None, *,
                 backend: str = "reference", dtype: str = "float32", device: str = "cpu", threads: int | None = None,
                 seed: int = 0, **options: Any):
        if backend not in STEP_BACKENDS:
            raise GraphconvError(f"unknown training backend {backend!r}; choose {', '.join(STEP_BACKENDS)}")
        if device not in ("cpu", "cuda"):
            raise GraphconvError(f"unknown device {device!r}; choose cpu or cuda")
        if device == "cuda" and backend != "onnx":
            raise GraphconvError("training on a GPU goes through onnxruntime: use backend 'onnx' with device 'cuda'")
        if backend == "onnx" and dtype != "float32":
            raise GraphconvError("training on onnxruntime runs in float32 (its CPU kernels have no float64 "
                                 "convolutions); use dtype float32, or the llvm or reference backend for float64")
        self.net = net
        self.optimizer = optimizer or Optimizer()
        self.tg = build_training_graph(net.graph, losses, self.optimizer)
        self.backend, self.dtype, self.seed = backend, dtype, int(seed)
        self.steps = 0  # optimizer steps taken (Adam's bias correction counts from 1)
        g = self.tg.graph
        state = {name: np.asarray(net.weights[name]) if name in net.weights else
                 np.zeros(p.value.type.shape, dtype) for name, p in g.params.items() if p.data is None}
        if backend == "reference":
            self.runner: Runner = ReferenceRunner(self.tg, state, dtype)
        elif backend == "onnx":
            self.runner = OnnxRunner(self.tg, state, dtype, device=device, threads=threads)
        else:
            from ..llvm.train import LLVMRunner

            self.runner = LLVMRunner(self.tg, state, dtype, threads=threads, **options)
        self.batch_inputs = [v.name for v in net.graph.inputs]
        # batchnorm layers with one value per channel and sample ([N, C] or 1x1 maps): a batch of one has no
        # variance (PyTorch refuses it too)
        self.single_value_bn = [n.name for n in g.nodes if n.op == "bn_train"
                                and n.inputs[0].type.numel(1) == int(n.inputs[0].type.shape[1])]

    # -- state ----------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Everything a checkpoint needs: the network's weights and buffers and the optimizer's state."""
        return self.runner.get_state()

    def set_state(self, values: Mapping[str, np.ndarray], steps: int) -> None:
        """Replace the parameters and optimizer state (e.g. from a checkpoint) and the step count."""
        self.runner.set_state(values)
        self.steps = int(steps)

    def weights(self) -> dict[str, np.ndarray]:
        """The network's parameters and buffers now (what `weights.npz` holds)."""
        s = self.runner.get_state()
        return {k: v for k, v in s.items() if k in self.net.graph.params}

    # -- one step -------------------------------------------------------------------------------------------------
    def masks(self, batch: int) -> dict[str, np.ndarray]:
        """The dropout masks of step `self.steps` (0 or 1/(1 - rate)), from the seed and the step number; their
        stream's seed starts with its own tag, 0x64726F70 "drop" (graphconv/train/loop.py: STREAM_DROPOUT), so it is
        none of the training loop's streams."""
        out = {}
        for name, rate in self.tg.masks.items():
            rng = np.random.default_rng(np.random.SeedSequence([0x64726F70, self.seed, self.steps, len(out)]))
            shape = self.tg.graph.values[name].type.concrete(batch)
            out[name] = ((rng.random(shape) >= rate) * (1.0 / (1.0 - rate))).astype(self.dtype)
        return out

    def run(self, inputs: Mapping[str, np.ndarray], targets: Mapping[str, np.ndarray], lr: float) -> StepResult:
        """One step on a batch: `inputs` by network input name, `targets` by network output name (one-hot class
        probabilities for cross-entropy)."""
        batch = int(np.shape(next(iter(inputs.values())))[0])
        if batch == 1 and self.single_value_bn:
            raise TrainingError(f"batchnorm '{self.single_value_bn[0]}' sees one value per channel in a batch of one "
                                f"sample, so it has no batch variance; train with batches of at least 2")
        feed = {k: np.asarray(v, self.dtype) for k, v in inputs.items()}
        for out, name in self.tg.targets.items():
            if out not in targets:
                raise TrainingError(f"no target given for output '{out}'")
            feed[name] = np.asarray(targets[out], self.dtype)
        feed.update(self.masks(batch))
        feed[self.tg.hyper["lr"]] = np.array([lr], self.dtype)
        if "step" in self.tg.hyper:
            feed[self.tg.hyper["step"]] = np.array([self.steps + 1], self.dtype)
        out = self.runner.run(feed)
        self.steps += 1
        loss = float(np.asarray(out.pop(LOSS)).reshape(-1)[0])
        return StepResult(loss, {k: out[k] for k in self.tg.targets if k in out})
