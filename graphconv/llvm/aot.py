"""Ahead of time: a network as an object file, a C header and a weights blob for a C application
(`graphconv compile SPEC --target llvm-aot -o OUTDIR`; the C API is described in docs/embedding.md).

OUTDIR gets:
    <name>.o        position-independent machine code for the target CPU (links into a program or shared library)
    <name>.h        the entry point, buffer sizes and shapes
    <name>.weights  every weight, in the order and layout the code reads (raw, little-endian, 64-byte aligned
                    offsets): load it into 64-byte aligned memory
    README.md       how to build and call it
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import GraphconvError
from ..network import Network
from .codegen import Layout, symbol_name
from .compiler import compile_graph
from .runtime import build_blob
from .target import Target

__all__ = ["write_aot", "AotResult"]

C_TYPES = {"float32": "float", "float64": "double"}


@dataclass
class AotResult:
    outdir: Path
    symbol: str
    files: list[Path]
    layout: Layout


def _per_sample(shape: list, symbols: list[str]) -> tuple[int, bool]:
    """(elements per sample, whether the first dimension is the batch)."""
    if shape and isinstance(shape[0], str):
        return int(np.prod([int(d) for d in shape[1:]], dtype=np.int64)), True
    return int(np.prod([int(d) for d in shape], dtype=np.int64)), False


def _header(layout: Layout, net_name: str, target: Target, opt_level: int) -> str:
    s = layout.symbol
    S = s.upper()
    ct = C_TYPES[layout.dtype]
    batch_dim = layout.symbols[0] if layout.symbols else None
    lines = [
        f"/* {s}.h: network '{net_name}' compiled by graphconv {__version__} (-O{opt_level}, {layout.dtype}) for",
        f" * {target.cpu} ({target.vector_bits}-bit vectors), {target.triple}. See docs/embedding.md. */",
        f"#ifndef {S}_H",
        f"#define {S}_H",
        "",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"typedef {ct} {s}_float;",
        "",
        f"#define {S}_NUM_INPUTS {len(layout.inputs)}",
        f"#define {S}_NUM_OUTPUTS {sum(1 for name, _ in layout.outputs if layout.output_slots.get(name) == name)}",
        f"#define {S}_BATCHED {1 if batch_dim else 0}  /* 1: the first dimension of every input and output is the "
        "batch, given at run time; 0: shapes are fixed, pass batch = 1 */",
    ]
    for i, (name, shape) in enumerate(layout.inputs):
        n, batched = _per_sample(shape, layout.symbols)
        lines.append(f"#define {S}_INPUT{i}_ELEMENTS {n}  /* input {i} '{name}' {_shape(shape)}: elements per "
                     f"{'sample' if batched else 'run (no batch dimension)'} */")
    k = 0
    for name, shape in layout.outputs:
        if layout.output_slots.get(name) != name:
            continue
        n, batched = _per_sample(shape, layout.symbols)
        lines.append(f"#define {S}_OUTPUT{k}_ELEMENTS {n}  /* output {k} '{name}' {_shape(shape)}: elements per "
                     f"{'sample' if batched else 'run (no batch dimension)'} */")
        k += 1
    ins = ", ".join(f"{S}_INPUT{i}_ELEMENTS" for i in range(len(layout.inputs))) or "0"
    outs = ", ".join(f"{S}_OUTPUT{j}_ELEMENTS" for j in range(k)) or "0"
    lines += [
        f"static const size_t {s}_input_elements[] = {{{ins}}};",
        f"static const size_t {s}_output_elements[] = {{{outs}}};",
        f"#define {S}_WEIGHTS_BYTES {layout.blob_bytes}ull  /* the size of {s}.weights */",
        *([f"#define {S}_ARENA_BYTES_STATIC {layout.arena_static}ull  /* values without the batch dimension */"]
          if layout.arena_static else []),
        f"#define {S}_ARENA_BYTES_PER_SAMPLE {layout.arena_per_sample}ull",
        f"#define {S}_ARENA_BYTES_PER_THREAD {layout.scratch_per_thread}ull",
        f"#define {S}_ALIGNMENT 64  /* weights and arena must start on a 64-byte boundary */",
        "",
        "/* Bytes of working memory for `batch` samples run by `threads` threads. */",
        f"static inline size_t {s}_arena_bytes(int64_t batch, int64_t threads) {{",
        f"    return {f'(size_t){S}_ARENA_BYTES_STATIC + ' if layout.arena_static else ''}"
        f"(size_t){S}_ARENA_BYTES_PER_SAMPLE * (size_t)batch + "
        f"(size_t){S}_ARENA_BYTES_PER_THREAD * (size_t)threads;",
        "}",
        "",
        f"/* Run the network on `batch` samples (>= 1{'' if batch_dim else '; this network has fixed shapes: 1'}).",
        " *   inputs[i]:  input i, C order, batch * INPUTi_ELEMENTS values (read only; INPUTi_ELEMENTS alone",
        " *               for a tensor without the batch dimension)",
        " *   outputs[k]: output k, C order, batch * OUTPUTk_ELEMENTS values (written; likewise)",
        f" *   arena:      {s}_arena_bytes(batch, nthreads) bytes of scratch memory, 64-byte aligned",
        f" *   weights:    the contents of {s}.weights, 64-byte aligned (read only)",
        " *   tid, nthreads: with one thread, 0 and 1. With T threads, call it from T threads at once with the same",
        " *               arguments and tid = 0..T-1; they share the work of every layer and wait for each other",
        " *               between layers.",
        " *   barrier:    8 int64_t set to zero before the threads start, shared by them.",
        " * Every buffer belongs to the caller; the function allocates nothing and keeps nothing between calls. */",
        f"void {s}_run(const {ct} *const *inputs, {ct} *const *outputs, void *arena, const void *weights,",
        "             int64_t batch, int64_t tid, int64_t nthreads, int64_t *barrier);",
        "",
        "/* One thread, the simple way. */",
        f"static inline void {s}_run1(const {ct} *const *inputs, {ct} *const *outputs, void *arena,",
        "                             const void *weights, int64_t batch) {",
        "    int64_t barrier[8] = {0};",
        f"    {s}_run(inputs, outputs, arena, weights, batch, 0, 1, barrier);",
        "}",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        f"#endif /* {S}_H */",
        "",
    ]
    return "\n".join(lines)


def _shape(shape: list) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _readme(layout: Layout, net_name: str, target: Target) -> str:
    s = layout.symbol
    return f"""# {s}: network `{net_name}` compiled ahead of time by graphconv {__version__}

