"""The pass manager: optimization levels, the pass log, IR printing and verification between passes.

    net2, log = optimize(net, level=2)                    # a new Network; `net` is left as it was
    print(format_log(log))                                # one line per pass: what fired and how often

Levels (inference; a training graph skips the passes marked inference-only, so it keeps batchnorm statistics and
dropout):

    -O0  nothing
    -O1  simplification: dropout and identity removal, constant folding, common subexpressions, dead code
    -O2  -O1 + batchnorm folding, 1×1 folding, activation and residual fusion, memory planning
    -O3  -O2 + lowering to the primitives a backend implements: pooling to window sums, maxima and means, the
         remaining 1×1 convolutions to matrix products; max pooling fused into the convolution before it; for the
         llvm target, the blocked channel layout NCHW16c (assign_layout)

`verify_ir=True` (debug mode) runs the IR verifier after every pass. `verify_passes=True` runs the reference
executor in float64 on seeded random inputs before the first pass and after every pass, and raises
`PassVerificationError` naming the first pass that changed a result.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from ..errors import GraphconvError
from .base import Pass, PassResult, Program

if TYPE_CHECKING:
    from ..network import Network

LEVELS = (0, 1, 2, 3)


class PassVerificationError(GraphconvError):
    """A pass changed what the network computes, or left an invalid IR."""


@dataclass
class PassRecord:
    name: str
    result: PassResult
    seconds: float

    def line(self) -> str:
        return f"{self.name}: {self.result.line()}"


def registry() -> dict[str, Pass]:
    """Every pass by name."""
    from . import (assign_layout, cse, dce, fold_1x1, fold_batchnorm, fold_constants, fuse_activation, fuse_pool,
                   lower_1x1, lower_pooling, plan_memory, remove_dropout, remove_identity)

    passes = [remove_dropout.RemoveDropout(), remove_identity.RemoveIdentity(), fold_constants.FoldConstants(),
              cse.CommonSubexpressions(), dce.DeadCode(), fold_batchnorm.FoldBatchNorm(), fold_1x1.Fold1x1(),
              lower_pooling.LowerPooling(), fuse_activation.FuseActivation(), lower_1x1.Lower1x1(),
              fuse_pool.FusePool(), assign_layout.AssignLayout(), plan_memory.PlanMemory()]
    return {p.name: p for p in passes}


SIMPLIFY = ["remove_dropout", "remove_identity", "fold_constants", "cse", "dce"]
PIPELINES: dict[int, list[str]] = {
    0: [],
    1: SIMPLIFY,
    2: SIMPLIFY + ["fold_batchnorm", "fold_1x1", "fuse_activation", "dce", "plan_memory"],
    3: SIMPLIFY + ["fold_batchnorm", "fold_1x1", "lower_pooling", "fuse_activation", "lower_1x1", "fuse_pool",
                   "dce", "plan_memory"],
}


TARGETS = ("reference", "onnx", "llvm")
TARGET_PASSES = {"llvm": ["assign_layout"]}  # at -O3, before plan_memory (the last pass there)


def pipeline(level: int, *, training: bool = False, target: str = "reference") -> list[Pass]:
    """The passes of an optimization level for a target backend, in order."""
    if isinstance(level, bool) or level not in LEVELS:
        raise GraphconvError(f"unknown optimization level {level!r}; choose 0, 1, 2 or 3")
    if target not in TARGETS:
        raise GraphconvError(f"unknown target {target!r}; choose {', '.join(TARGETS)}")
    names = list(PIPELINES[level])
    if level == 3:
        names[-1:-1] = TARGET_PASSES.get(target, [])
    reg = registry()
    return [reg[name] for name in names if not (training and reg[name].inference_only)]


def _random_inputs(graph, seed: int, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(v.type.concrete(batch)) for v in graph.inputs}


def _reference(program: Program, inputs) -> dict[str, np.ndarray]:
    from ..reference.executor import run_graph

    return run_graph(program.graph, inputs, program.weights, dtype="float64")


def _compare(before: dict, after: dict, rtol: float) -> str | None:
    if list(before) != list(after):
        return f"the outputs changed from {list(before)} to {list(after)}"
    for name, a in before.items():
        b = after[name]
        if a.shape != b.shape:
            return f"output '{name}' changed shape from {a.shape} to {b.shape}"
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        if not np.allclose(b, a, rtol=rtol, atol=rtol * max(scale, 1e-30), equal_nan=True):
            err = float(np.max(np.abs(b - a)))
            return f"output '{name}' changed by up to {err:.3g} (its values reach {scale:.3g})"
    return None


def run_passes(program: Program, passes: Iterable[Pass], *, verify_ir: bool = False, verify_passes: bool = False,
               after: Callable[[Pass, PassResult, Program], None] | None = None, seed: int = 0,
               rtol: float = 1e-6) -> list[PassRecord]:
    """Run passes in order on `program` (in place). `after(pass, result, program)` is called after each one (the CLI
    prints the IR there)."""
    from ..ir.verify import lint

    log: list[PassRecord] = []
    inputs = _random_inputs(program.graph, seed) if verify_passes else None
    want = _reference(program, inputs) if verify_passes else None
    for p in passes:
        if program.training and p.inference_only:
            continue
        t0 = time.perf_counter()
        result = p.run(program)
        log.append(PassRecord(p.name, result, time.perf_counter() - t0))
        if result.changed:
            program.graph.meta.pop("memory_plan", None)  # planned for a graph that no longer exists
        if verify_ir or verify_passes:
            problems = lint(program.graph)
            if problems:
                raise PassVerificationError(f"pass {p.name} left an invalid IR:\n  " + "\n  ".join(problems[:20]))
        if verify_passes and result.changed:
            got = _reference(program, inputs)
            why = _compare(want, got, rtol)
            if why is not None:
                raise PassVerificationError(f"pass {p.name} changed the network's result: {why}")
        if after is not None:
            after(p, result, program)
    return log


def optimize(net: Network, level: int = 2, *, training: bool = False, target: str = "reference",
             passes: list[str] | None = None,
             verify_ir: bool = False, verify_passes: bool = False,
             after: Callable[[Pass, PassResult, Program], None] | None = None,
             seed: int = 0) -> tuple[Network, list[PassRecord]]:
    """Optimize a Network for a target backend: returns (a new Network, the pass log). `passes` names passes to run
    instead of a level's pipeline."""
    from ..network import Network

    if passes is not None:
        reg = registry()
        unknown = [name for name in passes if name not in reg]
        if unknown:
            raise GraphconvError(f"unknown pass{'es' if len(unknown) > 1 else ''} {', '.join(unknown)}; passes: "
                                 f"{', '.join(reg)}")
        chosen = [reg[name] for name in passes]
    else:
        chosen = pipeline(level, training=training, target=target)
    program = Program(copy.deepcopy(net.graph), dict(net.weights), training)
    log = run_passes(program, chosen, verify_ir=verify_ir, verify_passes=verify_passes, after=after, seed=seed)
    return Network(program.graph, program.weights), log


def format_log(log: list[PassRecord]) -> str:
    """The pass log as text, one line per pass."""
    return "\n".join(r.line() for r in log)
