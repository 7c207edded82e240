"""What a kernel emitter sees: `KernelContext`, and the registry of emitters by op.

A kernel is one LLVM function per distinct layer (same op, attributes and types: ResNet's repeated blocks share one):

    void kernel(ptr* tensors, ptr scratch, i64 N, i64 tid, i64 nthreads)

`tensors` holds the node's data inputs (its own, then its epilogue operands), its output, its parameters (in the
node's role order) and any parameters the emitter re-packed (`KernelContext.packed`). `N` is the batch size of this
run (the graph's symbolic dimension; 1 for a static graph), `tid`/`nthreads` which share of the work this thread
does: every thread runs every kernel, on the part `split` gives it, and the network entry waits at a barrier between
layers. `scratch` is this thread's private workspace (`KernelContext.thread_scratch`).

An emitter is `emit(kc: KernelContext) -> None` registered with `@kernel("op", ...)`. It writes code with `kc.kb`
(graphconv/llvm/builder.py) and must:
- apply the node's epilogue steps (`kc.epilogue(value, index)`) to every output element it writes, if its op is
  `out_fusable` (the code generator has already split window steps and broadcasting operands into their own
  kernels, so only elementwise steps and same-shape operands remain);
- handle the blocked layout when `kc.block` is set (rank-5 inputs and output, parameters packed by the op's
  `pack_param`), or declare it cannot by raising `Unsupported`;
- tolerate its output aliasing its first data input when the op's fusion kind is elementwise or broadcast (the
  memory planner runs those in place), and the data inputs listed in `IN_PLACE` for its op (a training step writes
  the next value of a parameter over the parameter itself: graphconv/llvm/train.py).

Two more registries let a family of ops shape how it runs without touching the code generator:
- `@lowering("op")`: `fn(node) -> [nodes]` replaces a node by several run in order (e.g. a loss as per-sample
  rows, then their sum: a reduction over the batch that stays deterministic and still splits between threads);
  intermediate values named `<node>.~<something>` get per-sample temporaries, like split epilogues. The ops of
  the new nodes need not be graph ops: they only need an emitter here (`~` names, by convention).
- `IN_PLACE[op] = (input positions)`: the data inputs whose memory the op's emitter may write its output into
  (it reads element i of them before it writes element i of the output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from llvmlite import ir

from ..errors import GraphconvError
from ..ir.graph import Node, TensorType
from ..ops import REGISTRY, epilogue
from .builder import KB, Index

__all__ = ["KernelContext", "Tensor", "kernel", "KERNELS", "Unsupported", "PACKERS", "packer", "CodegenError",
           "LOWERINGS", "lowering", "IN_PLACE", "in_place_inputs", "gather_index"]


class CodegenError(GraphconvError):
    """The LLVM backend cannot compile a node (or produced invalid IR for it)."""


class Unsupported(Exception):
    """Raised by an emitter for a node variant it does not implement (the code generator reports it)."""


KERNELS: dict[str, Callable[["KernelContext"], None]] = {}
PACKERS: dict[str, Callable[..., np.ndarray]] = {}
LOWERINGS: dict[str, Callable[[Node], list[Node]]] = {}
IN_PLACE: dict[str, tuple[int, ...]] = {}


def kernel(*ops: str):
    """Register an emitter for one or more ops."""
    def deco(fn):
        for op in ops:
            if op in KERNELS:
                raise ValueError(f"two kernels for op {op!r}")
            KERNELS[op] = fn
        return fn
    return deco


def lowering(*ops: str):
    """Register `fn(node) -> [nodes]`, run instead of the node (see the module doc)."""
    def deco(fn):
        for op in ops:
            if op in LOWERINGS:
                raise ValueError(f"two lowerings for op {op!r}")
            LOWERINGS[op] = fn
        return fn
    return deco


def in_place_inputs(node: Node) -> tuple[int, ...]:
    """The data inputs of `node` its kernel may write its output over: `IN_PLACE` for its op, else the first input
    of an elementwise or broadcast op (the memory planner's in-place rule). None for a node with an epilogue."""
    if epilogue.steps(node.attrs):
        return ()
    if node.op in IN_PLACE:
        return IN_PLACE[node.op]
    op = REGISTRY.get(node.op)
    return (0,) if op is not None and op.fusion in ("elementwise", "broadcast") else ()


def gather_index(packer_name: str, shape: tuple[int, ...], args: dict[str, Any]) -> np.ndarray:
    """The packer as a gather: int32 `idx` with packed.flat[j] = w.flat[idx[j]], or 0 where idx[j] is -1 (the
    padding). Generated code uses it to re-pack a parameter that changes at run time (a training step's state).
    Raises CodegenError when the packer is not such a gather."""
    fn = PACKERS[packer_name]
    n = int(np.prod(shape, dtype=np.int64))
    if n >= 2 ** 31 - 1:
        raise CodegenError(f"packer {packer_name}: {n} elements are too many for an int32 gather index")
    packed = np.asarray(fn((np.arange(n, dtype=np.float64) + 1.0).reshape(shape), **args), np.float64).reshape(-1)
    idx = np.rint(packed).astype(np.int64) - 1
    probe = np.random.default_rng(0).standard_normal(shape)
    want = np.asarray(fn(probe, **args), np.float64).reshape(-1)
    got = np.where(idx >= 0, probe.reshape(-1)[np.clip(idx, 0, max(n - 1, 0))], 0.0)
    if (np.any(packed != idx + 1) or np.any(idx < -1) or np.any(idx >= n) or want.shape != got.shape
            or not np.array_equal(want, got)):
        raise CodegenError(f"packer {packer_name} is not a gather of the parameter's elements: a parameter that "
                           "changes at run time cannot be re-packed by the generated code")
    return idx.astype(np.int32)


def packer(name: str):
    """Register a weight re-packing function `fn(array, **args) -> array` (run once when the model is built)."""
    def deco(fn):
        PACKERS[name] = fn
        return fn
    return deco


@dataclass
class Tensor:
    """A tensor the kernel reads or writes: a pointer to its first element and its IR type."""

    ptr: ir.Value
    type: TensorType
    dims: tuple[Index, ...] = ()  # the shape with the symbolic dimension as the runtime N

    @property
    def rank(self) -> int:
        return len(self.dims)

    def numel(self, kb: KB) -> Index:
        return kb.mul(*self.dims)

    def strides(self, kb: KB) -> list[Index]:
        """Element strides (C order)."""
        out: list[Index] = [1] * len(self.dims)
        for k in range(len(self.dims) - 2, -1, -1):
            out[k] = kb.mul(out[k + 1], self.dims[k + 1])
        return out


@dataclass
class KernelContext:
    kb: KB
    node: Node
    inputs: list[Tensor]  # the op's own data inputs
    operands: dict[int, Tensor]  # epilogue operands by their index in node.inputs
    out: Tensor
    params: dict[str, Tensor]
    N: ir.Value
    tid: ir.Value
    nthreads: ir.Value
    table: ir.Value  # the tensor-pointer table (packed parameters are appended to it)
    scratch: ir.Value  # this thread's workspace (i8*)
    next_slot: int
    packs: list[tuple[str, str, dict]] = field(default_factory=list)  # (role, packer, args) in slot order
    thread_scratch_bytes: int = 0

    # -- what the node is ------------------------------------------------------------------------------------
    @property
    def op(self):
        return REGISTRY[self.node.op]

    @property
    def attrs(self) -> dict[str, Any]:
        """The op's own attributes (no epilogue, no layout)."""
        return epilogue.own_attrs(self.node.attrs)

    @property
    def steps(self):
        return epilogue.steps(self.node.attrs)

    @property
    def block(self) -> int | None:
        return epilogue.block_size(self.node.attrs)

    @property
    def ft(self) -> ir.Type:
        return self.kb.ft

    # -- work sharing ------------------------------------------------------------------------------------------
    def split(self, total: Index) -> tuple[Index, Index]:
        """This thread's share [lo, hi) of `total` work items (contiguous, sizes differing by at most one)."""
        kb = self.kb
        t = kb.i64(total)
        lo = kb.b.sdiv(kb.b.mul(t, self.tid), self.nthreads)
        hi = kb.b.sdiv(kb.b.mul(t, kb.b.add(self.tid, kb.i64(1))), self.nthreads)
        return lo, hi

    # -- memory ------------------------------------------------------------------------------------------------
    def thread_scratch(self, nbytes: int, ty: ir.Type | None = None) -> ir.Value:
        """A private workspace of `nbytes` for this thread, valid during this kernel (64-byte aligned); returns a
        pointer to `ty` (the element type by default)."""
        off = self.thread_scratch_bytes
        self.thread_scratch_bytes = off + -(-int(nbytes) // 64) * 64
        p = self.kb.b.gep(self.scratch, [self.kb.i64(off)], inbounds=True)
        return self.kb.b.bitcast(p, (ty or self.ft).as_pointer())

    def packed(self, role: str, packer_name: str, **args: Any) -> ir.Value:
        """A pointer to parameter `role` re-packed by `PACKERS[packer_name](array, **args)` when the model is built
        (e.g. a weight in the order a kernel reads it)."""
        if packer_name not in PACKERS:
            raise KeyError(packer_name)
        slot = self.next_slot
        self.next_slot += 1
        self.packs.append((role, packer_name, dict(args)))
        b = self.kb.b
        p = b.load(b.gep(self.table, [self.kb.i64(slot)], inbounds=True))
        return b.bitcast(p, self.ft.as_pointer())

    # -- epilogue ----------------------------------------------------------------------------------------------
    def epilogue(self, value: ir.Value, index: Index) -> ir.Value:
        """Apply the node's epilogue steps to `value` (a scalar or a vector of consecutive output elements), the
        output element(s) at flat `index`; returns the value to store."""
        from .kernels.elementwise import binary, unary

        for name, sattrs, operand in self.steps:
            if operand is None:
                value = unary(self.kb, name, dict(sattrs), value)
            else:
                t = self.operands[operand]
                lanes = value.type.count if isinstance(value.type, ir.VectorType) else None
                other = self.kb.vload(t.ptr, index, lanes) if lanes else self.kb.load(t.ptr, index)
                value = binary(self.kb, name, value, other)
        return value


def dims_of(t: TensorType, N: ir.Value) -> tuple[Index, ...]:
    return tuple(d if isinstance(d, int) else N for d in t.shape)
