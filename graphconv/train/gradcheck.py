"""Gradient checks: the autodiff pass's gradients against central finite differences of the loss, both computed
by the float64 reference executor on the same training-mode graph (same dropout masks, batch statistics).

    report = check_gradients(graph, weights, {"x": x}, losses=[Loss("y", "mse")])
    assert report.ok, report.text()

Every differentiated tensor (trainable parameters, and the inputs with `inputs=True`) is checked on up to
`max_elements` elements chosen at random (seeded): |analytic - numeric| <= atol + rtol·|numeric| on each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..ir.graph import Graph
from ..reference.executor import run_graph
from .autodiff import LOSS, Loss, TrainingGraph, differentiate

__all__ = ["GradCheck", "check_gradients", "training_feed"]


@dataclass
class GradCheck:
    """Per tensor: the largest excess of |analytic - numeric| over the tolerance (<= 0 passes) and the worst
    element's figures."""

    worst: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # name -> (excess, analytic, numeric)
    checked: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # asked for, but no gradient was produced

    @property
    def ok(self) -> bool:
        """Whether every checked gradient was within tolerance and none was missing."""
        return not self.missing and bool(self.worst) and all(w[0] <= 0 for w in self.worst.values())

    def text(self) -> str:
        """A report: per parameter, the elements checked and the worst mismatch."""
        lines = [f"{name}: {self.checked[name]} elements, worst analytic {a:.6g} vs numeric {n:.6g} "
                 f"({'ok' if ex <= 0 else f'off by {ex:.3g} beyond tolerance'})"
                 for name, (ex, a, n) in self.worst.items()]
        lines += [f"{name}: no gradient" for name in self.missing]
        return "\n".join(lines)


def training_feed(tg: TrainingGraph, inputs: Mapping[str, np.ndarray], *, seed: int = 0,
                  dtype: str = "float64") -> dict[str, np.ndarray]:
    """The graph inputs, plus random targets and dropout masks (seeded) for those not given."""
    rng = np.random.default_rng(seed)
    feed = {k: np.asarray(v, dtype) for k, v in inputs.items()}
    batched = [feed[v.name] for v in tg.graph.inputs
               if v.name in feed and v.type.rank and isinstance(v.type.shape[0], str)]
    batch = int(batched[0].shape[0]) if batched else 1
    for v in tg.graph.inputs:
        if v.name in feed:
            continue
        shape = v.type.concrete(batch)
        if v.name in tg.masks:
            rate = tg.masks[v.name]
            feed[v.name] = ((rng.random(shape) >= rate) / (1.0 - rate)).astype(dtype)
        elif v.name.endswith("@target"):
            t = rng.random(shape)
            feed[v.name] = (t / t.sum(axis=1, keepdims=True) if len(shape) == 2 else t).astype(dtype)
        else:
            raise KeyError(f"no value for input '{v.name}'")
    return feed


def check_gradients(graph: Graph, weights: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray], *,
                    losses: Sequence[Loss], wrt: Sequence[str] | None = None, inputs_grad: bool = True,
                    eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, max_elements: int = 24,
                    seed: int = 0) -> GradCheck:
    """Compare the autodiff gradients of `graph` with central differences (float64 reference executor)."""
    tg = differentiate(graph, losses, wrt, inputs=inputs_grad)
    feed = training_feed(tg, inputs, seed=seed)
    w64 = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    out = run_graph(tg.graph, feed, w64, dtype="float64")
    # the loss alone, for the differences: the same training-mode graph without the backward part
    fwd = differentiate(graph, losses, wrt=[], inputs=False).graph

    def loss(feed_: Mapping, w_: Mapping) -> float:
        return float(run_graph(fwd, {k: v for k, v in feed_.items() if k in {i.name for i in fwd.inputs}}, w_,
                               dtype="float64")[LOSS][0])

    asked = list(tg.grads) if wrt is None else list(wrt) + ([v.name for v in graph.inputs] if inputs_grad else [])
    report = GradCheck()
    rng = np.random.default_rng(seed + 1)
    for name in asked:
        if name not in tg.grads:
            report.missing.append(name)
            continue
        analytic = out[tg.grads[name]]
        is_input = name in feed
        base = feed[name] if is_input else w64[name]
        flat = base.reshape(-1)
        idx = np.arange(flat.size) if flat.size <= max_elements else rng.choice(flat.size, max_elements, False)
        worst = (-np.inf, 0.0, 0.0)
        for i in idx:
            vals = []
            for sign in (1.0, -1.0):
                pert = flat.copy()
                pert[i] += sign * eps
                arr = pert.reshape(base.shape)
                vals.append(loss({**feed, name: arr}, w64) if is_input else loss(feed, {**w64, name: arr}))
            numeric = (vals[0] - vals[1]) / (2 * eps)
            a = float(analytic.reshape(-1)[i])
            excess = abs(a - numeric) - (atol + rtol * abs(numeric))
            if excess > worst[0]:
                worst = (excess, a, numeric)
        report.worst[name] = worst
        report.checked[name] = len(idx)
    return report