- `{s}.o`: machine code for {target.cpu} ({target.triple}); it uses the instructions of that CPU, so run it on
  the same kind of machine (or compile with `--target-cpu`/`--target-features` for another).
- `{s}.h`: the entry point `{s}_run`, shapes and buffer sizes.
- `{s}.weights`: the weights ({layout.blob_bytes:,} bytes); load the file into 64-byte aligned memory.

Build and link (the code calls the C math library):

    cc -O2 -I. your_program.c {s}.o -lm -o your_program

Call (one thread):

    void *weights = /* {s}.weights, 64-byte aligned */;
    void *arena = aligned_alloc(64, {s}_arena_bytes(batch, 1));
    const float *inputs[] = {{ input }};
    float *outputs[] = {{ output }};
    {s}_run1(inputs, outputs, arena, weights, batch);

With T threads, call `{s}_run(..., tid, T, barrier)` from T threads at once (see the header and
docs/embedding.md); `examples/c/` in the graphconv repository is a complete program.
"""


def write_aot(net: Network, outdir: str | os.PathLike, *, opt_level: int = 3, dtype: str = "float32",
              target: Target | None = None, name: str | None = None, optimized: bool = False,
              emit_llvm: str | None = None) -> AotResult:
    """Optimize `net` at `opt_level` (unless `optimized`: it already is) and compile it ahead of time into OUTDIR
    (see the module doc). `emit_llvm` names a file for the optimized LLVM IR."""
    from ..passes.manager import optimize
    from ..reference.executor import prepare_weights

    if dtype not in C_TYPES:
        raise GraphconvError(f"the llvm backend compiles float32 or float64, not {dtype!r}")
    target = target or Target.host()
    symbol = symbol_name(name or net.name)
    if name is not None and symbol != name:
        raise GraphconvError(f"--name {name!r} is not a C identifier (lower case letters, digits and _); "
                             f"e.g. {symbol!r}")
    if not optimized:
        # fold in float64, store in the build's precision (as the in-process runtime does)
        net = Network(net.graph, {k: np.asarray(v).astype(dtype, copy=False) for k, v in net.weights.items()})
        net, _ = optimize(net, opt_level, target="llvm")
    optimized_net = net
    compiled = compile_graph(net.graph, net.weights, dtype=dtype, target=target, aot=True, symbol=symbol,
                             keep_ir=emit_llvm is not None)
    if emit_llvm is not None:
        Path(emit_llvm).write_text(compiled.llvm_ir or "", encoding="utf-8")
    layout = compiled.layout
    blob = build_blob(layout, optimized_net.graph,
                      prepare_weights(optimized_net.graph, optimized_net.weights, "float64"))
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise GraphconvError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for fname, data in ((f"{symbol}.o", compiled.object_code),
                        (f"{symbol}.h", _header(layout, net.name, target, opt_level).encode("utf-8")),
                        (f"{symbol}.weights", blob.tobytes()),
                        ("README.md", _readme(layout, net.name, target).encode("utf-8"))):
        path = out / fname
        tmp = out / f".{fname}.tmp"
        tmp.unlink(missing_ok=True)
        with open(tmp, "xb") as fh:  # exclusive: never writes through a planted link
            fh.write(data)
        os.replace(tmp, path)
        files.append(path)
    return AotResult(out, symbol, files, layout)
