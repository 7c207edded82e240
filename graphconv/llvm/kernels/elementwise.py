"""Elementwise kernels: activations, dropout/identity at inference, the broadcasting binary ops, batchnorm.

`unary` and `binary` are the scalar-or-vector math every kernel's epilogue reuses; `flat_loop` is the vectorized
loop over a flat range split between threads, with a scalar tail.
"""

from __future__ import annotations

from typing import Any, Callable

from llvmlite import ir

from ...ops.activation import SELU_ALPHA, SELU_SCALE
from ..builder import KB, Index
from ..kernel import KernelContext, Unsupported, kernel


# -- math shared with the epilogues -------------------------------------------------------------------------------

def _elu(kb: KB, x: ir.Value, alpha: float) -> ir.Value:
    neg = kb.fmul(kb.like(alpha, x), kb.expm1(kb.min(x, kb.like(0.0, x))))
    return kb.select(kb.fcmp(">", x, kb.like(0.0, x)), x, neg)


def _sigmoid(kb: KB, x: ir.Value) -> ir.Value:
    # exp of a non-positive number never overflows: e/(1+e) below zero, 1/(1+e) above
    e = kb.exp(kb.fneg(kb.abs(x)))
    one = kb.like(1.0, x)
    den = kb.fadd(one, e)
    return kb.select(kb.fcmp(">=", x, kb.like(0.0, x)), kb.fdiv(one, den), kb.fdiv(e, den))


def _clip(kb: KB, x: ir.Value, attrs: dict) -> ir.Value:
    if attrs.get("min") is not None:
        x = kb.max(x, kb.like(attrs["min"], x))
    if attrs.get("max") is not None:
        x = kb.min(x, kb.like(attrs["max"], x))
    return x


UNARY: dict[str, Callable[[KB, ir.Value, dict], ir.Value]] = {
    "relu": lambda kb, x, a: kb.select(kb.fcmp("<", x, kb.like(0.0, x)), kb.like(0.0, x), x),
    "leaky_relu": lambda kb, x, a: kb.select(kb.fcmp(">=", x, kb.like(0.0, x)), x,
                                             kb.fmul(x, kb.like(a["alpha"], x))),
    "elu": lambda kb, x, a: _elu(kb, x, a["alpha"]),
    "selu": lambda kb, x, a: kb.fmul(kb.like(SELU_SCALE, x), _elu(kb, x, SELU_ALPHA)),
    "sigmoid": lambda kb, x, a: _sigmoid(kb, x),
    "tanh": lambda kb, x, a: kb.tanh(x),
    "clip": _clip,
    "identity": lambda kb, x, a: x,
    "dropout": lambda kb, x, a: x,  # inference: the identity
}

BINARY: dict[str, Callable[[KB, ir.Value, ir.Value], ir.Value]] = {
    "add": lambda kb, a, c: kb.fadd(a, c),
    "mul": lambda kb, a, c: kb.fmul(a, c),
    "sub": lambda kb, a, c: kb.fsub(a, c),
    "div": lambda kb, a, c: kb.fdiv(a, c),
}


def unary(kb: KB, op: str, attrs: dict[str, Any], x: ir.Value) -> ir.Value:
    fn = UNARY.get(op)
    if fn is None:
        raise Unsupported(f"no elementwise code for '{op}'")
    return fn(kb, x, attrs)


def binary(kb: KB, op: str, a: ir.Value, c: ir.Value) -> ir.Value:
    fn = BINARY.get(op)
    if fn is None:
        raise Unsupported(f"no binary code for '{op}'")
    return fn(kb, a, c)


# -- loops -------------------------------------------------------------------------------------------------------

