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
  memory planner runs those in place).
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

__all__ = ["KernelContext", "Tensor", "kernel", "KERNELS", "Unsupported", "PACKERS", "packer", "CodegenError"]


class CodegenError(GraphconvError):
    """The LLVM backend cannot compile a node (or produced invalid IR for it)."""


class Unsupported(Exception):
    """Raised by an emitter for a node variant it does not implement (the code generator reports it)."""


KERNELS: dict[str, Callable[["KernelContext"], None]] = {}
PACKERS: dict[str, Callable[..., np.ndarray]] = {}


def kernel(*ops: str):
    """Register an emitter for one or more ops."""
    def deco(fn):
        for op in ops:
            if op in KERNELS:
                raise ValueError(f"two kernels for op {op!r}")
            KERNELS[op] = fn
        return fn
    return deco


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
