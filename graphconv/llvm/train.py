"""Training steps on the LLVM backend: `LLVMRunner`, the `Runner` of graphconv/train/step.py for backend="llvm".

    step = TrainStep(net, [Loss("logits")], Optimizer("adam"), backend="llvm", threads=2)

The whole step (forward, losses, backward, optimizer updates: graphconv.train.step.build_training_graph) is one
native entry, built like an inference network's (codegen.py) with three differences:

- State in place. The state (every parameter an update output replaces: weights, batchnorm running statistics,
  momentum buffers, Adam moments) lives in the weights blob, and the code writes each next value straight over its
  parameter: there is no `update:` output buffer and nothing to copy between steps. `get_state`/`set_state` read
  and write the blob. Writing in place is safe because every update node is the last reader of its parameter and
  reads element i before writing element i; `codegen.state_plan` checks that for every parameter and, for one that
  breaks it, computes the value into an output buffer and copies it over the parameter after the last layer
  (`layout.state_copied` lists those).
- Re-packed weights. Kernels that read a weight in their own order get a re-packed copy in the blob at build time
  (conv2d: [G, O/V, C, kh, kw, V]). For a state parameter that copy would be stale after the first update, so the
  entry re-packs it from the parameter at the start of every run: a gather through an int32 index table in the
  blob, split between the threads. Chosen over reading unpacked weights because it was measured to pay: a 3x3
  conv2d 64->64 on 32x32, batch 8, one thread, float32, its weight updated every step, ran 6.7 ms a step packed
  with the gather (the gather alone 0.016 ms: it reads the weight once a step, the convolution once per output
  tile) and 55 ms with the only conv2d code that reads the weight as stored (the depthwise-style path).
- No inference-only passes. The graph optimizer runs with training=True: batchnorm folding, fusion, layout
  changes and pooling lowering would all change what the backward pass sees (or re-pack state), so only the
  simplifications valid in training run (remove_identity, fold_constants on fixed parameters, cse, dce).

Values without the batch dimension (gradients of weights, batch statistics, the loss) get their own region of the
arena, not scaled by the batch (plan_memory's static_apart). Reductions over the batch are deterministic
(kernels/train.py).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Mapping

import numpy as np

from ..errors import GraphconvError, InputError
from ..ir.graph import Graph
from ..network import Network
from ..ops import REGISTRY
from .compiler import Compiled, compile_graph, load_object
from .kernel import KERNELS, LOWERINGS, PACKERS, CodegenError
from .runtime import _ENTRY, LLVMModel, _Workers, aligned_empty, build_blob
from .target import Target

__all__ = ["LLVMRunner"]


class LLVMRunner:
    """A training graph compiled to native code, its state kept in the weights blob (see the module doc)."""

    def __init__(self, tg: Any, state: Mapping[str, np.ndarray], dtype: str = "float32", threads: int | None = None,
                 *, opt_level: int = 3, target_cpu: str | None = None, target_features: str | None = None,
                 cache: bool = True, llvm_opt: int = 3):
        from ..passes.manager import optimize
        from ..reference.executor import prepare_weights

        if dtype not in ("float32", "float64"):
            raise GraphconvError(f"unknown dtype {dtype!r}; the llvm backend runs float32 or float64")
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
            raise GraphconvError(f"threads must be an integer from 1 to 256, got {threads!r}")
        self.tg, self.dtype, self.threads = tg, dtype, threads
        self._dt = np.dtype(dtype)
        self.target = Target.host(target_cpu, target_features)
        missing = self.target.runs_here()
        if missing:
            raise GraphconvError(f"this machine lacks {', '.join(missing)}, which code for {self.target.cpu} uses")
        graph: Graph = tg.graph
        self.state_names = [name for name, p in graph.params.items() if p.data is None]
        given = {k: np.asarray(v).astype(dtype, copy=False) for k, v in state.items()}
        unknown = [k for k in given if k not in graph.params]
        if unknown:
            raise GraphconvError(f"state for unknown parameters: {', '.join(sorted(unknown))}")
        # inference-only passes are skipped (training=True): see the module doc
        optimized, self.pass_log = optimize(Network(graph, given), opt_level, training=True, target="llvm")
        g = self.graph = optimized.graph
        missing: dict[str, str] = {}
        for n in g.nodes:
            if n.op not in KERNELS and n.op not in LOWERINGS:
                missing.setdefault(n.op, n.name)
        if missing:  # say it before compiling anything, naming every op at once
            raise CodegenError(f"the llvm backend has no kernel yet for {', '.join(sorted(missing))} (e.g. layer "
                               f"'{next(iter(missing.values()))}'), which training {graph.name} needs")
        weights = prepare_weights(g, optimized.weights, "float64")
        self.updates = {p: out for p, out in tg.updates.items() if p in g.params and out in g.outputs}
        self.compiled: Compiled = compile_graph(g, weights, dtype=dtype, target=self.target, llvm_opt=llvm_opt,
                                                use_cache=cache, state=self.updates)
        self.layout = self.compiled.layout
        self.blob = build_blob(self.layout, g, weights)
        self._slots = {e.param: e for e in self.layout.blob if e.packer is None}
        # state the optimizer pruned (no node reads it): kept here; its next value, if any, is a plain output
        self._pruned = {k: np.array(given[k], dtype) for k in self.state_names if k not in g.params and k in given}
        self._pruned_updates = {p: out for p, out in tg.updates.items() if p not in g.params and out in g.outputs}
        self._code = load_object(self.compiled, self.target)
        self._entry = _ENTRY(self._code.entry)
        self._lock = threading.Lock()
        self._arenas: dict[int, np.ndarray] = {}
        self._barrier = aligned_empty(64)
        self._barrier[:] = 0
        self._workers = _Workers(threads - 1) if threads > 1 else None
        self._update_outputs = set(tg.updates.values())
        self._work = _work_estimate(g)

    # -- state ----------------------------------------------------------------------------------------------------
    def _slot(self, name: str) -> np.ndarray:
        """The parameter's array in the blob (a view: writing it writes the state)."""
        e = self._slots[name]
        shape = tuple(int(d) for d in self.graph.params[name].value.type.shape)
        return self.blob[e.offset:e.offset + e.nbytes].view(self._dt).reshape(shape)

    def get_state(self) -> dict[str, np.ndarray]:
        out = {}
        with self._lock:
            for name in self.state_names:
                if name in self._slots:
                    out[name] = self._slot(name).copy()
                elif name in self._pruned:
                    out[name] = self._pruned[name].copy()
        return out

    def set_state(self, values: Mapping[str, np.ndarray]) -> None:
        with self._lock:
            for name, v in values.items():
                if name not in self.state_names:
                    raise GraphconvError(f"'{name}' is not part of the training state")
                arr = np.asarray(v)
                if name in self._pruned:
                    self._pruned[name] = np.array(arr, self.dtype)
                    continue
                slot = self._slot(name)
                if arr.shape != slot.shape:
                    raise GraphconvError(f"state '{name}' has shape {list(arr.shape)}; expected {list(slot.shape)}")
                slot[...] = arr
                # re-packed copies: those of updated parameters the code refreshes at the start of every run; a
                # parameter the step does not update (a frozen weight) is re-packed here
                if name not in self.layout.repacked:
                    for e in self.layout.blob:
                        if e.param == name and e.packer is not None and e.kind == "":
                            packed = np.ascontiguousarray(PACKERS[e.packer](np.asarray(slot, np.float64), **e.args),
                                                          self._dt)
                            self.blob[e.offset:e.offset + e.nbytes] = packed.view(np.uint8).reshape(-1)

    # -- one step -------------------------------------------------------------------------------------------------
    def _inputs(self, feed: Mapping[str, Any]) -> tuple[list[np.ndarray], int]:
        from ..reference.executor import check_inputs

        arrays, dims = check_inputs(self.graph, feed)
        ordered = [np.ascontiguousarray(arrays[v.name], dtype=self._dt) for v in self.graph.inputs]
        batch = dims[self.layout.symbols[0]] if self.layout.symbols else 1
        for arr, v in zip(ordered, self.graph.inputs):  # the byte size native code will read
            if arr.nbytes != v.type.numel(batch) * self._dt.itemsize:
                raise InputError(f"input '{v.name}' has {arr.nbytes} bytes, expected "
                                 f"{v.type.numel(batch) * self._dt.itemsize}")
        return ordered, batch

    def run(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One step: the outputs (the loss, the network's outputs, any others) but not the `update:` ones (the next
        state is already in place)."""
        import ctypes

        arrays, batch = self._inputs(feed)
        g, lay = self.graph, self.layout
        dt = self._dt
        outs = {name: np.empty(g.outputs[name].type.concrete(batch), dt) for name in g.outputs
                if lay.output_slots.get(name) == name}
        in_ptrs = (ctypes.c_void_p * max(1, len(arrays)))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * max(1, len(outs)))(*[a.ctypes.data for a in outs.values()])
        result: dict[str, np.ndarray] = {}
        with self._lock:
            for name, v in g.outputs.items():  # a parameter as an output: its value before this step
                if v.kind == "param" and name not in self._update_outputs:
                    result[name] = self._slot(v.name).copy()
            arena = self._arenas.get(batch)
            if arena is None:
                arena = aligned_empty(max(64, lay.arena_bytes(batch, self.threads)))
                self._arenas = {batch: arena}
            args = (ctypes.addressof(in_ptrs), ctypes.addressof(out_ptrs), arena.ctypes.data, self.blob.ctypes.data,
                    batch)
            barrier = self._barrier.ctypes.data
            per_sample, fixed = self._work
            if self._workers is None or per_sample * batch + fixed < LLVMModel.min_parallel_flops:
                self._entry(*args, 0, 1, barrier)
            else:
                self._workers.run(self._entry, args, self.threads, barrier)
        names = [v.name for v in g.inputs]
        for name, v in g.outputs.items():
            if name in result or (name in self._update_outputs and name not in self._pruned_updates.values()):
                continue
            if name in outs:
                result[name] = outs[name]
            elif lay.output_slots.get(name) is not None:
                result[name] = outs[lay.output_slots[name]].copy()
            elif v.kind == "input":
                result[name] = arrays[names.index(v.name)].copy()
        with self._lock:
            for param, name in self._pruned_updates.items():
                self._pruned[param] = np.array(result.pop(name), self.dtype)
        return {name: result[name] for name in g.outputs if name in result}

    def __del__(self):
        w = getattr(self, "_workers", None)
        if w is not None:
            w.close()


def _work_estimate(g: Graph) -> tuple[float, float]:
    """Rough flops of one step: (per sample, independent of the batch), to decide whether waking the worker
    threads pays (LLVMModel.min_parallel_flops)."""
    per_sample = fixed = 0.0
    for n in g.nodes:
        op = REGISTRY.get(n.op)
        try:
            per_sample += 2.0 * op.macs(n.attrs, [v.type for v in n.inputs], n.output.type)
        except Exception:  # noqa: BLE001 - an estimate: an op without a cost model counts its memory traffic only
            pass
        for v in (*n.all_inputs, n.output):
            if v.type.is_static:
                fixed += 2.0 * v.type.numel()
            else:
                per_sample += 2.0 * v.type.numel(1)
    return per_sample, fixed