def flat_loop(kc: KernelContext, total: Index, body: Callable[[Index, int | None], None], *,
              split: bool = True) -> None:
    """Run `body(index, lanes)` over [0, total): vectors of kb.vw lanes (lanes = vw), then a scalar tail
    (lanes = None). With `split`, each thread takes a contiguous share of whole vectors."""
    kb = kc.kb
    vw = kb.vw
    nvec = kb.div(total, vw)
    lo, hi = kc.split(nvec) if split else (0, nvec)
    with kb.loop(lo, hi, name="v") as v:
        body(kb.mul(v, vw), vw)
    tail_lo = kb.mul(nvec, vw)
    if isinstance(total, int) and total % vw == 0:
        return
    if not split:
        with kb.loop(tail_lo, total, name="t") as t:
            body(t, None)
        return
    # the tail belongs to the last thread
    with kb.if_(kb.b.icmp_signed("==", kc.tid, kb.b.sub(kc.nthreads, kb.i64(1)))):
        with kb.loop(tail_lo, total, name="t") as t:
            body(t, None)




# -- kernels -----------------------------------------------------------------------------------------------------

@kernel(*UNARY)
def emit_unary(kc: KernelContext) -> None:
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    op, attrs = kc.node.op, kc.attrs

    def body(i, lanes):
        kb.store_n(unary(kb, op, attrs, kb.load_n(x.ptr, i, lanes)), y.ptr, i, lanes)

    flat_loop(kc, y.numel(kb), body)


@kernel(*BINARY)
def emit_binary(kc: KernelContext) -> None:
    """Two or more inputs combined left to right, broadcasting numpy-style. Inputs of the output's shape are read
    flat; otherwise an index loop over the output reads each input through its broadcast strides, vectorized over
    the last axis when every input is either contiguous or constant along it."""
    kb, y = kc.kb, kc.out
    op = kc.node.op
    if all(t.type.shape == y.type.shape for t in kc.inputs):
        def body(i, lanes):
            acc = kb.load_n(kc.inputs[0].ptr, i, lanes)
            for t in kc.inputs[1:]:
                acc = binary(kb, op, acc, kb.load_n(t.ptr, i, lanes))
            kb.store_n(acc, y.ptr, i, lanes)

        flat_loop(kc, y.numel(kb), body)
        return
    broadcast_loop(kc, kc.inputs, lambda vals: _combine(kb, op, vals))


def _combine(kb: KB, op: str, vals: list[ir.Value]) -> ir.Value:
    acc = vals[0]
    for v in vals[1:]:
        acc = binary(kb, op, acc, v)
    return acc


def broadcast_strides(kb: KB, t, out_rank: int) -> list[Index]:
    """Element strides of input `t` as seen from an output of rank `out_rank`: 0 along broadcast axes."""
    pad = out_rank - t.rank
    strides = t.strides(kb)
    out: list[Index] = [0] * out_rank
    for k in range(t.rank):
        d = t.dims[k]
        out[pad + k] = 0 if (isinstance(d, int) and d == 1) else strides[k]
    return out


def broadcast_loop(kc: KernelContext, ins: list, fn: Callable[[list[ir.Value]], ir.Value]) -> None:
    """y[idx] = epilogue(fn([x[bcast(idx)] for x in ins])) over the output's index space; the outer axes are
    split between threads, the last one vectorized when it can be."""
    kb, y = kc.kb, kc.out
    rank = y.rank
    if rank == 0:
        raise Unsupported("rank-0 output")
    strides = [broadcast_strides(kb, t, rank) for t in ins]
    outer_dims = y.dims[:-1]
    last = y.dims[-1]
    outer_total = kb.mul(*outer_dims) if outer_dims else 1
    lo, hi = kc.split(outer_total)
    with kb.loop(lo, hi, name="o") as o:
        # decompose the outer index into coordinates
        coords: list[Index] = []
        rest: Index = o
        for k in range(rank - 2, -1, -1):
            coords.append(kb.rem(rest, y.dims[k]))
            rest = kb.div(rest, y.dims[k])
        coords.reverse()
        bases = [kb.add(*[kb.mul(c, s[k]) for k, c in enumerate(coords)]) if coords else 0 for s in strides]
        ybase = kb.mul(o, last)

        def elem(j, lanes):
            vals = []
            for t, s, base in zip(ins, strides, bases):
                step = s[-1]
                if isinstance(step, int) and step == 0:
                    v = kb.load(t.ptr, base)
                    vals.append(kb.splat(v, lanes) if lanes else v)
                else:
                    vals.append(kb.load_n(t.ptr, kb.add(base, kb.mul(j, step)), lanes))
            value = fn(vals)
            index = kb.add(ybase, j)
            kb.store_n(kc.epilogue(value, index), y.ptr, index, lanes)

        vectorizable = all(isinstance(s[-1], int) and s[-1] in (0, 1) for s in strides)
        if vectorizable and isinstance(last, int) and last >= kb.vw:
            nvec = last // kb.vw
            with kb.loop(0, nvec, name="j") as jv:
                elem(kb.mul(jv, kb.vw), kb.vw)
            if last % kb.vw:
                with kb.loop(nvec * kb.vw, last, name="jt") as j:
                    elem(j, None)
        else:
            with kb.loop(0, last, name="j") as j:
                elem(j, None)


