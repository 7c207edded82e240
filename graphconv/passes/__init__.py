"""The optimizer: passes over the IR, each in its own module, run by the pass manager (manager.py).

    from graphconv.passes import optimize, format_log
    net2, log = optimize(net, level=2)

Pipeline order (-O2): remove_dropout, remove_identity, fold_constants, cse, dce, fold_batchnorm, fold_1x1,
fuse_activation, dce, plan_memory; -O3 adds lower_pooling before fuse_activation, and lower_1x1 and fuse_pool after
it; for the llvm target, assign_layout before plan_memory. See manager.py for the levels and base.py for what a pass
is.
"""

from .base import Pass, PassResult, Program
from .manager import LEVELS, PIPELINES, PassVerificationError, format_log, optimize, pipeline, registry, run_passes

__all__ = ["LEVELS", "PIPELINES", "Pass", "PassResult", "PassVerificationError", "Program", "format_log", "optimize",
           "pipeline", "registry", "run_passes"]
