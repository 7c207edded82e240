"""Optimizers as part of the training graph: `add_optimizer(tg, Optimizer(...))` turns each parameter's gradient
into update nodes (graphconv/ops/optim.py) computing its next value and its optimizer state's, so a training step
is one graph: inputs (the batch, targets, dropout masks, "@lr", and "@step" for Adam), outputs ("@loss", the network's
outputs, and one `update:<name>` per state parameter: weights, momentum buffers, Adam moments, batchnorm running
statistics). The optimizer state lives in new buffer parameters `<param>@momentum`, `<param>@m`, `<param>@v`,
zero at the start.

    sgd:   momentum 0.9 by default (0 for plain SGD), optional Nesterov, L2 weight decay added to the gradient
           (AlexNet's recipe: momentum 0.9, weight decay 5e-4), as torch.optim.SGD with dampening 0
    adam:  beta1 0.9, beta2 0.999, eps 1e-8, L2 weight decay added to the gradient (torch.optim.Adam)
    adamw: the same with decoupled weight decay (torch.optim.AdamW; default 0.01)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TrainingError
from ..ir.graph import Init, TensorType
from ..ops.build import add_op
from .autodiff import TrainingGraph

__all__ = ["Optimizer", "OPTIMIZERS", "add_optimizer"]

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class Optimizer:
    """Which update rule and its settings (the learning rate is a graph input, set per step by the schedule)."""

    kind: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float | None = None  # None: 0 for sgd and adam, 0.01 for adamw
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if self.kind not in OPTIMIZERS:
            raise TrainingError(f"unknown optimizer {self.kind!r}; choose {', '.join(OPTIMIZERS)}")
        if not 0.0 <= self.momentum < 1.0:
            raise TrainingError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and (self.kind != "sgd" or self.momentum == 0.0):
            raise TrainingError("Nesterov momentum needs sgd with a momentum above 0")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise TrainingError(f"weight decay must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise TrainingError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.eps < 0:
            raise TrainingError(f"eps must be >= 0, got {self.eps}")

    @property
    def decay(self) -> float:
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 0.01 if self.kind == "adamw" else 0.0


def add_optimizer(tg: TrainingGraph, opt: Optimizer) -> None:
    """Add the update nodes for every parameter with a gradient (see the module docstring). The gradient outputs
    are dropped: the step returns the next state instead."""
    g = tg.graph
    params = [name for name in tg.grads if name in g.params]
    if not params:
        raise TrainingError(f"{g.name} has no trainable parameter that reaches the loss")
    dtype = g.params[params[0]].value.type.dtype
    lr = g.add_input("@lr", TensorType((1,), dtype))
    tg.hyper["lr"] = lr.name
    step = None
    if opt.kind in ("adam", "adamw"):
        step = g.add_input("@step", TensorType((1,), dtype))
        tg.hyper["step"] = step.name
    for name in params:
        w = g.values[name]
        grad = g.outputs.pop(tg.grads[name])

        def state(suffix: str):
            return g.add_param(f"{name}@{suffix}", w.type, "buffer", Init("zeros"))

        def update(param, value) -> None:
            out = f"update:{param.name}"
            g.set_output(out, value)
            tg.updates[param.name] = out

        wd = opt.decay
        if opt.kind == "sgd":
            if opt.momentum == 0.0:
                update(w, add_op(g, f"{name}@new", "sgd_step", [w, grad, lr], weight_decay=wd))
                continue
            buf = state("momentum")
            buf_new = add_op(g, f"{buf.name}@new", "sgd_buffer", [buf, grad, w], momentum=opt.momentum,
                             weight_decay=wd)
            update(w, add_op(g, f"{name}@new", "sgd_momentum_step", [w, grad, buf_new, lr],
                             momentum=opt.momentum, weight_decay=wd, nesterov=opt.nesterov))
            update(buf, buf_new)
        else:
            l2 = wd if opt.kind == "adam" else 0.0
            m, v = state("m"), state("v")
            m_new = add_op(g, f"{m.name}@new", "adam_moment", [m, grad, w], beta=opt.beta1, weight_decay=l2)
            v_new = add_op(g, f"{v.name}@new", "adam_moment", [v, grad, w], beta=opt.beta2, square=True,
                           weight_decay=l2)
            update(w, add_op(g, f"{name}@new", "adam_step", [w, m_new, v_new, lr, step], beta1=opt.beta1,
                             beta2=opt.beta2, eps=opt.eps, weight_decay=wd if opt.kind == "adamw" else 0.0,
                             decoupled=opt.kind == "adamw"))
            update(m, m_new)
            update(v, v_new)
    tg.grads = {k: v for k, v in tg.grads.items() if k not in params}
