"""The compiled network as a Python callable: `graphconv.compile(net, backend="llvm", threads=T, opt_level=L)`.

A call checks the inputs at the boundary (names, shapes against the compiled static dimensions and one batch size
for the symbolic one, dtype, C-contiguity), allocates the outputs, and runs the native entry on T threads: this
thread is thread 0, T-1 worker threads (started once, waiting on semaphores) are the others; ctypes releases the
GIL while native code runs, so the threads really run in parallel, and they only meet at the barriers inside the
generated code. The arena for a batch size is kept for the next call. A lock makes calls from several Python threads
safe (they run one after the other: they share the arena).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Mapping

import numpy as np

from ..errors import GraphconvError, InputError
from ..ir.graph import Graph
from ..network import Model, Network
from .codegen import Layout
from .compiler import Compiled, compile_graph, load_object
from .kernel import PACKERS, gather_index
from .target import Target

__all__ = ["LLVMModel", "build_blob", "aligned_empty"]

_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)


def aligned_empty(nbytes: int, align: int = 64) -> np.ndarray:
    """A byte array whose data starts on an `align`-byte boundary."""
    raw = np.empty(int(nbytes) + align, dtype=np.uint8)
    skip = (-raw.ctypes.data) % align
    return raw[skip:skip + int(nbytes)]


def build_blob(layout: Layout, graph: Graph, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """The weights blob the code reads: every parameter in the build's float type at its offset, the re-packed
    copies kernels asked for, and (training) the gather indices that re-pack state parameters. Sizes are checked
    against the layout before anything is written."""
    dt = np.dtype(layout.dtype)
    blob = aligned_empty(max(layout.blob_bytes, 64))
    blob[:] = 0
    for e in layout.blob:
        arr = np.asarray(weights[e.param])
        if e.kind == "index":  # the int32 gather the code re-packs a changing parameter with
            arr = gather_index(e.packer, arr.shape, e.args)
        elif e.packer is not None:
            arr = np.ascontiguousarray(PACKERS[e.packer](arr, **e.args), dtype=dt)
        else:
            arr = np.ascontiguousarray(arr, dtype=dt)
        if arr.nbytes != e.nbytes or e.offset + e.nbytes > layout.blob_bytes:
            raise GraphconvError(f"weights blob: '{e.param}' has {arr.nbytes} bytes, the code expects {e.nbytes}")
        blob[e.offset:e.offset + e.nbytes] = arr.view(np.uint8).reshape(-1)
    return blob


class _Workers:
    """T-1 threads that each run the entry as thread tid when released."""

    def __init__(self, count: int):
        self.count = count
        self.go = [threading.Semaphore(0) for _ in range(count)]
        self.done = threading.Semaphore(0)
        self.job: tuple | None = None
        self.threads = []
        for k in range(count):
            t = threading.Thread(target=self._loop, args=(k + 1,), daemon=True, name=f"graphconv-llvm-{k + 1}")
            t.start()
            self.threads.append(t)

    def _loop(self, tid: int) -> None:
        while True:
            self.go[tid - 1].acquire()
            job = self.job
            if job is None:
                return
            fn, args, nthreads, barrier = job
            fn(*args, tid, nthreads, barrier)
            self.done.release()

    def run(self, fn, args: tuple, nthreads: int, barrier: int) -> None:
        self.job = (fn, args, nthreads, barrier)
        for k in range(nthreads - 1):
            self.go[k].release()
        fn(*args, 0, nthreads, barrier)
        for _ in range(nthreads - 1):
            self.done.acquire()

    def close(self) -> None:
        self.job = None
        for g in self.go:
            g.release()


class LLVMModel(Model):
    """Native CPU code generated through LLVM (see graphconv/llvm)."""

    backend = "llvm"
    # Waking the worker threads costs about 0.1 ms: a run with less work than this (a few milliseconds of one core
    # at most) runs on the calling thread alone.
    min_parallel_flops = 20e6

    def __init__(self, net: Network, dtype: str = "float32", *, threads: int | None = None, opt_level: int = 3,
                 target_cpu: str | None = None, target_features: str | None = None, cache: bool = True,
                 llvm_opt: int = 3, device: str = "cpu"):
        from ..passes.manager import optimize

        if device != "cpu":
            raise GraphconvError(f"the llvm backend runs on the CPU, not on device {device!r}; for a GPU use "
                                 "backend='onnx', device='cuda'")
        if dtype not in ("float32", "float64"):
            raise GraphconvError(f"unknown dtype {dtype!r}; the llvm backend runs float32 or float64")
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
            raise GraphconvError(f"threads must be an integer from 1 to 256, got {threads!r}")
        super().__init__(net, dtype)
        self.threads = threads
        self.opt_level = opt_level
        self.target = Target.host(target_cpu, target_features)
        missing = self.target.runs_here()
        if missing:
            raise GraphconvError(f"this machine lacks {', '.join(missing)}, which code for {self.target.cpu} uses: it "
                                 "cannot run here (compile it with --target llvm-aot for the machine that has them)")
        # the optimizer folds in float64 and stores in the weights' precision: give it the build's
        net = Network(net.graph, {k: np.asarray(v).astype(dtype, copy=False) for k, v in net.weights.items()})
        optimized, self.pass_log = optimize(net, opt_level, target="llvm")
        self.optimized = optimized
        self._llvm_opt, self._use_cache, self._profiled = llvm_opt, cache, None
        self.compiled: Compiled = compile_graph(optimized.graph, optimized.weights, dtype=dtype, target=self.target,
                                                llvm_opt=llvm_opt, use_cache=cache)
        self.layout = self.compiled.layout
        from ..reference.executor import prepare_weights

        weights = prepare_weights(optimized.graph, optimized.weights, "float64")
        self.blob = build_blob(self.layout, optimized.graph, weights)
        self._code = load_object(self.compiled, self.target)
        self._entry = _ENTRY(self._code.entry)
        self._lock = threading.Lock()
        self._arenas: dict[int, np.ndarray] = {}
        self._barrier = aligned_empty(64)
        self._barrier[:] = 0
        self._workers = _Workers(threads - 1) if threads > 1 else None
        self._dtype = np.dtype(dtype)
        self._expected = [(v.name, [d if isinstance(d, int) else None for d in v.type.shape])
                          for v in self.graph.inputs]
        from ..summary import summarize

        self.flops_per_sample = 2 * summarize(optimized.graph)["total_macs"]

    # -- calling --------------------------------------------------------------------------------------------
    def _fast_check(self, inputs: Mapping[str, Any]) -> tuple[list[np.ndarray], int] | None:
        """The common case in a few microseconds: exactly the expected arrays, right dtype, C-contiguous, shapes
        fitting. None when anything is off (then `_check` says what)."""
        if not isinstance(inputs, dict) or len(inputs) != len(self._expected):
            return None
        dt = self._dtype
        batch = None
        ordered = []
        for name, shape in self._expected:
            arr = inputs.get(name)
            if type(arr) is not np.ndarray or arr.dtype != dt or not arr.flags.c_contiguous or arr.ndim != len(shape):
                return None
            for want, got in zip(shape, arr.shape):
                if want is None:
                    if batch is None:
                        batch = got
                    if got != batch or got < 1:
                        return None
                elif want != got:
                    return None
            ordered.append(arr)
        return ordered, (batch if batch is not None else 1)

    def _check(self, inputs: Mapping[str, Any]) -> tuple[list[np.ndarray], int]:
        from ..reference.executor import check_inputs

        fast = self._fast_check(inputs)
        if fast is not None:
            return fast
        arrays, dims = check_inputs(self.graph, inputs)
        dt = np.dtype(self.dtype)
        problems = []
        ordered = []
        for v in self.graph.inputs:
            arr = arrays[v.name]
            if arr.dtype != dt:
                problems.append(f"input '{v.name}' is {arr.dtype}; this model was compiled for {dt} "
                                f"(pass x.astype(np.{dt}))")
            elif not arr.flags.c_contiguous:
                problems.append(f"input '{v.name}' is not C-contiguous (pass np.ascontiguousarray(x))")
            ordered.append(arr)
        if problems:
            raise InputError(problems[0] if len(problems) == 1 else
                             "bad inputs:\n" + "\n".join(f"  - {p}" for p in problems))
        batch = dims[self.layout.symbols[0]] if self.layout.symbols else 1
        for arr, v in zip(ordered, self.graph.inputs):  # belt and braces: the byte size native code will read
            want = v.type.numel(batch) * dt.itemsize
            if arr.nbytes != want:
                raise InputError(f"input '{v.name}' has {arr.nbytes} bytes, expected {want}")
        return ordered, batch

    def _buffers(self, arrays: list[np.ndarray], batch: int, layout: Layout):
        """The output arrays the code writes (by output name) and the input and output pointer tables. The tables
        hold raw addresses: the caller keeps the arrays alive while the code may run."""
        dt = np.dtype(self.dtype)
        outs = {name: np.empty(v.type.concrete(batch), dt) for name, v in self.optimized.graph.outputs.items()
                if layout.output_slots.get(name) == name}
        in_ptrs = (ctypes.c_void_p * max(1, len(arrays)))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * max(1, len(outs)))(*[a.ctypes.data for a in outs.values()])
        return outs, in_ptrs, out_ptrs

    def _launch(self, entry, in_ptrs, out_ptrs, batch: int) -> None:
        """Run `entry` once on this batch, on the workers when the work is worth waking them. Call with the lock
        held (the arena and barrier are shared)."""
        arena = self._arenas.get(batch)
        if arena is None:
            arena = aligned_empty(max(64, self.layout.arena_bytes(batch, self.threads)))
            self._arenas = {batch: arena}  # keep the last size only
        args = (ctypes.addressof(in_ptrs), ctypes.addressof(out_ptrs), arena.ctypes.data, self.blob.ctypes.data,
                batch)
        barrier = self._barrier.ctypes.data
        if self._workers is None or self.flops_per_sample * batch < self.min_parallel_flops:
            entry(*args, 0, 1, barrier)
        else:
            self._workers.run(entry, args, self.threads, barrier)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        arrays, batch = self._check(inputs)
        g = self.optimized.graph
        outs, in_ptrs, out_ptrs = self._buffers(arrays, batch, self.layout)
        with self._lock:
            self._launch(self._entry, in_ptrs, out_ptrs, batch)
        # outputs that are the same value as another, or a graph input or parameter
        for name, v in g.outputs.items():
            if name in outs:
                continue
            src = self.layout.output_slots.get(name)
            if src is not None:
                outs[name] = outs[src].copy()
            elif v.kind == "input":
                outs[name] = arrays[[x.name for x in g.inputs].index(v.name)].copy()
            else:
                outs[name] = np.asarray(self.optimized.weights.get(v.name, g.params[v.name].data),
                                        self.dtype).copy()
        return {name: outs[name] for name in g.outputs}

    def profile(self, *args: Any, repeat: int = 20, **kwargs: Any) -> list[tuple[str, float]]:
        """Time each layer: (layer, median milliseconds) in execution order, from a build of the same network that
        reads the CPU's cycle counter after each layer (compiled on first use; cycles are turned into time by the
        duration of the whole run). Takes the inputs as a call does: `profile(x)`, `profile(image=x)` or a dict."""
        import time

        inputs = self._gather(args, kwargs)

        if self._profiled is None:
            compiled = compile_graph(self.optimized.graph, self.optimized.weights, dtype=self.dtype,
                                     target=self.target, llvm_opt=self._llvm_opt, use_cache=self._use_cache,
                                     profile=True)
            code = load_object(compiled, self.target)
            addr = code.engine.get_global_value_address(f"{compiled.layout.symbol}_profile")
            stamps = (ctypes.c_int64 * (compiled.layout.layers + 1)).from_address(addr)
            self._profiled = (code, _ENTRY(code.entry), stamps, compiled.layout)
        code, entry, stamps, layout = self._profiled
        arrays, batch = self._check(inputs)
        outs, in_ptrs, out_ptrs = self._buffers(arrays, batch, layout)  # `outs` must outlive the runs below
        per_layer = []
        with self._lock:
            for _ in range(repeat + 2):
                t0 = time.perf_counter()
                self._launch(entry, in_ptrs, out_ptrs, batch)
                wall = time.perf_counter() - t0
                ticks = list(stamps)
                start, ends = ticks[-1], ticks[:-1]
                total = max(ends[-1] - start, 1)
                prev, row = start, []
                for t in ends:
                    row.append((t - prev) / total * wall * 1e3)
                    prev = t
                per_layer.append(row)
        del outs
        med = np.median(np.array(per_layer[2:]), axis=0)  # the first two runs warm up
        return list(zip(layout.layer_names, (float(x) for x in med)))

    def __del__(self):
        w = getattr(self, "_workers", None)
        if w is not None:
            w.close()
