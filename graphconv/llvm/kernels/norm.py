"""Normalization kernels: softmax and log_softmax along any non-batch axis, local response normalization.

softmax/log_softmax see their input as [outer, S, inner] (S the axis). With inner = 1 (the axis is the last one)
each row of S elements is reduced in vectors along the row; otherwise vw adjacent columns are reduced together, one
vector per step along the axis. Both are max-subtracted as the reference: m = max, e = exp(x - m), then e / Σe, or
(x - m) - log Σe.

lrn reads its channel window for a vector of pixels at a time.
"""

from __future__ import annotations

from typing import Callable

from llvmlite import ir

from ..builder import KB, Index
from ..kernel import KernelContext, Unsupported, kernel
from .elementwise import inner_loop




def _vec_units(kc: KernelContext, rows: Index, inner: int, body: Callable[[Index, Index, int | None], None]) -> None:
    """body(row, column, lanes) over rows × inner columns, vw columns at a time (lanes = vw) and the columns of a
    partial last group one by one (lanes = None); the (row, group) units are split between threads."""
    kb = kc.kb
    vw = kb.vw
    groups = -(-inner // vw)
    full = inner // vw
    lo, hi = kc.split(kb.mul(rows, groups))
    with kb.loop(lo, hi, name="u") as u:
        r, gi = kb.div(u, groups), kb.rem(u, groups)
        j0 = kb.mul(gi, vw)
        if full == groups:
            body(r, j0, vw)
        elif full == 0:
            with kb.loop(0, inner, name="jc") as j:
                body(r, j, None)
        else:
            with kb.if_else(kb.icmp("<", gi, full)) as (then, otherwise):
                with then:
                    body(r, j0, vw)
                with otherwise:
                    with kb.loop(j0, inner, name="jc") as j:
                        body(r, j, None)


# -- softmax, log_softmax ----------------------------------------------------------------------------------------

def _softmax_columns(kb: KB, x: ir.Value, y: ir.Value, base: Index, S: int, stride: int, lanes: int | None,
                     log: bool) -> None:
    """Softmax of `lanes` adjacent columns (or one, lanes None) of S elements `stride` apart from base."""
    ty = kb.vtype(lanes) if lanes else kb.ft
    slot = kb.alloca(ty, "m")
    kb.b.store(kb.load_n(x, base, lanes), slot)
    with kb.loop(1, S, name="s") as s:
        kb.b.store(kb.max(kb.b.load(slot), kb.load_n(x, kb.add(base, kb.mul(s, stride)), lanes)), slot)
    m = kb.b.load(slot)
    acc = kb.alloca(ty, "sum")
    kb.b.store(kb.like(0.0, m), acc)
    with kb.loop(0, S, name="s") as s:
        i = kb.add(base, kb.mul(s, stride))
        e = kb.exp(kb.fsub(kb.load_n(x, i, lanes), m))
        if not log:
            kb.store_n(e, y, i, lanes)
        kb.b.store(kb.fadd(kb.b.load(acc), e), acc)
    total = kb.b.load(acc)
    if log:
        lse = kb.log(total)
        with kb.loop(0, S, name="s") as s:
            i = kb.add(base, kb.mul(s, stride))
            kb.store_n(kb.fsub(kb.fsub(kb.load_n(x, i, lanes), m), lse), y, i, lanes)
    else:
        inv = kb.fdiv(kb.like(1.0, total), total)
        with kb.loop(0, S, name="s") as s:
            i = kb.add(base, kb.mul(s, stride))
            kb.store_n(kb.fmul(kb.load_n(y, i, lanes), inv), y, i, lanes)


def _softmax_row(kb: KB, x: ir.Value, y: ir.Value, base: Index, S: int, log: bool) -> None:
    """Softmax of S contiguous elements from base: vectors along the row, then a scalar tail."""
    vw = kb.vw
    if S < vw:
        _softmax_columns(kb, x, y, base, S, 1, None, log)
        return
    vslot, sslot = kb.alloca(kb.vt, "vm"), kb.alloca(kb.ft, "sm")
    kb.b.store(kb.fconst(float("-inf"), vw), vslot)
    kb.b.store(kb.fconst(float("-inf")), sslot)

    def amax(i, lanes):
        slot = vslot if lanes else sslot
        kb.b.store(kb.max(kb.b.load(slot), kb.load_n(x, kb.add(base, i), lanes)), slot)

    inner_loop(kb, S, amax)
    m = kb.max(kb.hmax(kb.b.load(vslot)), kb.b.load(sslot))
    vm = kb.splat(m)
    kb.b.store(kb.fconst(0.0, vw), vslot)
    kb.b.store(kb.fconst(0.0), sslot)

    def esum(i, lanes):
        slot = vslot if lanes else sslot
        e = kb.exp(kb.fsub(kb.load_n(x, kb.add(base, i), lanes), vm if lanes else m))
        if not log:
            kb.store_n(e, y, kb.add(base, i), lanes)
        kb.b.store(kb.fadd(kb.b.load(slot), e), slot)

    inner_loop(kb, S, esum)
    total = kb.fadd(kb.hsum(kb.b.load(vslot)), kb.b.load(sslot))
    if log:
        lse = kb.log(total)
        vl = kb.splat(lse)

        def out(i, lanes):
            v = kb.fsub(kb.fsub(kb.load_n(x, kb.add(base, i), lanes), vm if lanes else m), vl if lanes else lse)
            kb.store_n(v, y, kb.add(base, i), lanes)
    else:
        inv = kb.fdiv(kb.fconst(1.0), total)
        vi = kb.splat(inv)

        def out(i, lanes):
            kb.store_n(kb.fmul(kb.load_n(y, kb.add(base, i), lanes), vi if lanes else inv), y, kb.add(base, i), lanes)

    inner_loop(kb, S, out)


@kernel("softmax", "log_softmax")
def emit_softmax(kc: KernelContext) -> None:
    if kc.block:
        raise Unsupported(f"{kc.node.op} in the blocked layout")
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    log = kc.node.op == "log_softmax"
    axis = kc.attrs["axis"] % x.rank
    if axis == 0:
        raise Unsupported(f"{kc.node.op} along the batch axis")
    outer = kb.mul(*x.dims[:axis])
    S = int(x.dims[axis])
    inner = 1
    for d in x.dims[axis + 1:]:
        inner *= int(d)
    if inner == 1:
        lo, hi = kc.split(outer)
        with kb.loop(lo, hi, name="r") as r:
            _softmax_row(kb, x.ptr, y.ptr, kb.mul(r, S), S, log)
        return

    def body(o, j, lanes):
        _softmax_columns(kb, x.ptr, y.ptr, kb.add(kb.mul(o, S * inner), j), S, inner, lanes, log)

    _vec_units(kc, outer, inner, body)


# -- lrn ---------------------------------------------------------------------------------------------------------

def _pow_neg(kb: KB, d: ir.Value, beta: float) -> ir.Value:
    """d^-beta, with square roots for the usual exponents."""
    one = kb.like(1.0, d)
    if beta == 0.0:
        return one
    if beta == 1.0:
        return kb.fdiv(one, d)
    if beta == 0.5:
        return kb.fdiv(one, kb.sqrt(d))
    if beta == 0.75:
        s = kb.sqrt(d)
        return kb.fdiv(one, kb.fmul(s, kb.sqrt(s)))
    return kb.fdiv(one, kb.pow(d, kb.like(beta, d)))


@kernel("lrn")
def emit_lrn(kc: KernelContext) -> None:
    """y[c] = x[c] / (bias + alpha/size · Σ x[c']²)^beta over c' from c - floor((size-1)/2) to c + ceil((size-1)/2)
    (ONNX), clipped to the channels; per (sample, channel) a vector of pixels at a time."""
    if kc.block:
        raise Unsupported("lrn in the blocked layout")
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    a = kc.attrs
    size = a["size"]
    before = (size - 1) // 2
    after = size - 1 - before
    n, C, h, w = x.dims
    P = int(h) * int(w)
    scale, bias, beta = a["alpha"] / size, a["bias"], a["beta"]

    def body(nc, j, lanes):
        c = kb.rem(nc, C)
        plane0 = kb.mul(kb.sub(nc, c), P)  # the sample's first channel
        c_lo = kb.imax(kb.sub(c, before), 0)
        c_hi = kb.imin(kb.add(c, after + 1), C)
        ty = kb.vtype(lanes) if lanes else kb.ft
        acc = kb.alloca(ty, "sq")
        kb.b.store(kb.fconst(0.0, lanes), acc)
        with kb.loop(c_lo, c_hi, name="cw") as cw:
            v = kb.load_n(x.ptr, kb.add(plane0, kb.mul(cw, P), j), lanes)
            kb.b.store(kb.fma(v, v, kb.b.load(acc)), acc)
        den = kb.fma(kb.b.load(acc), kb.fconst(scale, lanes), kb.fconst(bias, lanes))
        i = kb.add(kb.mul(nc, P), j)
        kb.store_n(kb.fmul(kb.load_n(x.ptr, i, lanes), _pow_neg(kb, den, beta)), y.ptr, i, lanes)

    _vec_units(kc, kb.mul(n, C), P, body)
