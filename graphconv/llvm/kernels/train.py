"""Training kernels: batchnorm with batch statistics and its gradients, reduce_sum, the losses and their gradients,
the optimizer updates, the gradients of activations (graphconv/ops/grad/norm.py, grad/reduce.py, loss.py, optim.py,
grad/activation.py: activation_grad, softmax_grad; grad/elementwise.py: neg).

Reductions over the batch are deterministic, and the same for every thread count: each output element is reduced
by one thread, in a fixed order. Threads split what is independent:
- per-channel work (bn_stats, bn_train, bn_grad_input, bn_grad_weight, bn_frozen_grad) sees x as [N, C, P]
  (P = H·W, 1 for [N, C]): with P > 1 threads take channels and each channel's rows of P are summed in vectors
  (each row's sum added to a float64 total: the per-channel sums of a big batch stay accurate in float32); with
  P = 1 threads take groups of vw channels, one vector of channels per sample (`_Channels`);
- reduce_sum splits the output elements: vectors of adjacent outputs when the last axis is kept, else one output
  per unit with its contiguous run reduced in vectors;
- a loss is lowered (`kernel.lowering`) to per-sample rows, which threads split, then their sum on thread 0 in
  sample order (a [1] result cannot be split without making it depend on the thread count);
- activation_grad and neg are flat loops; softmax_grad is per row along its axis (or vw columns at a time);
- optimizer updates are elementwise flat loops (split like every flat loop); they read element i of the parameter
  before writing element i of their output, so the code generator lets them write over the parameter itself
  (`kernel.IN_PLACE`: the training step's state stays in place).
Scalars that do not depend on the element (1/sqrt(var + eps) per channel, Adam's bias corrections from `step`) are
computed once per channel or once per kernel; the bias corrections in float64 (β^t through libm's pow).
"""

from __future__ import annotations

from typing import Callable

from llvmlite import ir

from ...ir.graph import Node, TensorType, Value
from ...ops.activation import SELU_ALPHA, SELU_SCALE
from ..builder import KB, Index
from ..kernel import IN_PLACE, KernelContext, Tensor, Unsupported, kernel, lowering
from .elementwise import flat_loop, inner_loop
from .norm import _vec_units

F64 = ir.DoubleType()

# the data inputs each update kernel may write its output over (the state parameter it updates)
IN_PLACE.update({"bn_running": (0,), "sgd_step": (0,), "sgd_buffer": (0,), "sgd_momentum_step": (0,),
                 "adam_moment": (0,), "adam_step": (0,)})


# -- folds --------------------------------------------------------------------------------------------------------

def _fold(kb: KB, n: Index, terms: Callable[[Index, int | None], list[ir.Value]], inits: list[float],
          combine: Callable[[ir.Value, ir.Value], ir.Value], lanes_of: Callable[[ir.Value], ir.Value],
          base: Index = 0) -> list[ir.Value]:
    """Fold `terms(index, lanes)` (one value per accumulator) over [base, base + n): whole vectors into vector
    accumulators, combined across lanes (`lanes_of`), then the tail (static n: in narrower vectors and scalars;
    a runtime n: scalars). Returns one scalar per accumulator."""
    vw = kb.vw
    if not isinstance(n, int):
        nvec = kb.div(n, vw)
        accs = kb.carried_loop(0, nvec, [kb.fconst(x, vw) for x in inits],
                               lambda v, accs: [combine(a, t) for a, t in
                                                zip(accs, terms(kb.add(base, kb.mul(v, vw)), vw))], name="fv")
        out = [lanes_of(a) for a in accs]
        return kb.carried_loop(kb.mul(nvec, vw), n, out,
                               lambda i, accs: [combine(a, t) for a, t in zip(accs, terms(kb.add(base, i), None))],
                               name="ft")
    nvec = n // vw

    def body(v, accs):
        ts = terms(kb.add(base, kb.mul(v, vw)), vw)
        return [combine(a, t) for a, t in zip(accs, ts)]

    if nvec:
        accs = kb.carried_loop(0, nvec, [kb.fconst(x, vw) for x in inits], body, name="fv")
        out = [lanes_of(a) for a in accs]
    else:
        out = [kb.fconst(x) for x in inits]
    for off, lanes in kb.tail_chunks(nvec * vw, n):
        ts = terms(kb.add(base, off), lanes)
        out = [combine(o, lanes_of(t) if lanes else t) for o, t in zip(out, ts)]
    return out


def _sums(kb: KB, n: int, terms, count: int, base: Index = 0) -> list[ir.Value]:
    return _fold(kb, n, terms, [0.0] * count, kb.fadd, kb.hsum, base)


def _wide(kb: KB, v: ir.Value) -> ir.Value:
    """A scalar of the element type as float64 (accumulators of long sums)."""
    return v if v.type == F64 else kb.b.fpext(v, F64)


