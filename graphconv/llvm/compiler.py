"""From an optimized graph to machine code: build the module (codegen.py), link and verify it, optimize it with
LLVM's O3 pipeline for the target CPU, emit an object; load that object into an MCJIT engine in this process.

Compiled objects are cached on disk, keyed by everything the code depends on: the optimized IR (without the weight
values: they live in the blob, not the code), the float type, the target CPU and features, LLVM's optimization
level, the graphconv and llvmlite versions and the code generator's own source (with the op definitions, IR and
memory planner it reads). The object's SHA-256 is checked when it is read back. The cache lives in $GRAPHCONV_CACHE_DIR, else
$XDG_CACHE_HOME/graphconv, else ~/.cache/graphconv; each entry is `<key>.o` plus `<key>.json` (the layout), written
atomically. An unreadable or inconsistent entry is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

from .. import __version__
from .. import progress
from ..files import replacing
from ..errors import GraphconvError
from ..ir.graph import Graph
from ..ir.serialize import dumps
from .codegen import Layout, build_module, symbol_name
from .kernel import CodegenError
from .target import Target, init_llvm

__all__ = ["Compiled", "compile_graph", "cache_dir", "load_object"]

CACHE_FORMAT = 1


@dataclass
class Compiled:
    """Machine code for a network and what the runtime needs to call it."""

    object_code: bytes
    layout: Layout
    key: str
    cached: bool = False  # came from the disk cache
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    llvm_ir: str | None = None  # the optimized module's text (when asked for)


def cache_dir() -> Path:
    env = os.environ.get("GRAPHCONV_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "graphconv" if xdg else Path.home() / ".cache" / "graphconv"


_SOURCE_HASH: str | None = None


def _source_hash() -> str:
    """A hash of the code generator's own source (graphconv/llvm, and the op definitions, IR and memory planner it
    reads): editing a kernel must not serve code compiled by the old one."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        root = Path(__file__).resolve().parent
        pkg = root.parent
        h = hashlib.sha256()
        for path in sorted([*root.rglob("*.py"), *(pkg / "ops").rglob("*.py"), *(pkg / "ir").rglob("*.py"),
                            pkg / "passes" / "plan_memory.py"]):
            h.update(path.name.encode("utf-8"))
            h.update(path.read_bytes())
        _SOURCE_HASH = h.hexdigest()
    return _SOURCE_HASH


def cache_key(graph: Graph, dtype: str, target: Target, llvm_opt: int, symbol: str,
              state: dict[str, str] | None = None) -> str:
    h = hashlib.sha256()
    parts = [f"graphconv {__version__} cache {CACHE_FORMAT}", _source_hash(), f"llvmlite {llvmlite.__version__}",
             target.triple, target.cpu, target.features, dtype, str(llvm_opt), symbol, dumps(graph)]
    if state:  # a training step: which parameters the code updates in place
        parts.append(json.dumps(sorted(state.items())))
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _read_cache(key: str) -> tuple[bytes, Layout] | None:
    d = cache_dir()
    try:
        meta = json.loads((d / f"{key}.json").read_text("utf-8"))
        obj = (d / f"{key}.o").read_bytes()
        if (meta.get("key") != key or meta.get("object_bytes") != len(obj)
                or meta.get("object_sha256") != hashlib.sha256(obj).hexdigest()):
            return None
        return obj, Layout.from_json(meta["layout"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(key: str, obj: bytes, layout: Layout) -> None:
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        for suffix, data in ((".o", obj), (".json", json.dumps({"key": key, "object_bytes": len(obj),
                                                                "object_sha256": hashlib.sha256(obj).hexdigest(),
                                                                "layout": layout.to_json()}).encode("utf-8"))):
            with replacing(d / f"{key}{suffix}") as f:  # another process may write the same entry: last one wins
                f.write(data)
    except OSError:
        pass  # a read-only or full cache directory only costs the next compile its time


def compile_graph(graph: Graph, weights: dict, *, dtype: str = "float32", target: Target | None = None,
                  llvm_opt: int = 3, use_cache: bool = True, aot: bool = False, symbol: str | None = None,
                  keep_ir: bool = False, profile: bool = False, state: dict[str, str] | None = None) -> Compiled:
    """Compile an optimized graph (weights are needed for kernels that re-pack them: their sizes). `aot` makes a
    position-independent object for a C program (never cached). `state` (a training step: parameter -> the output
    holding its next value) updates those parameters in the weights blob (codegen.py)."""
    init_llvm()
    target = target or Target.host()
    symbol = symbol or symbol_name(graph.name)
    key = cache_key(graph, dtype, target, llvm_opt, symbol + (" profile" if profile else ""), state)
    if use_cache and not aot and not keep_ir:
        hit = _read_cache(key)
        if hit is not None:
            return Compiled(hit[0], hit[1], key, cached=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    entry_ir, kernels, layout = build_module(graph, weights, dtype, target, symbol, profile=profile, state=state)
    timings["codegen"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    main = llvm.parse_assembly(entry_ir)
    for name, parsed, node in kernels:
        main.link_in(parsed)  # verified when it was built
    for f in main.functions:
        if f.name.startswith(f"{symbol}_k") and not f.is_declaration:
            f.linkage = "internal"
    try:
        main.verify()
    except RuntimeError as e:
        raise CodegenError(f"the linked network module is invalid: {str(e).strip()[:2000]}") from None
    tm = target.target_machine(opt=llvm_opt, aot=aot)
    with progress.stage(f"{symbol}: LLVM -O{llvm_opt}, machine code for {target.cpu}"):
        if llvm_opt > 0:
            pto = llvm.create_pipeline_tuning_options(speed_level=llvm_opt)
            pb = llvm.create_pass_builder(tm, pto)
            pb.getModulePassManager().run(main, pb)
        timings["optimize"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        obj = tm.emit_object(main)
    timings["emit"] = time.perf_counter() - t0
    compiled = Compiled(obj, layout, key, timings=timings, llvm_ir=str(main) if keep_ir else None)
    if use_cache and not aot:
        _write_cache(key, obj, layout)
    return compiled


class LoadedCode:
    """An object file loaded into this process; keeps the engine alive as long as the code is used."""

    def __init__(self, compiled: Compiled, target: Target):
        init_llvm()
        tm = target.target_machine(opt=0)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(compiled.object_code))
        self.engine.finalize_object()
        self.entry = self.engine.get_function_address(f"{compiled.layout.symbol}_run")
        if not self.entry:
            raise GraphconvError(f"the compiled object has no entry {compiled.layout.symbol}_run")


def load_object(compiled: Compiled, target: Target) -> LoadedCode:
    return LoadedCode(compiled, target)
