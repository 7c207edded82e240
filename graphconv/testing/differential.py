"""Differential testing of the compiler: one network through every backend, each result compared with the float64
reference executor.

    mismatches = compare(case)            # [] when every backend agrees

A case (graphconv/testing/random_cnn.py) runs in float64 on the reference executor, the oracle, and in float32 on
the llvm backend at -O0, -O2 and -O3 with 1 and 2 threads and on onnxruntime. A result agrees when every element is
within ATOL + RTOL·|reference| (NaN and ±Inf must match the reference exactly). Threads share one compiled module,
so a level costs one compile. `tools/fuzz.py --differential N` runs many seeds; tests/testing runs a few.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ..network import Network
from ..reference.executor import run_graph
from .random_cnn import Case

__all__ = ["Mismatch", "compare", "CONFIGS", "RTOL", "ATOL"]

RTOL, ATOL = 1e-4, 1e-5
CONFIGS = tuple([f"llvm -O{level} threads={t}" for level in (0, 2, 3) for t in (1, 2)] + ["onnx"])


@dataclass
class Mismatch:
    """One backend's output that disagrees with the reference."""

    config: str
    output: str
    max_error: float
    bound: float
    note: str = ""

    def line(self) -> str:
        """The mismatch in one line."""
        return (f"{self.config}: output {self.output} differs by {self.max_error:.3g} (allowed {self.bound:.3g})"
                + (f"; {self.note}" if self.note else ""))


def _runners(net: Network, configs: tuple[str, ...]) -> dict[str, Callable[[Mapping[str, np.ndarray]], dict]]:
    import graphconv

    out = {}
    for config in configs:
        if config == "onnx":
            out[config] = graphconv.compile(net, backend="onnx", threads=1).run
        else:
            level, threads = config.removeprefix("llvm -O").split(" threads=")
            out[config] = graphconv.compile(net, backend="llvm", opt_level=int(level), threads=int(threads)).run
    return out


def _agree(got: np.ndarray, want: np.ndarray, config: str, name: str) -> Mismatch | None:
    if got.shape != want.shape:
        return Mismatch(config, name, float("inf"), 0.0, f"shape {got.shape} instead of {want.shape}")
    special = ~np.isfinite(want)
    if not np.array_equal(np.isnan(got), np.isnan(want)) or \
            not np.array_equal(got[special & ~np.isnan(want)], want[special & ~np.isnan(want)]):
        return Mismatch(config, name, float("nan"), 0.0, "NaN or infinity where the reference has none, or the "
                                                          "other way round")
    finite = ~special
    err = np.abs(got[finite].astype(np.float64) - want[finite])
    bound = ATOL + RTOL * np.abs(want[finite])
    if np.any(err > bound) or not np.all(np.isfinite(got[finite])):
        worst = int(np.argmax(err - bound))
        return Mismatch(config, name, float(err[worst]), float(bound[worst]))
    return None


def compare(case: Case, configs: tuple[str, ...] = CONFIGS) -> list[Mismatch]:
    """Run `case` on every backend configuration and return the outputs that disagree with the float64 reference
    (the weights and inputs rounded to float32 first, so every run sees the same numbers)."""
    w32 = {k: np.asarray(v, np.float32) for k, v in case.weights.items()}
    x32 = {k: np.asarray(v, np.float32) for k, v in case.inputs.items()}
    want = run_graph(case.graph, x32, w32, dtype="float64")
    mismatches = []
    for config, run in _runners(Network(case.graph, w32), configs).items():
        got = run(x32)
        for name, ref in want.items():
            bad = _agree(np.asarray(got[name]), ref, config, name)
            if bad is not None:
                mismatches.append(bad)
    return mismatches
