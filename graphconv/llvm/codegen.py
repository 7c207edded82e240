"""The whole network as one LLVM module with one entry point.

    void <name>_run(ptr* inputs, ptr* outputs, ptr arena, ptr weights, i64 N, i64 tid, i64 nthreads, ptr barrier)

Every thread of a run calls the entry with its own `tid`; the entry calls each layer's kernel in graph order and
waits at a barrier after each one (a spin barrier in the module itself: no runtime library, no Python between
layers). `N` is the batch size of the run.

Memory, all owned by the caller:
- `inputs`/`outputs`: one pointer per graph input / output (the output pointer of the first name of each output
  value; the runtime copies the others);
- `weights`: every parameter, 64-byte aligned, in the float type of the build, then the re-packed copies kernels
  asked for (`Layout.blob`: how the runtime builds it from the network's weights);
- `arena`: the static region (values without the batch dimension: a training graph's gradients of weights, batch
  statistics, the loss; not scaled by N), then the memory planner's arena for N samples (offsets scaled by N), then
  per-sample temporaries of split nodes, then one workspace per thread (`arena_bytes(N, threads)`);
- `barrier`: 64 zeroed bytes, the barrier's state.

Training steps (`state`: parameter -> the output holding its next value, graphconv/llvm/train.py): the state lives
in the weights blob and the code writes each next value straight over its parameter, so an update output is no
buffer of its own. That is safe when the update node is the parameter's last reader and its kernel reads element i
of the parameter before writing element i (`kernel.in_place_inputs`); `state_plan` checks it and falls back to
computing the value into its output buffer and copying it over the parameter after the last layer. Re-packed copies
of a state parameter (a conv weight in the order its kernel reads it) would go stale: the entry re-packs them from
the parameter first thing in every run, with a gather through an int32 index table stored in the blob
(`kernel.gather_index`).

Design: one ir.Module per distinct kernel, each verified on its own (an error names the layer and op), then linked
into the entry's module. Repeated identical layers share one kernel. A node whose epilogue a kernel cannot apply in
its loop (a window step such as a fused max pool, or an operand that broadcasts) is split here into the op, then
its window step and remaining steps, through a temporary; kernels only ever see elementwise steps on operands of
their output's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from llvmlite import ir
import llvmlite.binding as llvm

from .. import progress
from ..errors import GraphconvError
from ..ir.graph import Graph, Node, Value
from ..ops import REGISTRY, epilogue
from ..ops.layout import blocked_type
from ..passes.base import attr_key
from ..passes.plan_memory import check_plan, plan as plan_memory
from . import kernels as _kernels  # noqa: F401 - importing registers the emitters
from .builder import FLOAT_TYPES, I8P, I64, KB, VOID
from .kernel import (KERNELS, LOWERINGS, CodegenError, KernelContext, Tensor, Unsupported, dims_of, gather_index,
                     in_place_inputs)
from .target import Target

ALIGN = 64
BARRIER_SPINS = 20000  # pause rounds (~10-40 µs) before a waiting thread starts yielding its core

__all__ = ["Layout", "build_module", "symbol_name", "state_plan"]


@dataclass
class BlobEntry:
    """One array of the weights blob: parameter `param`, as stored (packer None) or re-packed."""

    param: str
    offset: int  # bytes
    nbytes: int
    packer: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    node: str = ""  # the node whose attributes the packer reads
    role: str = ""
    kind: str = ""  # "": the array in the build's float type; "index": the packer's int32 gather index

    def to_json(self) -> dict:
        return {"param": self.param, "offset": self.offset, "nbytes": self.nbytes, "packer": self.packer,
                "args": self.args, "node": self.node, "role": self.role, "kind": self.kind}


@dataclass
class Layout:
    """What the runtime (and a C application) needs besides the code: names, buffer sizes, the weights blob."""

    symbol: str
    dtype: str
    inputs: list[tuple[str, list]]  # (name, shape with the symbol as a str)
    outputs: list[tuple[str, list]]
    output_slots: dict[str, str]  # output name -> the output name whose buffer the code writes
    arena_per_sample: int  # bytes per sample: the planned arena, then split-node temporaries
    scratch_per_thread: int
    blob: list[BlobEntry]
    blob_bytes: int
    symbols: list[str]  # the graph's symbolic dimension names (at most one)
    kernels: int = 0
    layers: int = 0
    layer_names: list[str] = field(default_factory=list)  # profiling builds: what each timed step is
    arena_static: int = 0  # bytes at the start of the arena for values without the batch dimension
    state: dict[str, str] = field(default_factory=dict)  # parameter -> update output written over it in place
    state_copied: dict[str, str] = field(default_factory=dict)  # parameter -> update output copied over it
    repacked: list[str] = field(default_factory=list)  # state parameters the entry re-packs every run

    def arena_bytes(self, batch: int, threads: int) -> int:
        return self.arena_static + self.arena_per_sample * batch + self.scratch_per_thread * threads

    def to_json(self) -> dict:
        return {"symbol": self.symbol, "dtype": self.dtype, "inputs": self.inputs, "outputs": self.outputs,
                "output_slots": self.output_slots, "arena_per_sample": self.arena_per_sample,
                "scratch_per_thread": self.scratch_per_thread, "blob": [e.to_json() for e in self.blob],
                "blob_bytes": self.blob_bytes, "symbols": self.symbols, "kernels": self.kernels,
                "layers": self.layers, "layer_names": self.layer_names, "arena_static": self.arena_static,
                "state": self.state, "state_copied": self.state_copied, "repacked": self.repacked}

    @classmethod
    def from_json(cls, d: dict) -> "Layout":
        d = dict(d)
        d["blob"] = [BlobEntry(**e) for e in d["blob"]]
        d["inputs"] = [tuple(x) for x in d["inputs"]]
        d["outputs"] = [tuple(x) for x in d["outputs"]]
        return cls(**d)


def symbol_name(graph_name: str) -> str:
    """A C identifier from the network's name."""
    out = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in graph_name) or "net"
    return ("gc_" + out if out[0].isdigit() else out).lower()