def _narrow(kb: KB, v: ir.Value) -> ir.Value:
    return v if kb.ft == F64 else kb.b.fptrunc(v, kb.ft)


def _scalar(kb: KB, t: Tensor, index: Index = 0) -> ir.Value:
    return kb.load(t.ptr, index)


# -- per-channel work ---------------------------------------------------------------------------------------------

class _Unit:
    """The channel(s) one thread handles at a time: one channel `c` (lanes None), or `lanes` adjacent channels from
    `c` side by side in a vector (P = 1). Per-channel values are scalars or vectors of `lanes` accordingly."""

    def __init__(self, ch: "_Channels", c: Index, lanes: int | None):
        self.ch, self.c, self.lanes = ch, c, lanes
        self.kb = ch.kb

    def const(self, ptr: ir.Value, row: int = 0) -> ir.Value:
        """Row `row` of a [rows, C] array at this unit's channel(s)."""
        return self.kb.load_n(ptr, self.kb.add(self.c, row * self.ch.C), self.lanes)

    def scalar(self, x: float | ir.Value) -> ir.Value:
        """A number or a scalar as a per-channel value."""
        kb = self.kb
        if not isinstance(x, ir.Value):
            return kb.fconst(x, self.lanes)
        return kb.splat(x, self.lanes) if self.lanes else x

    def at(self, v: ir.Value, lanes: int | None) -> ir.Value:
        """A per-channel value for an element access of `lanes` (P > 1: one channel's value splat along a row)."""
        if self.ch.P == 1:
            return v
        return self.kb.splat(v, lanes) if lanes else v

    def each(self, body: Callable[[Index, int | None], None]) -> None:
        """body(flat index, lanes) over every element of the channel(s)."""
        kb, ch = self.kb, self.ch
        if ch.P == 1:
            with kb.loop(0, ch.N, name="n") as n:
                body(kb.add(kb.mul(n, ch.C), self.c), self.lanes)
            return
        with kb.loop(0, ch.N, name="n") as n:
            base = kb.mul(kb.add(kb.mul(n, ch.C), self.c), ch.P)
            inner_loop(kb, ch.P, lambda i, lanes: body(kb.add(base, i), lanes))

    def sums(self, terms: Callable[[Index, int | None], list[ir.Value]], count: int) -> list[ir.Value]:
        """Per-channel sums of `terms(flat index, lanes)` over the samples (and pixels)."""
        kb, ch = self.kb, self.ch
        if ch.P == 1:
            zero = kb.fconst(0.0, self.lanes)

            def body(n, accs):
                ts = terms(kb.add(kb.mul(n, ch.C), self.c), self.lanes)
                return [kb.fadd(a, t) for a, t in zip(accs, ts)]

            return kb.carried_loop(0, ch.N, [zero] * count, body, name="n")

        def row(n, totals):
            base = kb.mul(kb.add(kb.mul(n, ch.C), self.c), ch.P)
            parts = _sums(kb, ch.P, terms, count, base)
            return [kb.b.fadd(t, _wide(kb, p)) for t, p in zip(totals, parts)]

        totals = kb.carried_loop(0, ch.N, [ir.Constant(F64, 0.0)] * count, row, name="n")
        return [_narrow(kb, t) for t in totals]


