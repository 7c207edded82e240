"""Shared checks for gradient tests: finite differences through the float64 reference executor, and the same
training graph exported to ONNX and run by onnxruntime (float32) against the float32 reference."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from graphconv.ir.graph import Graph
from graphconv.ir.verify import verify
from graphconv.onnx.export import build_model
from graphconv.reference.executor import run_graph
from graphconv.train.autodiff import Loss, differentiate
from graphconv.train.gradcheck import check_gradients, training_feed


def assert_gradients(graph: Graph, weights: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray], *,
                     losses: Sequence[Loss], inputs_grad: bool = True, seed: int = 0, **tol) -> None:
    """Finite differences (eps 1e-6, atol 1e-5, rtol 1e-3 unless given) agree with the autodiff gradients."""
    report = check_gradients(graph, weights, inputs, losses=losses, inputs_grad=inputs_grad, seed=seed, **tol)
    assert report.ok, report.text()


def assert_onnx_matches(graph: Graph, weights: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray], *,
                        losses: Sequence[Loss], inputs_grad: bool = True, seed: int = 0, rtol: float = 1e-4,
                        atol: float = 1e-5) -> None:
    """The exported training graph in onnxruntime gives every output of the reference executor (float32):
    |ort - ref| <= atol + rtol·max|ref| per output (sums over a batch reorder freely)."""
    tg = differentiate(graph, losses, inputs=inputs_grad)
    verify(tg.graph)
    feed = training_feed(tg, inputs, seed=seed, dtype="float32")
    w32 = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    ref = run_graph(tg.graph, feed, w32, dtype="float32")
    model = build_model(tg.graph, weights=w32, dtype="float32")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})))
    assert set(ref) <= set(got), set(ref) - set(got)
    for name, want in ref.items():
        have = got[name]
        assert have.shape == want.shape, (name, have.shape, want.shape)
        bound = atol + rtol * float(np.max(np.abs(want), initial=0.0))
        err = float(np.max(np.abs(have - want), initial=0.0))
        assert err <= bound, f"{name}: onnxruntime differs by {err:.3g} (allowed {bound:.3g})"