@kernel("batchnorm")
def emit_batchnorm(kc: KernelContext) -> None:
    """Inference batchnorm with the running statistics: y = x·s + t per channel, s = weight/sqrt(var + eps),
    t = bias - mean·s, computed from the parameters in the kernel (so new weights need no recompile)."""
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    a = kc.attrs
    p = kc.params

    def scale_shift(c: Index, lanes: int | None):
        var = kb.load_n(p["running_var"].ptr, c, lanes)
        mean = kb.load_n(p["running_mean"].ptr, c, lanes)
        inv = kb.fdiv(kb.like(1.0, var), kb.sqrt(kb.fadd(var, kb.like(a["eps"], var))))
        if a["affine"]:
            s = kb.fmul(inv, kb.load_n(p["weight"].ptr, c, lanes))
            t = kb.fsub(kb.load_n(p["bias"].ptr, c, lanes), kb.fmul(mean, s))
        else:
            s, t = inv, kb.fneg(kb.fmul(mean, inv))
        return s, t

    if kc.block:  # [N, C/b, H, W, b]: one vector of b channels per pixel
        b = kc.block
        n, cb, h, w, _ = x.dims
        rows = kb.mul(n, cb)
        lo, hi = kc.split(rows)
        with kb.loop(lo, hi, name="r") as r:
            c0 = kb.mul(kb.rem(r, cb), b)
            s, t = scale_shift(c0, b)
            base = kb.mul(r, h * w * b)
            with kb.loop(0, h * w, name="p") as pix:
                i = kb.add(base, kb.mul(pix, b))
                kb.store_n(kb.fma(kb.load_n(x.ptr, i, b), s, t), y.ptr, i, b)
        return
    n, c = x.dims[0], x.dims[1]
    inner = kb.mul(*x.dims[2:]) if x.rank > 2 else 1
    rows = kb.mul(n, c)
    lo, hi = kc.split(rows)
    with kb.loop(lo, hi, name="r") as r:
        s, t = scale_shift(kb.rem(r, c), None)
        base = kb.mul(r, inner)
        vs, vt = kb.splat(s), kb.splat(t)

        def body(i, lanes):
            idx = kb.add(base, i)
            if lanes:
                kb.store_n(kb.fma(kb.load_n(x.ptr, idx, lanes), vs, vt), y.ptr, idx, lanes)
            else:
                kb.store_n(kb.fma(kb.load_n(x.ptr, idx, None), s, t), y.ptr, idx, None)

        _inner_loop(kb, inner, body)


def _inner_loop(kb: KB, total: Index, body: Callable[[Index, int | None], None]) -> None:
    """body over [0, total) in vectors then a scalar tail, in this thread (no split)."""
    vw = kb.vw
    nvec = kb.div(total, vw)
    with kb.loop(0, nvec, name="v") as v:
        body(kb.mul(v, vw), vw)
    if not (isinstance(total, int) and total % vw == 0):
        with kb.loop(kb.mul(nvec, vw), total, name="t") as t:
            body(t, None)


inner_loop = _inner_loop