class _Channels:
    """A tensor [N, C] or [N, C, H, W] as [N, C, P]; `run(unit)` calls unit(_Unit) for every channel (group) of this
    thread's share."""

    def __init__(self, kc: KernelContext, t: Tensor):
        if kc.block:
            raise Unsupported(f"{kc.node.op} in the blocked layout")
        if t.rank not in (2, 4):
            raise Unsupported(f"{kc.node.op} of a rank-{t.rank} tensor")
        self.kc, self.kb = kc, kc.kb
        self.N, self.C = t.dims[0], int(t.dims[1])
        p = 1
        for d in t.dims[2:]:
            p *= int(d)
        self.P = p

    def count(self) -> ir.Value:
        """Elements per channel, as a float."""
        return self.kb.to_float(self.kb.mul(self.N, self.P))

    def run(self, unit: Callable[[_Unit], None]) -> None:
        kb, kc, C = self.kb, self.kc, self.C
        if self.P > 1:
            lo, hi = kc.split(C)
            with kb.loop(lo, hi, name="c") as c:
                unit(_Unit(self, c, None))
            return
        vw = kb.vw
        groups, full = -(-C // vw), C // vw
        lo, hi = kc.split(groups)
        with kb.loop(lo, hi, name="cg") as gi:
            c0 = kb.mul(gi, vw)
            if full == groups:
                unit(_Unit(self, c0, vw))
            elif full == 0:
                with kb.loop(0, C, name="c") as c:
                    unit(_Unit(self, c, None))
            else:
                with kb.if_else(kb.icmp("<", gi, full)) as (then, otherwise):
                    with then:
                        unit(_Unit(self, c0, vw))
                    with otherwise:
                        with kb.loop(c0, C, name="c") as c:
                            unit(_Unit(self, c, None))


def _inv_std(kb: KB, u: _Unit, var: ir.Value, eps: float) -> ir.Value:
    return kb.fdiv(u.scalar(1.0), kb.sqrt(kb.fadd(var, u.scalar(eps))))


@kernel("bn_stats")
def emit_bn_stats(kc: KernelContext) -> None:
    """[3, C]: mean, biased variance, unbiased variance; two passes (the variance from x - mean)."""
    kb, x, out = kc.kb, kc.inputs[0], kc.out
    ch = _Channels(kc, x)
    m = ch.count()
    corr = kb.fdiv(m, kb.max(kb.fsub(m, kb.fconst(1.0)), kb.fconst(1.0)))

    def unit(u: _Unit) -> None:
        (s,) = u.sums(lambda i, lanes: [kb.load_n(x.ptr, i, lanes)], 1)
        mean = kb.fdiv(s, u.scalar(m))

        def sq(i, lanes):
            d = kb.fsub(kb.load_n(x.ptr, i, lanes), u.at(mean, lanes))
            return [kb.fmul(d, d)]

        (ss,) = u.sums(sq, 1)
        var = kb.fdiv(ss, u.scalar(m))
        kb.store_n(mean, out.ptr, u.c, u.lanes)
        kb.store_n(var, out.ptr, kb.add(u.c, ch.C), u.lanes)
        kb.store_n(kb.fmul(var, u.scalar(corr)), out.ptr, kb.add(u.c, 2 * ch.C), u.lanes)

    ch.run(unit)


@kernel("bn_train")
def emit_bn_train(kc: KernelContext) -> None:
    """(x - mean)·(w/sqrt(var + eps)) + b per channel, the statistics from the stats input."""
    kb, (x, stats), y = kc.kb, kc.inputs, kc.out
    ch = _Channels(kc, x)
    affine = kc.attrs["affine"]
    eps = kc.attrs["eps"]

    def unit(u: _Unit) -> None:
        mean = u.const(stats.ptr, 0)
        s = _inv_std(kb, u, u.const(stats.ptr, 1), eps)
        t = u.scalar(0.0)
        if affine:
            s = kb.fmul(s, u.const(kc.params["weight"].ptr))
            t = u.const(kc.params["bias"].ptr)

        def body(i, lanes):
            d = kb.fsub(kb.load_n(x.ptr, i, lanes), u.at(mean, lanes))
            kb.store_n(kb.fma(d, u.at(s, lanes), u.at(t, lanes)), y.ptr, i, lanes)

        u.each(body)

    ch.run(unit)


@kernel("bn_grad_input")
def emit_bn_grad_input(kc: KernelContext) -> None:
    """w/σ·(dy - mean(dy) - x̂·mean(dy·x̂)): per channel, one pass for the two means, one to write."""
    kb = kc.kb
    dy, x, stats = kc.inputs[:3]
    weight = kc.inputs[3] if len(kc.inputs) > 3 else None
    out = kc.out
    ch = _Channels(kc, x)
    m = ch.count()
    eps = kc.attrs["eps"]

    def unit(u: _Unit) -> None:
        mean = u.const(stats.ptr, 0)
        inv = _inv_std(kb, u, u.const(stats.ptr, 1), eps)

        def terms(i, lanes):
            g = kb.load_n(dy.ptr, i, lanes)
            return [g, kb.fmul(g, kb.fsub(kb.load_n(x.ptr, i, lanes), u.at(mean, lanes)))]

        s1, s2 = u.sums(terms, 2)
        m1 = kb.fdiv(s1, u.scalar(m))
        m2 = kb.fdiv(kb.fmul(s2, inv), u.scalar(m))  # mean(dy·x̂)
        scale = kb.fmul(inv, u.const(weight.ptr)) if weight is not None else inv

        def body(i, lanes):
            xhat = kb.fmul(kb.fsub(kb.load_n(x.ptr, i, lanes), u.at(mean, lanes)), u.at(inv, lanes))
            g = kb.fsub(kb.fsub(kb.load_n(dy.ptr, i, lanes), u.at(m1, lanes)), kb.fmul(xhat, u.at(m2, lanes)))
            kb.store_n(kb.fmul(g, u.at(scale, lanes)), out.ptr, i, lanes)

        u.each(body)

    ch.run(unit)


@kernel("bn_grad_weight")
def emit_bn_grad_weight(kc: KernelContext) -> None:
    """Σ dy·x̂ per channel = Σ dy·(x - mean) / σ."""
    kb, (dy, x, stats), out = kc.kb, kc.inputs, kc.out
    ch = _Channels(kc, x)
    eps = kc.attrs["eps"]

    def unit(u: _Unit) -> None:
        mean = u.const(stats.ptr, 0)
        inv = _inv_std(kb, u, u.const(stats.ptr, 1), eps)
        (s,) = u.sums(lambda i, lanes: [kb.fmul(kb.load_n(dy.ptr, i, lanes),
                                                kb.fsub(kb.load_n(x.ptr, i, lanes), u.at(mean, lanes)))], 1)
        kb.store_n(kb.fmul(s, inv), out.ptr, u.c, u.lanes)

    ch.run(unit)


@kernel("bn_frozen_grad")
def emit_bn_frozen_grad(kc: KernelContext) -> None:
    """dy·w/sqrt(running_var + eps) per channel."""
    kb, dy, out = kc.kb, kc.inputs[0], kc.out
    var, weight = kc.inputs[1], (kc.inputs[2] if len(kc.inputs) > 2 else None)
    ch = _Channels(kc, dy)
    eps = kc.attrs["eps"]

    def unit(u: _Unit) -> None:
        s = _inv_std(kb, u, u.const(var.ptr), eps)
        if weight is not None:
            s = kb.fmul(s, u.const(weight.ptr))
        u.each(lambda i, lanes: kb.store_n(kb.fmul(kb.load_n(dy.ptr, i, lanes), u.at(s, lanes)), out.ptr, i, lanes))

    ch.run(unit)


@kernel("bn_running")
def emit_bn_running(kc: KernelContext) -> None:
    """(1 - momentum)·running + momentum·(batch mean, or unbiased variance); may write over `running`."""
    kb, (r, stats), out = kc.kb, kc.inputs, kc.out
    C = int(r.dims[0])
    row = 0 if kc.attrs["stat"] == "mean" else 2
    mom = kc.attrs["momentum"]

    def body(i, lanes):
        old = kb.fmul(kb.load_n(r.ptr, i, lanes), kb.fconst(1.0 - mom, lanes))
        kb.store_n(kb.fma(kb.load_n(stats.ptr, kb.add(i, row * C), lanes), kb.fconst(mom, lanes), old),
                   out.ptr, i, lanes)

    flat_loop(kc, C, body)


# -- reduce_sum ---------------------------------------------------------------------------------------------------

def _groups(dims, axes: set[int]) -> list[tuple[list, bool]]:
    """Adjacent axes of the same kind merged: (their sizes, reduced). The batch axis (a runtime size) stays a group
    of its own, so the last group is static unless the tensor is [N]."""
    out: list[tuple[list, bool]] = []
    for k, d in enumerate(dims):
        red = k in axes
        if out and out[-1][1] == red and isinstance(d, int) and all(isinstance(e, int) for e in out[-1][0]):
            out[-1][0].append(d)
        else:
            out.append(([d], red))
    return out


@kernel("reduce_sum")
def emit_reduce_sum(kc: KernelContext) -> None:
    """Sum over `axes`. Adjacent axes of one kind merge into groups (reduced R, kept K). Threads split the output:
    with K last, vw adjacent outputs at a time, each lane summing its own column over the R groups; with R last,
    one output at a time, its contiguous runs summed in vectors, each run's sum added to a float64 total."""
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    axes = set(kc.attrs["axes"])
    raw = _groups(x.dims, axes)
    sizes: list[Index] = [kb.mul(*ds) for ds, _ in raw]
    strides: list[Index] = [1] * len(sizes)
    for k in range(len(sizes) - 2, -1, -1):
        strides[k] = kb.mul(strides[k + 1], sizes[k + 1])
    groups = [(sizes[k], raw[k][1], strides[k]) for k in range(len(sizes))]
    kept = [g for g in groups if not g[1]]
    reduced = [g for g in groups if g[1]]

    def decompose(o: Index, parts) -> Index:
        """The input offset of flat index `o` over the groups `parts` (row-major)."""
        off: Index = 0
        for size, _, stride in reversed(parts):
            off = kb.add(off, kb.mul(kb.rem(o, size), stride))
            o = kb.div(o, size)
        return off

    def over(parts, base: Index, fn: Callable[[Index], None]) -> None:
        """fn(offset) for every combination of the groups `parts`, in row-major order."""
        if not parts:
            fn(base)
            return
        size, _, stride = parts[0]
        with kb.loop(0, size, name="r") as r:
            over(parts[1:], kb.add(base, kb.mul(r, stride)), fn)

    if not groups[-1][1]:  # the last axis is kept: vectors of adjacent outputs
        L = groups[-1][0]
        if not isinstance(L, int):
            raise Unsupported("reduce_sum with a dynamic last axis")
        outer = kept[:-1]
        vw = kb.vw
        nvg, full = -(-L // vw), L // vw
        rows = kb.mul(*[g[0] for g in outer]) if outer else 1
        lo, hi = kc.split(kb.mul(rows, nvg))

        def column(ko: Index, j: Index, lanes: int | None) -> None:
            base = kb.add(decompose(ko, outer), j)
            slot = kb.alloca(kb.vtype(lanes) if lanes else kb.ft, "acc")
            kb.b.store(kb.fconst(0.0, lanes), slot)
            over(reduced, base, lambda off: kb.b.store(kb.fadd(kb.b.load(slot), kb.load_n(x.ptr, off, lanes)),
                                                       slot))
            kb.store_n(kb.b.load(slot), y.ptr, kb.add(kb.mul(ko, L), j), lanes)

        with kb.loop(lo, hi, name="u") as u:
            ko, gi = kb.div(u, nvg), kb.rem(u, nvg)
            j0 = kb.mul(gi, vw)
            if full == nvg:
                column(ko, j0, vw)
            elif full == 0:
                with kb.loop(0, L, name="j") as j:
                    column(ko, j, None)
            else:
                with kb.if_else(kb.icmp("<", gi, full)) as (then, otherwise):
                    with then:
                        column(ko, j0, vw)
                    with otherwise:
                        with kb.loop(j0, L, name="j") as j:
                            column(ko, j, None)
        return

    # the last axis is reduced: one output per unit
    run = groups[-1][0]
    outer_r = reduced[:-1]
    total_out = kb.mul(*[g[0] for g in kept]) if kept else 1
    lo, hi = kc.split(total_out)
    with kb.loop(lo, hi, name="o") as o:
        base = decompose(o, kept)
        slot = kb.alloca(F64, "total")
        kb.b.store(ir.Constant(F64, 0.0), slot)

        def add_run(off: Index) -> None:
            (s,) = _sums(kb, run, lambda i, lanes: [kb.load_n(x.ptr, i, lanes)], 1, off)
            kb.b.store(kb.b.fadd(kb.b.load(slot), _wide(kb, s)), slot)

        over(outer_r, base, add_run)
        kb.store(_narrow(kb, kb.b.load(slot)), y.ptr, o)


# -- losses -------------------------------------------------------------------------------------------------------

def _rows_value(node: Node, x: Value) -> Value:
    """The per-sample temporary of a lowered loss: [N] (the rows of x)."""
    return Value(f"{node.name}.~rows", TensorType((x.type.shape[0],), x.type.dtype), "node")


@lowering("softmax_cross_entropy", "mse_loss")
def lower_loss(node: Node) -> list[Node]:
    """loss = scale/(N·per) · Σ_n rows[n]: the rows in parallel, then their sum on one thread."""
    x = node.inputs[0]
    rows = _rows_value(node, x)
    per = 1
    for d in x.type.shape[1:]:
        per *= int(d)
    if node.op == "softmax_cross_entropy":
        first = Node(node.name, "~sce_rows", list(node.inputs), {"label_smoothing": node.attrs["label_smoothing"]},
                     rows, {}, node.loc)
        per = 1
    else:
        first = Node(node.name, "~sq_rows", list(node.inputs), {}, rows, {}, node.loc)
    rows.producer = first
    total = Node(node.name, "~sum_rows", [rows], {"scale": node.attrs["scale"], "per": per}, node.output, {},
                 node.loc)
    return [first, total]


def _row_softmax(kb: KB, z: ir.Value, base: Index, K: int) -> tuple[ir.Value, ir.Value]:
    """(max, Σ exp(z - max)) of the K logits from base."""
    (m,) = _fold(kb, K, lambda i, lanes: [kb.load_n(z, i, lanes)], [float("-inf")], kb.max, kb.hmax, base)

    def e(i, lanes):
        return [kb.exp(kb.fsub(kb.load_n(z, i, lanes), kb.splat(m, lanes) if lanes else m))]

    (s,) = _sums(kb, K, e, 1, base)
    return m, s


def _smoothed(kb: KB, t: ir.Value, ls: float, K: int) -> ir.Value:
    if not ls:
        return t
    return kb.fma(t, kb.like(1.0 - ls, t), kb.like(ls / K, t))


@kernel("~sce_rows")
def emit_sce_rows(kc: KernelContext) -> None:
    """rows[n] = -Σ_j t'_j·(z_j - max - log Σ exp(z - max))."""
    kb, (z, t), rows = kc.kb, kc.inputs, kc.out
    n, K = z.dims[0], int(z.dims[1])
    ls = kc.attrs["label_smoothing"]
    lo, hi = kc.split(n)
    with kb.loop(lo, hi, name="n") as r:
        base = kb.mul(r, K)
        m, s = _row_softmax(kb, z.ptr, base, K)
        shift = kb.fadd(m, kb.log(s))

        def term(i, lanes):
            zi = kb.fsub(kb.load_n(z.ptr, i, lanes), kb.splat(shift, lanes) if lanes else shift)
            return [kb.fmul(_smoothed(kb, kb.load_n(t.ptr, i, lanes), ls, K), zi)]

        (acc,) = _sums(kb, K, term, 1, base)
        kb.store(kb.fneg(acc), rows.ptr, r)


@kernel("~sq_rows")
def emit_sq_rows(kc: KernelContext) -> None:
    """rows[n] = Σ (p - t)² over sample n."""
    kb, (p, t), rows = kc.kb, kc.inputs, kc.out
    n = p.dims[0]
    per = 1
    for d in p.dims[1:]:
        per *= int(d)
    lo, hi = kc.split(n)
    with kb.loop(lo, hi, name="n") as r:
        def term(i, lanes):
            d = kb.fsub(kb.load_n(p.ptr, i, lanes), kb.load_n(t.ptr, i, lanes))
            return [kb.fmul(d, d)]

        (acc,) = _sums(kb, per, term, 1, kb.mul(r, per))
        kb.store(acc, rows.ptr, r)


@kernel("~sum_rows")
def emit_sum_rows(kc: KernelContext) -> None:
    """out[0] = scale/(N·per)·Σ rows, summed in sample order in float64 by thread 0."""
    kb, rows, out = kc.kb, kc.inputs[0], kc.out
    b = kb.b
    n = rows.dims[0]
    with kb.if_(b.icmp_signed("==", kc.tid, kb.i64(0))):
        total = kb.carried_loop(0, n, [ir.Constant(F64, 0.0)],
                                lambda r, acc: [b.fadd(acc[0], _wide(kb, kb.load(rows.ptr, r)))], name="n")[0]
        count = kb.mul(n, kc.attrs["per"])
        count = ir.Constant(F64, float(count)) if isinstance(count, int) else b.sitofp(count, F64)
        kb.store(_narrow(kb, b.fmul(total, b.fdiv(ir.Constant(F64, kc.attrs["scale"]), count))), out.ptr, 0)


@kernel("softmax_cross_entropy_grad")
def emit_sce_grad(kc: KernelContext) -> None:
    """scale/N·(softmax(z)·Σt' - t') per row."""
    kb, (z, t), g = kc.kb, kc.inputs, kc.out
    n, K = z.dims[0], int(z.dims[1])
    ls = kc.attrs["label_smoothing"]
    c = kb.fdiv(kb.fconst(kc.attrs["scale"]), kb.to_float(n))
    lo, hi = kc.split(n)
    with kb.loop(lo, hi, name="n") as r:
        base = kb.mul(r, K)
        m, s = _row_softmax(kb, z.ptr, base, K)
        inv = kb.fdiv(kb.fconst(1.0), s)
        (tsum,) = _sums(kb, K, lambda i, lanes: [_smoothed(kb, kb.load_n(t.ptr, i, lanes), ls, K)], 1, base)

        def body(i, lanes):
            j = kb.add(base, i)
            sp = (lambda v: kb.splat(v, lanes)) if lanes else (lambda v: v)
            p = kb.fmul(kb.exp(kb.fsub(kb.load_n(z.ptr, j, lanes), sp(m))), sp(inv))
            d = kb.fsub(kb.fmul(p, sp(tsum)), _smoothed(kb, kb.load_n(t.ptr, j, lanes), ls, K))
            kb.store_n(kb.fmul(d, sp(c)), g.ptr, j, lanes)

        inner_loop(kb, K, body)


@kernel("mse_loss_grad")
def emit_mse_grad(kc: KernelContext) -> None:
    """2·scale·(p - t)/numel."""
    kb, (p, t), g = kc.kb, kc.inputs, kc.out
    total = g.numel(kb)
    c = kb.fdiv(kb.fconst(2.0 * kc.attrs["scale"]), kb.to_float(total))

    def body(i, lanes):
        d = kb.fsub(kb.load_n(p.ptr, i, lanes), kb.load_n(t.ptr, i, lanes))
        kb.store_n(kb.fmul(d, kb.splat(c, lanes) if lanes else c), g.ptr, i, lanes)

    flat_loop(kc, total, body)


# -- optimizer updates --------------------------------------------------------------------------------------------

def _update(kc: KernelContext, fn: Callable[[list[ir.Value], int | None], ir.Value], arrays: int = 3) -> None:
    """out[i] = fn([inputs 0 .. arrays-1 at i], lanes); the [1] inputs after them (lr, step) are read by the
    caller."""
    kb, y = kc.kb, kc.out
    arrays = kc.inputs[:arrays]

    def body(i, lanes):
        kb.store_n(fn([kb.load_n(t.ptr, i, lanes) for t in arrays], lanes), y.ptr, i, lanes)

    flat_loop(kc, y.numel(kb), body)


def _k(kb: KB, x: float | ir.Value, lanes: int | None) -> ir.Value:
    """A constant or a scalar value shaped for `lanes`."""
    if isinstance(x, ir.Value):
        return kb.splat(x, lanes) if lanes else x
    return kb.fconst(x, lanes)


def _decayed(kb: KB, g: ir.Value, w: ir.Value, wd: float, lanes) -> ir.Value:
    return g if not wd else kb.fadd(g, kb.fmul(_k(kb, wd, lanes), w))


@kernel("sgd_step")
def emit_sgd_step(kc: KernelContext) -> None:
    """w - lr·(g + wd·w)."""
    kb = kc.kb
    lr = _scalar(kb, kc.inputs[2])
    wd = kc.attrs["weight_decay"]
    _update(kc, lambda v, lanes: kb.fsub(v[0], kb.fmul(_k(kb, lr, lanes), _decayed(kb, v[1], v[0], wd, lanes))),
            arrays=2)


@kernel("sgd_buffer")
def emit_sgd_buffer(kc: KernelContext) -> None:
    """momentum·buf + g + wd·w."""
    kb = kc.kb
    mom, wd = kc.attrs["momentum"], kc.attrs["weight_decay"]

    def fn(v, lanes):
        buf, g, w = v
        out = kb.fadd(kb.fmul(_k(kb, mom, lanes), buf), g)
        return kb.fadd(out, kb.fmul(_k(kb, wd, lanes), w)) if wd else out

    _update(kc, fn)


@kernel("sgd_momentum_step")
def emit_sgd_momentum_step(kc: KernelContext) -> None:
    """w - lr·buf', or w - lr·(g + wd·w + momentum·buf') with Nesterov."""
    kb = kc.kb
    lr = _scalar(kb, kc.inputs[3])
    a = kc.attrs

    def fn(v, lanes):
        w, g, buf = v
        d = buf
        if a["nesterov"]:
            d = kb.fadd(_decayed(kb, g, w, a["weight_decay"], lanes), kb.fmul(_k(kb, a["momentum"], lanes), buf))
        return kb.fsub(w, kb.fmul(_k(kb, lr, lanes), d))

    _update(kc, fn)


@kernel("adam_moment")
def emit_adam_moment(kc: KernelContext) -> None:
    """beta·m + (1 - beta)·g' (g'² with square), g' = g + wd·w."""
    kb = kc.kb
    a = kc.attrs

    def fn(v, lanes):
        m, g, w = v
        g = _decayed(kb, g, w, a["weight_decay"], lanes)
        if a["square"]:
            g = kb.fmul(g, g)
        return kb.fadd(kb.fmul(_k(kb, a["beta"], lanes), m), kb.fmul(_k(kb, 1.0 - a["beta"], lanes), g))

    _update(kc, fn)


@kernel("adam_step")
def emit_adam_step(kc: KernelContext) -> None:
    """w·(1 - lr·wd) [decoupled] - lr/(1-β1^t)·m/(sqrt(v)/sqrt(1-β2^t) + eps); the per-step scalars in float64."""
    kb = kc.kb
    b = kb.b
    a = kc.attrs
    lr = _wide(kb, _scalar(kb, kc.inputs[3]))
    t = _wide(kb, _scalar(kb, kc.inputs[4]))
    one = ir.Constant(F64, 1.0)

    def power(beta: float) -> ir.Value:
        return kb.intrinsic("pow", [ir.Constant(F64, beta), t])

    step = _narrow(kb, b.fdiv(lr, b.fsub(one, power(a["beta1"]))))  # lr / (1 - β1^t)
    root = _narrow(kb, kb.sqrt(b.fsub(one, power(a["beta2"]))))  # sqrt(1 - β2^t)
    decay = _narrow(kb, b.fsub(one, b.fmul(lr, ir.Constant(F64, a["weight_decay"])))) if a["decoupled"] else None

    def fn(v, lanes):
        w, m, var = v
        if decay is not None:
            w = kb.fmul(w, _k(kb, decay, lanes))
        den = kb.fadd(kb.fdiv(kb.sqrt(var), _k(kb, root, lanes)), _k(kb, a["eps"], lanes))
        return kb.fsub(w, kb.fdiv(kb.fmul(_k(kb, step, lanes), m), den))

    _update(kc, fn)



# -- gradients of activations ---------------------------------------------------------------------------------------

def _activation_derivative(kb: KB, attrs: dict, dy: ir.Value, s: ir.Value) -> ir.Value:
    """dy·fn'(saved) (graphconv/ops/grad/activation.py): `s` is the forward output for sigmoid and tanh, the
    forward input otherwise; at the kinks the x <= 0 side, as the reference."""
    fn = attrs["fn"]
    one, zero = kb.like(1.0, s), kb.like(0.0, s)
    if fn == "sigmoid":
        return kb.fmul(kb.fmul(dy, s), kb.fsub(one, s))
    if fn == "tanh":
        return kb.fmul(dy, kb.fsub(one, kb.fmul(s, s)))
    if fn == "clip":
        keep = None
        for bound, cmp in (("min", ">="), ("max", "<=")):
            if attrs.get(bound) is not None:
                test = kb.fcmp(cmp, s, kb.like(attrs[bound], s))
                keep = test if keep is None else kb.b.and_(keep, test)
        return kb.select(keep, dy, zero)
    positive = kb.fcmp(">", s, zero)
    if fn == "relu":
        return kb.select(positive, dy, zero)
    if fn == "leaky_relu":
        return kb.select(positive, dy, kb.fmul(dy, kb.like(attrs["alpha"], s)))
    if fn in ("elu", "selu"):
        alpha, scale = (attrs["alpha"], 1.0) if fn == "elu" else (SELU_ALPHA, SELU_SCALE)
        neg = kb.fmul(dy, kb.fmul(kb.like(alpha, s), kb.exp(kb.min(s, zero))))
        g = kb.select(positive, dy, neg)
        return g if scale == 1.0 else kb.fmul(g, kb.like(scale, s))
    raise Unsupported(f"activation_grad of {fn}")


@kernel("activation_grad")
def emit_activation_grad(kc: KernelContext) -> None:
    kb, (dy, s), out = kc.kb, kc.inputs, kc.out
    attrs = kc.attrs

    def body(i, lanes):
        g = _activation_derivative(kb, attrs, kb.load_n(dy.ptr, i, lanes), kb.load_n(s.ptr, i, lanes))
        kb.store_n(kc.epilogue(g, i), out.ptr, i, lanes)

    flat_loop(kc, out.numel(kb), body)


@kernel("neg")
def emit_neg(kc: KernelContext) -> None:
    kb, x, out = kc.kb, kc.inputs[0], kc.out
    flat_loop(kc, out.numel(kb), lambda i, lanes: kb.store_n(kc.epilogue(kb.fneg(kb.load_n(x.ptr, i, lanes)), i),
                                                             out.ptr, i, lanes))


@kernel("softmax_grad")
def emit_softmax_grad(kc: KernelContext) -> None:
    """Along `axis`, seen as [outer, S, inner]: y·(dy - Σ dy·y), or dy - exp(y)·Σ dy (log=true). Rows along the last
    axis are summed in vectors; otherwise vw adjacent columns at a time (norm.py's units)."""
    if kc.block:
        raise Unsupported("softmax_grad in the blocked layout")
    kb, (dy, y), out = kc.kb, kc.inputs, kc.out
    axis, log = kc.attrs["axis"], kc.attrs["log"]
    outer = kb.mul(*dy.dims[:axis])
    S = int(dy.dims[axis])
    inner = 1
    for d in dy.dims[axis + 1:]:
        inner *= int(d)

    def term(i, lanes):
        g = kb.load_n(dy.ptr, i, lanes)
        return [g if log else kb.fmul(g, kb.load_n(y.ptr, i, lanes))]

    def value(i, lanes, total):
        g, yv = kb.load_n(dy.ptr, i, lanes), kb.load_n(y.ptr, i, lanes)
        if log:
            return kb.fsub(g, kb.fmul(kb.exp(yv), total))
        return kb.fmul(yv, kb.fsub(g, total))

    if inner == 1:
        lo, hi = kc.split(outer)
        with kb.loop(lo, hi, name="r") as r:
            base = kb.mul(r, S)
            (t,) = _sums(kb, S, term, 1, base)
            inner_loop(kb, S, lambda i, lanes: kb.store_n(
                value(kb.add(base, i), lanes, kb.splat(t, lanes) if lanes else t), out.ptr, kb.add(base, i), lanes))
        return

    def column(o, j, lanes):
        base = kb.add(kb.mul(o, S * inner), j)
        (t,) = kb.carried_loop(0, S, [kb.fconst(0.0, lanes)],
                               lambda s, acc: [kb.fadd(acc[0], term(kb.add(base, kb.mul(s, inner)), lanes)[0])],
                               name="s")
        with kb.loop(0, S, name="s") as s:
            i = kb.add(base, kb.mul(s, inner))
            kb.store_n(value(i, lanes, t), out.ptr, i, lanes)

    _vec_units(kc, outer, inner, column)