def _aligned(n: int) -> int:
    return -(-int(n) // ALIGN) * ALIGN


def _where(node: Node) -> str:
    at = f" defined at {node.loc}" if node.loc is not None else ""
    return f"layer '{node.name}' ({node.op}){at}"


# -- splitting nodes whose epilogue a kernel cannot apply -----------------------------------------------------------

def _split(node: Node, tag: str = "") -> list[Node]:
    """The node as one or more nodes a kernel can run: a window step and everything after it, and steps whose
    operand broadcasts, move to their own nodes reading a temporary value. Temporaries are named
    `<node>.~<tag><k>`; `tag` keeps the names of nested splits apart."""
    seq = epilogue.steps(node.attrs)
    if not seq:
        return [node]
    op = REGISTRY[node.op]
    types = epilogue.step_types(op, node.attrs, [v.type for v in node.inputs])
    b = epilogue.block_size(node.attrs)
    n_own = epilogue.own_input_count(node.attrs, len(node.inputs))
    out_types = [blocked_type(t, b) for t in types] if b else types

    def fits(k: int) -> bool:  # step k can stay in a kernel's loop
        name, _, operand = seq[k]
        if REGISTRY[name].window_step:
            return False
        return operand is None or node.inputs[operand].type == (out_types[k])

    keep = 0
    while keep < len(seq) and fits(keep):
        keep += 1
    if keep == len(seq):
        return [node]
    # the head: the op and the steps that fit, into a temporary
    head_steps = seq[:keep]
    used = [s[2] for s in head_steps if s[2] is not None]
    head_inputs = node.inputs[:n_own] + [node.inputs[k] for k in used]
    remap = {k: n_own + j for j, k in enumerate(used)}
    head_attrs = {**node.attrs, "epilogue": tuple((n, a, remap.get(o) if o is not None else None)
                                                  for n, a, o in head_steps)}
    if not head_steps:
        head_attrs.pop("epilogue")
    tmp = Value(f"{node.name}.~{tag}{keep}", out_types[keep], "node")
    head = Node(node.name, node.op, head_inputs, head_attrs, tmp, dict(node.params), node.loc)
    tmp.producer = head
    # the next step as its own node, carrying the rest as its epilogue when it is out_fusable
    name, sattrs, operand = seq[keep]
    sop = REGISTRY[name]
    rest = seq[keep + 1:]
    step_inputs = [tmp] + ([node.inputs[operand]] if operand is not None else [])
    attrs = _step_attrs(sattrs, sop, b)
    if rest and sop.fusion == "out_fusable":
        used = [s[2] for s in rest if s[2] is not None]
        remap = {k: len(step_inputs) + j for j, k in enumerate(used)}
        step_inputs += [node.inputs[k] for k in used]
        attrs["epilogue"] = tuple((n, a, remap.get(o) if o is not None else None) for n, a, o in rest)
        rest = ()
    final = node.output if not rest else Value(f"{node.name}.~{tag}{keep + 1}", out_types[keep + 1], "node")
    step = Node(f"{node.name}", name, step_inputs, attrs, final, {}, node.loc)
    final.producer = step
    out = [head, *_split(step, f"{tag}{keep}.")]
    # the remaining steps (after a step that takes no epilogue) become nodes one by one; step keep+1+k writes the
    # type after it, out_types[keep+2+k]
    current = final
    for k, (name, sattrs, operand) in enumerate(rest):
        last = k == len(rest) - 1
        v = node.output if last else Value(f"{node.name}.~{tag}r{k}", out_types[keep + 2 + k], "node")
        ins = [current] + ([node.inputs[operand]] if operand is not None else [])
        n = Node(node.name, name, ins, _step_attrs(sattrs, REGISTRY[name], b), v, {}, node.loc)
        v.producer = n
        out.append(n)
        current = v
    return out


def _step_attrs(sattrs, sop, block: int | None) -> dict:
    """An epilogue step's attributes as a node of its own: a window step runs in the node's layout (elementwise
    steps do not care about it)."""
    attrs = dict(sattrs)
    if block and sop.window_step:
        attrs["layout"] = block
    return attrs


# -- training state -------------------------------------------------------------------------------------------------

def state_plan(graph: Graph, state: dict[str, str]) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """How each state parameter gets its next value (`state`: parameter -> the graph output holding it): in place
    (parameter -> output), or copied over the parameter after the last layer (parameter -> (output, why not in
    place)). In place needs: the value is computed by a node without an epilogue, which reads the parameter once, as
    a data input its kernel may overwrite (`in_place_inputs`), with the parameter's shape; no later node reads the
    parameter (every other reader has run: they saw the old value); no other output names the value."""
    index = {n.output.name: i for i, n in enumerate(graph.nodes)}
    names_of: dict[str, list[str]] = {}
    for out, v in graph.outputs.items():
        names_of.setdefault(v.name, []).append(out)
    in_place: dict[str, str] = {}
    copied: dict[str, tuple[str, str]] = {}
    for param, out in state.items():
        if param not in graph.params:
            raise CodegenError(f"state '{param}' is not a parameter of {graph.name}")
        if out not in graph.outputs:
            raise CodegenError(f"the next value of '{param}' should be output '{out}', which {graph.name} lacks")
        p = graph.values[param]
        v = graph.outputs[out]
        if v.kind != "node":
            if v.kind == "param" and v.name in state:
                raise CodegenError(f"the next value of '{param}' is state parameter '{v.name}' itself: an update "
                                   "that only moves state around is not supported")
            copied[param] = (out, f"its next value is {v.kind} '{v.name}'")
            continue
        node = v.producer
        reads = [k for k, x in enumerate(node.inputs) if x.name == param]
        by_role = [r for r, x in node.params.items() if x.name == param]
        later = next((n for n in graph.nodes[index[v.name] + 1:] if any(x.name == param for x in n.all_inputs)),
                     None)
        why = None
        if len(reads) != 1 or by_role:
            why = f"layer '{node.name}' ({node.op}) does not read it exactly once as a data input"
        elif reads[0] not in in_place_inputs(node):
            why = f"the kernel of layer '{node.name}' ({node.op}) cannot write its output over input {reads[0]}"
        elif tuple(v.type.shape) != tuple(p.type.shape):
            why = f"layer '{node.name}' gives {v.type} for {p.type}"
        elif later is not None:
            why = f"layer '{later.name}' reads it after its update '{node.name}'"
        elif len(names_of[v.name]) > 1:
            why = f"the value is also output {', '.join(repr(o) for o in names_of[v.name] if o != out)}"
        if why is None:
            in_place[param] = out
        else:
            copied[param] = (out, why)
    return in_place, copied


# -- the module ---------------------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], dtype: str, target: Target, symbol: str,
                 profile: bool = False, state: dict[str, str] | None = None):
        self.profile = profile
        self.state = dict(state or {})
        self.graph = graph
        self.weights = weights
        self.dtype = dtype
        self.ft = FLOAT_TYPES[dtype]
        self.ft_bytes = np.dtype(dtype).itemsize
        self.target = target
        self.symbol = symbol
        self.vw = max(1, target.vector_bits // (8 * self.ft_bytes))
        self.kernels: dict[Any, tuple[str, list, ir.Module]] = {}  # key -> (function name, packs, module)
        self.kernel_modules: list[tuple[str, llvm.ModuleRef, Node]] = []
        self.scratch_per_thread = 0

    # values -> where they live
    def _plan(self) -> None:
        g = self.graph
        symbols = sorted({d for v in g.values.values() for d in v.type.shape if isinstance(d, str)})
        if len(symbols) > 1:
            raise CodegenError(f"the llvm backend takes one symbolic (batch) dimension; {g.name} has "
                               f"{', '.join(symbols)}")
        for v in g.values.values():
            if any(isinstance(d, str) for d in v.type.shape[1:]):
                raise CodegenError(f"the llvm backend needs the symbolic dimension first: {v.name} is {v.type}")
        self.symbols = symbols
        dtypes = {v.type.dtype for v in g.values.values()}
        if len(dtypes) != 1:
            raise CodegenError(f"mixed dtypes in {g.name}: {', '.join(sorted(dtypes))}")
        graph_bytes = np.dtype(dtypes.pop()).itemsize
        # inputs of channel concats are written straight into the concat's output, sample by sample (needs the
        # batch dimension first everywhere: a static graph's kernels see all samples at once and keep the copy)
        # values without the batch dimension get a region the batch does not scale (none in a static graph)
        mp = plan_memory(g, concat_in_place=bool(symbols), static_apart=bool(symbols))
        self.slices = dict(mp.concat_slices)
        problems = check_plan(g, mp)
        if problems:
            raise CodegenError("the memory plan is unsafe: " + "; ".join(problems[:5]))
        # byte offsets in this build's float type: per sample, or within the static region
        self.offsets = {name: off * self.ft_bytes // graph_bytes for name, off in mp.offsets.items()}
        self.static = set(mp.static)
        self.arena_static = _aligned(mp.static_bytes * self.ft_bytes // graph_bytes)
        self.arena_planned = _aligned(mp.arena_bytes * self.ft_bytes // graph_bytes)
        # training state: next values written over their parameters, or copied there at the end
        in_place, copied = state_plan(g, self.state)
        self.state_in_place, self.state_copied = in_place, {p: out for p, (out, _) in copied.items()}
        self.state_value = {g.outputs[out].name: param for param, out in in_place.items()}  # value -> parameter
        self.input_index = {v.name: i for i, v in enumerate(g.inputs)}
        self.output_slots: dict[str, str] = {}
        self.output_index: dict[str, int] = {}
        first_name: dict[str, str] = {}
        for name, v in g.outputs.items():  # one output buffer per distinct node value, in output order
            if v.name in self.state_value:
                continue  # lives in its parameter's slot
            if v.kind == "node" and v.name not in self.output_index:
                self.output_index[v.name] = len(self.output_index)
                first_name[v.name] = name
            if v.kind == "node":
                self.output_slots[name] = first_name[v.name]
        # the weights blob: every parameter as stored
        self.blob: list[BlobEntry] = []
        self.blob_bytes = 0
        self.param_offset: dict[str, int] = {}
        for name, p in g.params.items():
            nbytes = p.value.type.numel() * self.ft_bytes
            self.param_offset[name] = self.blob_bytes
            self.blob.append(BlobEntry(name, self.blob_bytes, nbytes))
            self.blob_bytes = _aligned(self.blob_bytes + nbytes)

    def build(self) -> tuple[ir.Module, list[tuple[str, llvm.ModuleRef, Node]], Layout]:
        self._plan()
        g = self.graph
        # split nodes; the temporaries of a split node live only while it runs, so every node's temporaries share
        # one region after the planned arena (per sample)
        steps: list[Node] = []
        temp_off: dict[str, int] = {}
        region = 0
        for node in g.nodes:
            lower = LOWERINGS.get(node.op)
            pieces = lower(node) if lower is not None and not epilogue.steps(node.attrs) else _split(node)
            if node.op == "concat" and any(v.name in self.slices for v in node.inputs):
                placed = tuple(v.name in self.slices for v in node.inputs)
                pieces = [Node(node.name, node.op, list(node.inputs), {**node.attrs, "placed": placed}, node.output,
                               dict(node.params), node.loc)]
            at = 0
            for p in pieces[:-1]:
                if p.output.name in temp_off or p.output.name in g.values:
                    raise CodegenError(f"{_where(node)}: temporary {p.output.name} named twice")
                temp_off[p.output.name] = self.arena_planned + at
                at += _aligned(p.output.type.numel(1) * self.ft_bytes)
            region = max(region, at)
            steps.extend(pieces)
        arena_per_sample = self.arena_planned + region
        for param, out in self.state_copied.items():  # after the last layer: every reader has seen the old value
            src, p = g.outputs[out], g.values[param]
            steps.append(Node(f"{param}@copy", "identity", [src], {}, Value(param, p.type, "param"), {}, None))
        # emits and verifies each distinct kernel (the longest part of codegen: a bar for big networks)
        kernels = [self._kernel(node) for node in progress.iterate(steps, f"{self.symbol}: generating kernels",
                                                                   unit="layer")]
        per_thread = _aligned(self.scratch_per_thread)
        repacks = self._state_repacks(steps, kernels)

        mod = ir.Module(name=self.symbol)
        mod.triple = self.target.triple
        barrier = self._barrier(mod)
        fty = ir.FunctionType(VOID, [I8P.as_pointer(), I8P.as_pointer(), I8P, I8P, I64, I64, I64, I64.as_pointer()])
        entry = ir.Function(mod, fty, name=f"{self.symbol}_run")
        ins, outs, arena, wts, N, tid, nthr, bar = entry.args
        for a, nm in zip(entry.args, ("inputs", "outputs", "arena", "weights", "N", "tid", "nthreads", "barrier")):
            a.name = nm
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        kb = KB(b, self.ft, self.vw)

        def value_ptr(v: Value) -> ir.Value:
            if v.kind == "param":
                return b.gep(wts, [kb.i64(self.param_offset[v.name])], inbounds=True)
            if v.kind == "input":
                return b.load(b.gep(ins, [kb.i64(self.input_index[v.name])], inbounds=True))
            if v.name in self.state_value:  # a training step's next value of a parameter, written over it
                return b.gep(wts, [kb.i64(self.param_offset[self.state_value[v.name]])], inbounds=True)
            if v.name in self.output_index:
                return b.load(b.gep(outs, [kb.i64(self.output_index[v.name])], inbounds=True))
            if v.name in self.slices:  # lives in its concat's output (see slice_ptr)
                return value_ptr(g.values[self.slices[v.name][0]])
            off = temp_off.get(v.name, self.offsets.get(v.name))
            if off is None:
                raise CodegenError(f"value {v.name} has no place in the memory plan")
            if v.name in self.static and v.name not in temp_off:
                return b.gep(arena, [kb.i64(off)], inbounds=True)  # the static region: not scaled
            # offsets are per sample, after the static region
            return b.gep(arena, [kb.i64(kb.add(self.arena_static, b.mul(kb.i64(off), N)))], inbounds=True)

        workspace = b.gep(arena, [kb.i64(kb.add(self.arena_static, b.add(b.mul(kb.i64(arena_per_sample), N),
                                                                          b.mul(tid, kb.i64(per_thread)))))],
                          inbounds=True)
        kty = ir.FunctionType(VOID, [I8P.as_pointer(), I8P, I64, I64, I64])
        stamp = self._profiler(mod, b, tid, len(steps))
        stamp(len(steps))
        if repacks:  # fresh re-packed copies of the state parameters, before any kernel reads one
            for packed, index, count in repacks:
                self._emit_repack(kb, wts, packed, index, count, tid, nthr)
            b.call(barrier, [bar, nthr])
        def sample_ptr(v: Value, n) -> ir.Value:
            """Sample n of a batch-first value (parameters and values without a batch have no samples)."""
            p = value_ptr(v)
            if v.kind == "param" or not isinstance(v.type.shape[0], str):
                return p
            return b.gep(p, [b.mul(n, kb.i64(v.type.numel(1) * self.ft_bytes))], inbounds=True)

        def slice_ptr(v: Value, n) -> ir.Value:
            """Sample n of a value written into its concat's output: at its channels, with the output's stride."""
            concat, off = self.slices[v.name]
            c = g.values[concat]
            at = b.add(b.mul(n, kb.i64(c.type.numel(1) * self.ft_bytes)), kb.i64(off * self.ft_bytes))
            return b.gep(value_ptr(c), [at], inbounds=True)

        def call(k: int, node: Node, name: str, packs, data_ptrs: list[ir.Value], batch) -> None:
            ptrs = data_ptrs + [value_ptr(v) for v in node.params.values()]
            for role, packer, args in packs:
                ptrs.append(b.gep(wts, [kb.i64(self._packed(node, role, packer, args))], inbounds=True))
            table = kb.alloca(ir.ArrayType(I8P, len(ptrs)), f"t{k}")
            for j, p in enumerate(ptrs):
                b.store(b.bitcast(p, I8P), b.gep(table, [kb.i64(0), ir.Constant(ir.IntType(32), j)]))
            callee = mod.globals.get(name) or ir.Function(mod, kty, name=name)
            b.call(callee, [b.bitcast(table, I8P.as_pointer()), workspace, batch, tid, nthr])

        for k, (node, (name, packs)) in enumerate(zip(steps, kernels)):
            if node.output.name in self.slices:
                # one call per sample; threads go on to the next sample without waiting (samples are disjoint)
                with kb.loop(0, N, name=f"sample{k}") as n:
                    call(k, node, name, packs,
                         [sample_ptr(v, n) for v in node.inputs] + [slice_ptr(node.output, n)], kb.i64(1))
            else:
                call(k, node, name, packs, [value_ptr(v) for v in node.inputs] + [value_ptr(node.output)], N)
            b.call(barrier, [bar, nthr])
            stamp(k)
        b.ret_void()
        layout = Layout(
            symbol=self.symbol, dtype=self.dtype,
            inputs=[(v.name, list(v.type.shape)) for v in g.inputs],
            outputs=[(name, list(v.type.shape)) for name, v in g.outputs.items()
                     if name not in self.state_in_place.values()],
            output_slots=self.output_slots,
            arena_per_sample=arena_per_sample, scratch_per_thread=per_thread,
            blob=self.blob, blob_bytes=self.blob_bytes, symbols=self.symbols,
            kernels=len(self.kernels), layers=len(steps),
            layer_names=[f"{n.name} ({n.op})" for n in steps] if self.profile else [],
            arena_static=self.arena_static, state=dict(self.state_in_place), state_copied=dict(self.state_copied),
            repacked=sorted({e.param for e in self.blob if e.kind == "index"}))
        return mod, self.kernel_modules, layout

    def _state_repacks(self, steps: list[Node], kernels) -> list[tuple[int, int, int]]:
        """(packed copy offset, gather index offset, elements) for every re-packed copy of a state parameter.

        Re-packing in the generated code every run, rather than keeping state parameters unpacked, because it was
        measured to pay (one thread, float32, 3x3 conv2d 64->64 on 32x32, batch 8, its weight updated by SGD every
        step): 6.7 ms a step with the packed kernel and this gather (the gather alone 0.016 ms: it reads the weight
        once, the convolution once per output tile), 55 ms with the only kernel that reads the weight as stored
        (the depthwise-style path vectorized along output rows)."""
        state = set(self.state)
        out: dict[int, tuple[int, int, int]] = {}
        for node, (_, packs) in zip(steps, kernels):
            for role, packer, args in packs:
                pname = node.params[role].name
                if pname not in state:
                    continue
                packed = self._packed(node, role, packer, args)
                if packed in out:
                    continue
                shape = tuple(int(d) for d in self.graph.params[pname].value.type.shape)
                index = gather_index(packer, shape, args)
                off = self.blob_bytes
                self.blob.append(BlobEntry(pname, off, int(index.nbytes), packer, dict(args), node.name, role,
                                           kind="index"))
                self.blob_bytes = _aligned(off + index.nbytes)
                out[packed] = (packed, off, int(index.size))
        return list(out.values())

    def _emit_repack(self, kb: KB, wts: ir.Value, packed: int, index: int, count: int, tid, nthr) -> None:
        """packed[j] = w[idx[j]] (0 where idx[j] < 0) for this thread's share of j; w is the parameter's slot."""
        b = kb.b
        entry = next(e for e in self.blob if e.offset == index)
        fp = self.ft.as_pointer()
        w = b.bitcast(b.gep(wts, [kb.i64(self.param_offset[entry.param])], inbounds=True), fp)
        dst = b.bitcast(b.gep(wts, [kb.i64(packed)], inbounds=True), fp)
        idx = b.bitcast(b.gep(wts, [kb.i64(index)], inbounds=True), ir.IntType(32).as_pointer())
        lo = b.sdiv(b.mul(kb.i64(count), tid), nthr)
        hi = b.sdiv(b.mul(kb.i64(count), b.add(tid, kb.i64(1))), nthr)
        with kb.loop(lo, hi, name="repack") as j:
            k = b.sext(kb.load(idx, j), I64)
            pad = b.icmp_signed("<", k, kb.i64(0))
            v = kb.load(w, b.select(pad, kb.i64(0), k))
            kb.store(b.select(pad, kb.fconst(0.0), v), dst, j)

    def _profiler(self, mod: ir.Module, b: ir.IRBuilder, tid: ir.Value, layers: int):
        """stamp(k): with profiling, thread 0 writes the cycle counter into slot k of `<symbol>_profile`."""
        if not self.profile:
            return lambda k: None
        arr = ir.GlobalVariable(mod, ir.ArrayType(I64, layers + 1), name=f"{self.symbol}_profile")
        arr.initializer = ir.Constant(ir.ArrayType(I64, layers + 1), None)
        counter = ir.Function(mod, ir.FunctionType(I64, []), name="llvm.readcyclecounter")

        def stamp(k: int) -> None:
            with b.if_then(b.icmp_signed("==", tid, ir.Constant(I64, 0))):
                b.store(b.call(counter, []), b.gep(arr, [ir.Constant(I64, 0), ir.Constant(I64, k)]))
        return stamp

    def _packed(self, node: Node, role: str, packer: str, args: dict) -> int:
        from .kernel import PACKERS

        pname = node.params[role].name
        for e in self.blob:
            if (e.param == pname and e.packer == packer and e.args == args and e.node == node.name
                    and e.kind == ""):
                return e.offset
        data = PACKERS[packer](np.asarray(self.weights[pname]), **args)
        nbytes = int(data.size) * self.ft_bytes
        off = self.blob_bytes
        self.blob.append(BlobEntry(pname, off, nbytes, packer, dict(args), node.name, role))
        self.blob_bytes = _aligned(off + nbytes)
        return off

    def _key(self, node: Node) -> Any:
        return (node.op, attr_key(node.attrs), tuple(v.type for v in node.inputs), node.output.type,
                tuple((r, v.type) for r, v in node.params.items()))

    def _kernel(self, node: Node):
        key = self._key(node)
        if key in self.kernels:
            return self.kernels[key]
        emit = KERNELS.get(node.op)
        if emit is None:
            raise CodegenError(f"{_where(node)}: the llvm backend has no kernel for op '{node.op}'")
        name = f"{self.symbol}_k{len(self.kernels)}_{node.op}"
        kmod = ir.Module(name=name)
        kmod.triple = self.target.triple
        fty = ir.FunctionType(VOID, [I8P.as_pointer(), I8P, I64, I64, I64])
        fn = ir.Function(kmod, fty, name=name)
        fn.attributes.add("noinline")  # one call per layer: inlining them all into the entry only slows LLVM down
        table, scratch, N, tid, nthr = fn.args
        for a, nm in zip(fn.args, ("tensors", "scratch", "N", "tid", "nthreads")):
            a.name = nm
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        kb = KB(b, self.ft, self.vw)
        fp = self.ft.as_pointer()

        def tensor(slot: int, v: Value) -> Tensor:
            p = b.bitcast(b.load(b.gep(table, [kb.i64(slot)], inbounds=True)), fp)
            p.name = _ident(v.name)
            return Tensor(p, v.type, dims_of(v.type, N))

        n_own = epilogue.own_input_count(node.attrs, len(node.inputs))
        ins = [tensor(i, v) for i, v in enumerate(node.inputs)]
        slot = len(node.inputs)
        out = tensor(slot, node.output)
        slot += 1
        params = {}
        for role, v in node.params.items():
            params[role] = tensor(slot, v)
            slot += 1
        kc = KernelContext(kb=kb, node=node, inputs=ins[:n_own], operands={i: ins[i] for i in range(n_own, len(ins))},
                           out=out, params=params, N=N, tid=tid, nthreads=nthr, table=table, scratch=scratch,
                           next_slot=slot)
        try:
            emit(kc)
            if not b.block.is_terminated:
                b.ret_void()
        except Unsupported as e:
            raise CodegenError(f"{_where(node)}: the llvm backend cannot compile it: {e}") from None
        except CodegenError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug in an emitter: name the layer
            raise CodegenError(f"{_where(node)}: code generation failed: {type(e).__name__}: {e}") from e
        parsed = _verify(kmod, node)
        self.scratch_per_thread = max(self.scratch_per_thread, kc.thread_scratch_bytes)
        self.kernels[key] = (name, list(kc.packs))
        self.kernel_modules.append((name, parsed, node))
        return self.kernels[key]

    def _barrier(self, mod: ir.Module) -> ir.Function:
        """barrier(state, nthreads): every thread waits until all have arrived. state[0] counts arrivals,
        state[1] is the generation; the last to arrive resets the count and bumps the generation."""
        fn = ir.Function(mod, ir.FunctionType(VOID, [I64.as_pointer(), I64]), name=f"{self.symbol}_barrier")
        fn.linkage = "internal"
        state, nthr = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        one = ir.Constant(I64, 1)
        with b.if_then(b.icmp_signed("<=", nthr, one), likely=False):
            b.ret_void()
        count = state
        gen = b.gep(state, [ir.Constant(I64, 1)])
        g0 = b.load_atomic(gen, "acquire", 8)
        arrived = b.atomic_rmw("add", count, one, "acq_rel")
        last = b.icmp_signed("==", b.add(arrived, one), nthr)
        with b.if_else(last) as (then, otherwise):
            with then:
                b.store_atomic(ir.Constant(I64, 0), count, "monotonic", 8)
                b.atomic_rmw("add", gen, one, "release")
            with otherwise:
                # spin (with the CPU's pause hint) while the others are about to arrive; after SPINS rounds give
                # the core away on every round, so a thread waiting for a time slice is not starved by us
                spins = b.alloca(I64)
                b.store(ir.Constant(I64, 0), spins)
                spin = b.append_basic_block("spin")
                out = b.append_basic_block("out")
                b.branch(spin)
                b.position_at_end(spin)
                if self.target.is_x86:
                    pause = ir.Function(mod, ir.FunctionType(VOID, []), name="llvm.x86.sse2.pause")
                    b.call(pause, [])
                k = b.add(b.load(spins), one)
                b.store(k, spins)
                with b.if_then(b.icmp_signed(">", k, ir.Constant(I64, BARRIER_SPINS)), likely=False):
                    yield_fn = mod.globals.get("sched_yield") or ir.Function(
                        mod, ir.FunctionType(ir.IntType(32), []), name="sched_yield")
                    b.call(yield_fn, [])
                g1 = b.load_atomic(gen, "acquire", 8)
                b.cbranch(b.icmp_signed("==", g1, g0), spin, out)
                b.position_at_end(out)
        b.ret_void()
        return fn


def _ident(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in name)[:60]


def _verify(kmod: ir.Module, node: Node) -> llvm.ModuleRef:
    """Parse and verify one kernel's module (returned parsed); an invalid one becomes a CodegenError naming the
    layer."""
    try:
        m = llvm.parse_assembly(str(kmod))
        m.verify()
        return m
    except RuntimeError as e:
        raise CodegenError(f"{_where(node)}: the generated LLVM IR is invalid: {str(e).strip()[:2000]}") from None


def build_module(graph: Graph, weights: dict[str, np.ndarray], dtype: str, target: Target, symbol: str, *,
                 profile: bool = False, state: dict[str, str] | None = None
                 ) -> tuple[str, list[tuple[str, llvm.ModuleRef, Node]], Layout]:
    """The entry module's IR text, the verified (parsed) kernel modules and the layout. With `profile`, thread 0
    stores the CPU's cycle counter after each layer in the global `<symbol>_profile` (one i64 per layer, then one
    at the start). `state` (a training step: parameter -> the output holding its next value) makes the code write
    the next values over the parameters in the weights blob (see the module doc)."""
    if dtype not in FLOAT_TYPES:
        raise GraphconvError(f"the llvm backend runs in {' or '.join(FLOAT_TYPES)}, not {dtype!r}")
    mod, kernels, layout = _Builder(graph, weights, dtype, target, symbol, profile, state).build()
    return str(mod), kernels, layout
