"""Memory planning: place every intermediate activation in one arena, reusing memory once a value is dead.

An analysis pass: it leaves the graph's function alone and records its plan in `graph.meta["memory_plan"]`.

Algorithm (for the nodes in their topological order, which is the execution order the plan is valid for):

1. Buffers. Every node output that is not a graph output is a buffer (graph outputs are handed to the caller and get
   their own memory; graph inputs are the caller's; parameters are weights). Its size is its element count at batch 1
   (per sample) times its dtype's item size, rounded up to `ALIGNMENT` (64) bytes.
2. Lifetimes. A buffer lives from the index of its producer to the index of its last reader (any input slot,
   parameters included); a buffer nobody reads lives only during its producer. Lifetimes are closed intervals: a
   node's inputs and its output are live together.
3. In-place. A node of an `elementwise` or `broadcast` op (relu, add, batchnorm, ...) without an epilogue may write
   its output into one of its data inputs when that input is a buffer whose last reader is this node, which this
   node reads only once, and which has the output's shape and dtype. The first such input (by position) is taken;
   the two values then form one buffer whose lifetime is the union of theirs. Chains (conv -> batchnorm -> relu)
   collapse into one buffer.
4. Offsets. Buffers are placed in order of decreasing size (ties: earlier definition first), each at the lowest
   offset where it does not overlap any already placed buffer whose lifetime overlaps its own (a greedy first-fit
   by offset over the gaps between those buffers). Since every size is a multiple of 64, so is every offset. The
   arena is the largest end offset.

`plan(graph)` computes a `MemoryPlan`; `check_plan(graph, plan)` re-derives lifetimes from the graph and lists
every violation (two live buffers sharing bytes other than an in-place pair, misaligned or out-of-arena offsets,
missing or unknown buffers, in-place pairs that are not safe), so tests and backends need not trust the planner.

Static values apart (`plan(graph, static_apart=True)`, used by the llvm backend). In a graph with the symbolic
batch dimension, a buffer whose type has no symbolic dimension (a training graph's weight gradients, batch
statistics, the [1] loss) has the same size at every batch size: planned in the per-sample arena it would be
scaled by the batch like everything else, N times its size. With `static_apart` such buffers are placed, by the
same greedy algorithm, in a second arena of `static_bytes` that the batch does not scale (`MemoryPlan.static` names
them; their offsets are within it). A graph with no static buffer gets exactly the plan it gets without the option.

Training graphs. The plan of a whole training graph (forward, losses, backward and updates as nodes of one graph) is
valid as is: lifetimes come from the graph, so an activation the backward pass reads stays live until that reader.

What it does not do:
- It does not plan the state of a training step (the parameters an update node replaces): parameters are not
  buffers; a backend that writes the next values into the parameters' own memory checks that itself.
- It is per sample (`batch` 1 by default; `plan(graph, batch=B)` plans a fixed batch). It allocates nothing and
  the reference executor does not use it.
- No scratch memory for ops (im2col workspaces and the like), no aliasing of views (flatten and reshape get a
  copy), no reordering of nodes to lower the peak, and no parallel execution: the plan assumes the nodes run one at
  a time in the graph's order. Zero-copy concatenation is opt-in (`plan(graph, concat_in_place=True)`, used by
  the llvm backend, whose kernels can write an input of a channel concat straight into the concat's output): those
  inputs get no buffer and the concat's output lives from the first of their producers.
- The greedy placement is not optimal in general (offset assignment is NP-hard); it is deterministic, and on every
  network of the model zoo its arena equals the lower bound, the largest total of buffers live at one node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..ir.graph import Graph, Node, Value
from .base import Pass, PassResult, Program

__all__ = ["ALIGNMENT", "MemoryPlan", "PlanMemory", "plan", "check_plan", "format_bytes", "buffer_lifetimes",
           "static_buffers"]

ALIGNMENT = 64
INPLACE_FUSION = ("elementwise", "broadcast")


@dataclass
class MemoryPlan:
    """Where each intermediate activation lives in one arena (bytes, for `batch` samples).

    `offsets`: value name -> byte offset, for every buffer; `sizes`: value name -> aligned byte size;
    `lifetimes`: value name -> (first, last) node index, closed; `inplace`: (output, input) pairs that share memory
    because the output's producer writes into its input; `static` (with `static_apart`): the buffers placed in the
    static region of `static_bytes`, whose offsets are within that region."""

    arena_bytes: int
    total_bytes: int
    batch: int
    offsets: dict[str, int] = field(default_factory=dict)
    inplace: list[tuple[str, str]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    lifetimes: dict[str, tuple[int, int]] = field(default_factory=dict)
    concat_slices: dict[str, tuple[str, int]] = field(default_factory=dict)  # value -> (its concat, offset)
    static: set[str] = field(default_factory=set)  # buffers in the static region (offsets within it)
    static_bytes: int = 0  # the static region's size (not scaled by the batch)

    def to_meta(self) -> dict[str, Any]:
        """The JSON-friendly form stored in `graph.meta["memory_plan"]`."""
        return {
            "arena_bytes": int(self.arena_bytes),
            "total_bytes": int(self.total_bytes),
            "batch": int(self.batch),
            "offsets": {name: int(off) for name, off in self.offsets.items()},
            "inplace": [[out, inp] for out, inp in self.inplace],
            **({"concat_slices": {k: [c, int(o)] for k, (c, o) in self.concat_slices.items()}}
               if self.concat_slices else {}),
            **({"static": sorted(self.static), "static_bytes": int(self.static_bytes)} if self.static else {}),
        }

    def notes(self) -> list[str]:
        """The pass log's notes."""
        per = "batch 1" if self.batch == 1 else f"batch {self.batch}"
        if not self.offsets:
            return [f"no intermediate buffers ({per})"]
        pct = 100.0 * self.arena_bytes / self.total_bytes
        out = [f"arena {format_bytes(self.arena_bytes)} for {format_bytes(self.total_bytes)} of activations "
               f"({pct:.0f}%, {per})"]
        if self.inplace:
            out.append(f"{len(self.inplace)} in-place")
        if self.static:
            out.append(f"{len(self.static)} static buffers in {format_bytes(self.static_bytes)} (not scaled by the "
                       f"batch)")
        return out


