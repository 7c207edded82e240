"""Learning-rate schedules: the rate for each optimizer step, from the base rate.

    sched = make_schedule("cosine", lr=0.1, total_steps=1000, warmup_steps=50)
    lr = sched(step)                       # step counts from 0

- `constant`: lr.
- `step`: lr · gamma^(step // step_size) (PyTorch's StepLR, counted in steps).
- `cosine`: lr · (min_ratio + (1 - min_ratio)·(1 + cos(π·t))/2), t the fraction of the steps after warm-up done
  (PyTorch's CosineAnnealingLR to eta_min = min_ratio·lr).
Any of them may start with a linear warm-up from lr/warmup_steps to lr over `warmup_steps` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import GraphconvError

__all__ = ["Schedule", "make_schedule", "SCHEDULES"]

SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class Schedule:
    kind: str
    lr: float
    total_steps: int = 0
    warmup_steps: int = 0
    step_size: int = 1
    gamma: float = 0.1
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < 0:
            raise GraphconvError(f"a schedule's step counts from 0, got {step}")
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        k = step - self.warmup_steps
        if self.kind == "step":
            return self.lr * self.gamma ** (k // self.step_size)
        if self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            t = min(k / span, 1.0)
            return self.lr * (self.min_ratio + (1.0 - self.min_ratio) * (1.0 + math.cos(math.pi * t)) / 2.0)
        return self.lr


def make_schedule(kind: str, lr: float, *, total_steps: int = 0, warmup_steps: int = 0, step_size: int = 1,
                  gamma: float = 0.1, min_ratio: float = 0.0) -> Schedule:
    """A checked schedule (see the module doc); raises GraphconvError naming the bad setting."""
    if kind not in SCHEDULES:
        raise GraphconvError(f"unknown learning-rate schedule {kind!r}; choose {', '.join(SCHEDULES)}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise GraphconvError(f"the learning rate must be a positive number, got {lr!r}")
    if warmup_steps < 0 or step_size < 1 or total_steps < 0:
        raise GraphconvError("warmup_steps and total_steps must be >= 0 and step_size >= 1")
    if kind == "cosine" and total_steps <= warmup_steps:
        raise GraphconvError(f"a cosine schedule needs total_steps ({total_steps}) beyond the warm-up "
                             f"({warmup_steps})")
    if not 0.0 < gamma <= 1.0 or not 0.0 <= min_ratio <= 1.0:
        raise GraphconvError("gamma must be in (0, 1] and min_ratio in [0, 1]")
    return Schedule(kind, float(lr), total_steps, warmup_steps, step_size, gamma, min_ratio)
