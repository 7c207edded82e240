"""Named parameter initializers.

A spec names an initializer (`init=he_normal`, `init=normal(std=0.01)`, `init=gabor(wavelength=4)`); the IR keeps
it as an `Init`; `initialize(init, shape, rng)` makes the array. Fans follow PyTorch's convention for a weight of
shape [out, in, *kernel].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import OpError
from .ir.graph import Init


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight [out, in, *kernel]; a vector counts its length as both."""
    if len(shape) < 2:
        n = int(shape[0]) if shape else 1
        return n, n
    receptive = math.prod(shape[2:])
    return int(shape[1]) * receptive, int(shape[0]) * receptive


MODES = ("fan_in", "fan_out")  # the values of he_*'s `mode` argument; bare words in a spec


@dataclass(frozen=True)
class _Initializer:
    fn: Callable[..., np.ndarray]
    args: dict[str, Any]  # name -> default
    doc: str


def _fan(shape, mode: str) -> int:
    fan_in, fan_out = fans(shape)
    return max(1, fan_in if mode == "fan_in" else fan_out)


def _he_normal(shape, rng, mode="fan_in"):
    return rng.normal(0.0, math.sqrt(2.0 / _fan(shape, mode)), shape)


def _he_uniform(shape, rng, mode="fan_in"):
    bound = math.sqrt(6.0 / _fan(shape, mode))
    return rng.uniform(-bound, bound, shape)


def _glorot_normal(shape, rng, gain=1.0):
    fan_in, fan_out = fans(shape)
    return rng.normal(0.0, gain * math.sqrt(2.0 / max(1, fan_in + fan_out)), shape)


def _glorot_uniform(shape, rng, gain=1.0):
    fan_in, fan_out = fans(shape)
    bound = gain * math.sqrt(6.0 / max(1, fan_in + fan_out))
    return rng.uniform(-bound, bound, shape)


def _normal(shape, rng, std=0.01, mean=0.0):
    return rng.normal(mean, std, shape)


def _uniform(shape, rng, low=-0.05, high=0.05):
    return rng.uniform(low, high, shape)


def _constant(shape, rng, value=0.0):
    return np.full(shape, value, dtype=np.float64)


def _gabor(shape, rng, wavelength=0.0, sigma=0.0, gamma=0.5, orientations=0):
    """A Gabor filter bank for a weight [out, in, kh, kw]: filter o has orientation (o mod n)·π/n and phase 0 or π/2
    (alternating per round of orientations); every input channel gets the same filter, scaled by 1/in."""
    if len(shape) != 4:
        raise OpError(f"gabor initializes 4-d convolution weights, not shape {list(shape)}")
    out_c, in_c, kh, kw = shape
    lam = wavelength or max(kh, kw) / 2.0
    sig = sigma or 0.56 * lam
    n = orientations or min(out_c, 8)
    ys, xs = np.meshgrid(np.arange(kh) - (kh - 1) / 2.0, np.arange(kw) - (kw - 1) / 2.0, indexing="ij")
    bank = np.empty((out_c, kh, kw))
    for o in range(out_c):
        theta = (o % n) * math.pi / n
        psi = 0.0 if (o // n) % 2 == 0 else math.pi / 2
        xr = xs * math.cos(theta) + ys * math.sin(theta)
        yr = -xs * math.sin(theta) + ys * math.cos(theta)
        g = np.exp(-(xr ** 2 + (gamma * yr) ** 2) / (2 * sig ** 2)) * np.cos(2 * math.pi * xr / lam + psi)
        bank[o] = g - g.mean() if kh * kw > 1 else g
    return np.repeat(bank[:, None] / in_c, in_c, axis=1)


INITIALIZERS: dict[str, _Initializer] = {
    "he_normal": _Initializer(_he_normal, {"mode": "fan_in"}, "Kaiming/He normal for ReLU nets: std √(2/fan)"),
    "he_uniform": _Initializer(_he_uniform, {"mode": "fan_in"}, "Kaiming/He uniform: bound √(6/fan)"),
    "glorot_normal": _Initializer(_glorot_normal, {"gain": 1.0}, "Glorot/Xavier normal for tanh/sigmoid nets"),
    "glorot_uniform": _Initializer(_glorot_uniform, {"gain": 1.0}, "Glorot/Xavier uniform"),
    "normal": _Initializer(_normal, {"std": 0.01, "mean": 0.0}, "normal(mean, std)"),
    "uniform": _Initializer(_uniform, {"low": -0.05, "high": 0.05}, "uniform on [low, high)"),
    "constant": _Initializer(_constant, {"value": 0.0}, "every element `value`"),
    "zeros": _Initializer(lambda shape, rng: np.zeros(shape), {}, "all zeros"),
    "ones": _Initializer(lambda shape, rng: np.ones(shape), {}, "all ones"),
    "gabor": _Initializer(_gabor, {"wavelength": 0.0, "sigma": 0.0, "gamma": 0.5, "orientations": 0},
                          "a Gabor filter bank (orientations and phases over the output channels)"),
}


def make_init(init: Init) -> Callable[[Sequence[int], np.random.Generator], np.ndarray]:
    """Validate an `Init` and return a function (shape, rng) -> float64 array. Raises OpError when the name or an
    argument is wrong."""
    from .errors import did_you_mean

    spec = INITIALIZERS.get(init.name)
    if spec is None:
        raise OpError(f"unknown initializer '{init.name}'",
                      hint=did_you_mean(init.name, INITIALIZERS) or "initializers: " + ", ".join(sorted(INITIALIZERS)))
    kwargs = dict(spec.args)
    for k, v in init.args:
        if k not in spec.args:
            raise OpError(f"initializer '{init.name}' has no argument '{k}'",
                          hint=("its arguments: " + ", ".join(spec.args)) if spec.args else "it takes no arguments")
        default = spec.args[k]
        if isinstance(default, str):
            if v not in MODES:
                raise OpError(f"initializer '{init.name}': '{k}' must be fan_in or fan_out, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise OpError(f"initializer '{init.name}': '{k}' must be a number, got {v!r}")
        elif isinstance(default, int) and not isinstance(default, bool) and (v != int(v) or v < 0):
            raise OpError(f"initializer '{init.name}': '{k}' must be a whole number >= 0, got {v!r}")
        elif k in ("std", "sigma", "wavelength", "gain") and v < 0:
            raise OpError(f"initializer '{init.name}': '{k}' must be >= 0, got {v!r}")
        kwargs[k] = v
    if init.name == "uniform" and kwargs["low"] > kwargs["high"]:
        raise OpError(f"initializer 'uniform': low ({kwargs['low']}) is above high ({kwargs['high']})")

    def run(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        return np.asarray(spec.fn(tuple(int(s) for s in shape), rng, **kwargs), dtype=np.float64)

    return run


def check_shape(init: Init, shape: Sequence[int]) -> None:
    """Raise OpError when `init` cannot make an array of `shape` (checked when the spec is lowered, so the
    problem is reported at the layer, not when weights are made)."""
    if init.name == "gabor" and len(shape) != 4:
        raise OpError(f"gabor initializes 4-d convolution weights, not shape {list(shape)}")


def initialize(init: Init, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    return make_init(init)(shape, rng)