def format_bytes(n: int) -> str:
    """A byte count for people: `512 B`, `3.0 KiB`, `9.8 MiB`, `1.2 GiB`."""
    if n < 1024:
        return f"{n} B"
    x = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        x /= 1024.0
        if x < 1024.0 or unit == "GiB":
            break
    return f"{x:.1f} {unit}"


def _aligned(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _size(v: Value, batch: int) -> int:
    return _aligned(v.type.numel(batch) * np.dtype(v.type.dtype).itemsize)


def buffer_lifetimes(graph: Graph, slices: Mapping[str, tuple[str, int]] | None = None
                     ) -> dict[str, tuple[int, int]]:
    """Every buffer (node output that is not a graph output) -> (producer index, last reader index), in node
    order. Values in `slices` (see `concat_slices`) are no buffers of their own: they live in their concat's
    output, whose lifetime then starts at the first of their producers."""
    slices = slices or {}
    outs = {v.name for v in graph.outputs.values()}
    life: dict[str, tuple[int, int]] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.all_inputs:
            if v.name in life:
                life[v.name] = (life[v.name][0], i)
        if node.output.name not in outs and node.output.name not in slices:
            life[node.output.name] = (i, i)
    index = {n.output.name: i for i, n in enumerate(graph.nodes)}
    for name, (concat, _) in slices.items():
        if concat in life:
            life[concat] = (min(life[concat][0], index[name]), life[concat][1])
    return life


def concat_slices(graph: Graph) -> dict[str, tuple[str, int]]:
    """The inputs of channel concats that their producers can write straight into the concat's output:
    value -> (concat output, element offset of its channels within one sample). An input qualifies when the concat
    is its only reader (and reads it once), it is no graph output, its producer is no concat, and every shape
    involved has the batch dimension first (then one sample of the input is one contiguous run of the output's
    sample: a backend writes the input sample by sample with the output's sample stride)."""
    outs = {v.name for v in graph.outputs.values()}
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for v in node.all_inputs:
            readers[v.name] = readers.get(v.name, 0) + 1
    found: dict[str, tuple[str, int]] = {}
    for node in graph.nodes:
        t = node.output.type
        if node.op != "concat" or t.rank < 2 or node.attrs.get("axis", 1) % t.rank != 1:
            continue
        if not isinstance(t.shape[0], str) or any(isinstance(d, str) for d in t.shape[1:]):
            continue
        rest = int(np.prod([int(d) for d in t.shape[2:]], dtype=np.int64))
        off = 0
        for v in node.inputs:
            if (v.kind == "node" and v.name not in outs and readers.get(v.name) == 1 and v.producer is not None
                    and v.producer.op != "concat" and v.type.shape[0] == t.shape[0] and v.name not in found):
                found[v.name] = (node.output.name, off)
            off += int(v.type.shape[1]) * rest
    return found


def _inplace_input(node: Node, i: int, life: Mapping[str, tuple[int, int]]) -> Value | None:
    """The data input `node` (at index `i`) may overwrite with its output, if any."""
    from ..ops import REGISTRY

    op = REGISTRY.get(node.op)
    out = node.output
    if op is None or op.fusion not in INPLACE_FUSION or node.attrs.get("epilogue") or out.name not in life:
        return None
    reads = [v.name for v in node.all_inputs]
    for v in node.inputs:
        if (v.kind == "node" and v.name in life and life[v.name][1] == i and reads.count(v.name) == 1
                and v.type.shape == out.type.shape and v.type.dtype == out.type.dtype):
            return v
    return None


def _batched(graph: Graph) -> bool:
    return any(isinstance(d, str) for v in graph.values.values() for d in v.type.shape)


def static_buffers(graph: Graph, life: Mapping[str, tuple[int, int]]) -> set[str]:
    """The buffers `static_apart` places in the static region: those without a symbolic dimension, in a graph that
    has one (in a fully static graph nothing is scaled, so nothing moves)."""
    if not _batched(graph):
        return set()
    return {name for name in life if graph.values[name].type.is_static}


def _place(groups: list[tuple[int, int, int, str]]) -> tuple[dict[str, int], int]:
    """Greedy placement of (size, first, last, root) groups: largest first, each at the lowest offset clear of every
    placed, simultaneously live group. Returns (root -> offset, arena size)."""
    groups = sorted(groups, key=lambda g: (-g[0], g[1], g[2]))
    placed: list[tuple[int, int, int, int]] = []  # (first, last, offset, size)
    offset_of: dict[str, int] = {}
    arena = 0
    for size, first, last, root in groups:
        busy = sorted((off, sz) for f, l, off, sz in placed if f <= last and first <= l)
        at = 0
        for off, sz in busy:
            if at + size <= off:
                break
            at = max(at, off + sz)
        placed.append((first, last, at, size))
        offset_of[root] = at
        arena = max(arena, at + size)
    return offset_of, arena


def plan(graph: Graph, *, batch: int = 1, concat_in_place: bool = False, static_apart: bool = False) -> MemoryPlan:
    """The memory plan of `graph` for `batch` samples (see the module doc). With `concat_in_place`, the inputs
    `concat_slices` finds get no buffer: a backend that writes them into their concat's output asks for it. With
    `static_apart`, buffers without the batch dimension get a region of their own (`MemoryPlan.static`)."""
    slices = concat_slices(graph) if concat_in_place else {}
    life = buffer_lifetimes(graph, slices)
    sizes = {name: _size(graph.values[name], batch) for name in life}
    static = static_buffers(graph, life) if static_apart else set()

    # in-place pairs, and the groups of values sharing one buffer (keyed by the group's first value)
    group_of: dict[str, str] = {name: name for name in life}
    inplace: list[tuple[str, str]] = []
    for i, node in enumerate(graph.nodes):
        v = _inplace_input(node, i, life)
        if v is not None:
            inplace.append((node.output.name, v.name))
            group_of[node.output.name] = group_of[v.name]
    members: dict[str, list[str]] = {}
    for name in life:  # in node order, so a group's first member is its root
        members.setdefault(group_of[name], []).append(name)
    groups = []  # (size, first, last, root), per region (an in-place pair has one type, so one region)
    static_groups = []
    for root, names in members.items():
        g = (max(sizes[n] for n in names), min(life[n][0] for n in names), max(life[n][1] for n in names), root)
        (static_groups if root in static else groups).append(g)

    offset_of, arena = _place(groups)
    static_offset_of, static_bytes = _place(static_groups)
    offset_of.update(static_offset_of)

    return MemoryPlan(
        arena_bytes=arena,
        total_bytes=sum(sizes.values()),
        batch=batch,
        offsets={name: offset_of[group_of[name]] for name in life},
        inplace=inplace,
        sizes=sizes,
        lifetimes=life,
        concat_slices=slices,
        static=static,
        static_bytes=static_bytes,
    )


def check_plan(graph: Graph, memory_plan: MemoryPlan | Mapping[str, Any]) -> list[str]:
    """Every problem with a plan for `graph` (a `MemoryPlan` or its `graph.meta` form); empty when it is safe to
    execute the nodes in order with each buffer at its offset. Lifetimes and sizes are re-derived from the graph."""
    if isinstance(memory_plan, MemoryPlan):
        arena, batch = memory_plan.arena_bytes, memory_plan.batch
        offsets, pairs = dict(memory_plan.offsets), [tuple(p) for p in memory_plan.inplace]
        slices = dict(memory_plan.concat_slices)
        static, static_bytes = set(memory_plan.static), memory_plan.static_bytes
    else:
        arena, batch = int(memory_plan["arena_bytes"]), int(memory_plan.get("batch", 1))
        offsets, pairs = dict(memory_plan["offsets"]), [tuple(p) for p in memory_plan["inplace"]]
        slices = {k: (c, int(o)) for k, (c, o) in memory_plan.get("concat_slices", {}).items()}
        static, static_bytes = set(memory_plan.get("static", ())), int(memory_plan.get("static_bytes", 0))
    problems: list[str] = []
    allowed_slices = concat_slices(graph)
    for name, where in slices.items():
        if allowed_slices.get(name) != tuple(where):
            problems.append(f"'{name}' may not be written into concat output {where[0]} at {where[1]}")
    life = buffer_lifetimes(graph, {k: v for k, v in slices.items() if k in allowed_slices})
    sizes = {name: graph.values[name].type.numel(batch) * np.dtype(graph.values[name].type.dtype).itemsize
             for name in life}
    for name in life:
        if name not in offsets:
            problems.append(f"buffer '{name}' has no offset")
    allowed_static = static_buffers(graph, life)
    for name in sorted(static):
        if name not in allowed_static:
            problems.append(f"buffer '{name}' is in the static region but is not a static buffer of a batched graph")
    for name, off in offsets.items():
        end = static_bytes if name in static else arena
        where = "static region" if name in static else "arena"
        if name not in life:
            problems.append(f"'{name}' has an offset but is not an intermediate value of the graph")
        elif off < 0 or off % ALIGNMENT:
            problems.append(f"buffer '{name}' is at offset {off}, not a non-negative multiple of {ALIGNMENT}")
        elif off + sizes[name] > end:
            problems.append(f"buffer '{name}' ({sizes[name]} bytes at {off}) ends past the {where} ({end} bytes)")
    index = {n.output.name: i for i, n in enumerate(graph.nodes)}
    allowed: set[frozenset[str]] = set()
    for pair in pairs:
        if len(pair) != 2 or pair[0] not in life or pair[1] not in life or pair[0] not in index:
            problems.append(f"in-place pair {list(pair)} does not name two intermediate values")
            continue
        out, inp = pair
        i = index[out]
        if _inplace_input(graph.nodes[i], i, life) is not graph.values[inp]:
            problems.append(f"in-place pair ['{out}', '{inp}']: node '{out}' may not write into '{inp}'")
        elif offsets.get(out) != offsets.get(inp) or (out in static) != (inp in static):
            problems.append(f"in-place pair ['{out}', '{inp}'] is at offsets {offsets.get(out)} and "
                            f"{offsets.get(inp)}")
        allowed.add(frozenset(pair))
    names = sorted((n for n in life if n in offsets), key=lambda n: life[n][0])  # by start (a concat's starts early)
    for k, a in enumerate(names):
        fa, la = life[a]
        oa, ea = offsets[a], offsets[a] + sizes[a]
        for b in names[k + 1:]:
            fb, lb = life[b]
            if fb > la:
                break  # `names` is in start order: no later buffer is live together with `a`
            if (offsets[b] < ea and oa < offsets[b] + sizes[b] and frozenset((a, b)) not in allowed
                    and (a in static) == (b in static)):
                problems.append(f"buffers '{a}' (nodes {fa}..{la}, bytes {oa}..{ea}) and '{b}' (nodes {fb}..{lb}, "
                                f"bytes {offsets[b]}..{offsets[b] + sizes[b]}) are live together and overlap")
    return problems


class PlanMemory(Pass):
    name = "plan_memory"
    summary = "assign every intermediate activation an offset in one reusable arena (analysis; graph.meta)"
    inference_only = False

    def run(self, program: Program) -> PassResult:
        p = plan(program.graph)
        program.graph.meta["memory_plan"] = p.to_meta()
        return PassResult(changed=False, notes=p.notes())
