"""Gradient kernels of the shape family (graphconv/ops/grad/shape.py): slice_grad and pad_grad, plain layout.

Both are gathers: each element of dx is written by one thread, from the elements of dy that reach it, added in an
order fixed when the kernel is generated (the same bits for every thread count).

slice_grad: dx is zeros with dy placed at the sliced positions of one axis. dx is seen as [outer, size, inner]:
- step 1: each outer row is a run of zeros, dy's run, zeros; the threads split dx's elements evenly (a row may be
  shared by two threads), copies and fills in vectors;
- another step with inner > 1: rows of `inner` elements, each either copied from its dy row or zero (a static
  table of which dy row, -1 for none), rows split between threads;
- another step along the last axis (inner = 1): per outer row, each position loads its dy element through the
  table, or is 0.

pad_grad: per row (plane, i) of dx (split between threads): the dy rows that copy input row i (the row itself, and
for reflect / edge the border rows folded back onto it: a static table) are added a vector of columns at a time
(their interior columns), then each border column of those rows is added onto the column it copies (static,
in column order).
"""

from __future__ import annotations

import math

from ..builder import I32, Index
from ..kernel import KernelContext, Unsupported, kernel
from .data import _copy, _fill, _load_index, const_table
from .train_pool import _spans, _Taps


def _no_block(kc: KernelContext) -> None:
    if kc.block:
        raise Unsupported(f"{kc.node.op} in the blocked layout")


@kernel("slice_grad")
def emit_slice_grad(kc: KernelContext) -> None:
    _no_block(kc)
    kb = kc.kb
    dy, dx = kc.inputs[0], kc.out
    a = kc.attrs
    axis, size, step = a["axis"], int(a["size"]), a["step"]
    taken = list(range(*slice(a["start"], a["end"], step).indices(size)))
    length = len(taken)
    if int(dy.dims[axis]) != length:
        raise Unsupported(f"slice_grad: dy {dy.type} does not match the slice")
    outer = kb.mul(*dx.dims[:axis])
    inner = math.prod(int(d) for d in dx.dims[axis + 1:])

    if step == 1:
        start = taken[0]
        row = size * inner
        seg0, seg1 = start * inner, (start + length) * inner
        lo, hi = kc.split(kb.mul(outer, row))
        r0 = kb.div(lo, row)
        r1 = kb.div(kb.add(hi, row - 1), row)
        with kb.loop(r0, r1, name="row") as r:
            rb = kb.mul(r, row)
            s = kb.sub(kb.imax(lo, rb), rb)  # this thread's part [s, e) of the row
            e = kb.sub(kb.imin(hi, kb.add(rb, row)), rb)

            def part(p0: int, p1: int, fill: bool) -> None:
                if p1 <= p0:
                    return
                c0, c1 = kb.imin(kb.imax(s, p0), p1), kb.imax(kb.imin(e, p1), p0)
                count = kb.sub(c1, c0)
                if fill:
                    _fill(kb, 0.0, dx.ptr, kb.add(rb, c0), count)
                else:
                    src = kb.add(kb.mul(r, length * inner), kb.sub(c0, p0))
                    _copy(kb, dy.ptr, src, dx.ptr, kb.add(rb, c0), count)

            part(0, seg0, True)
            part(seg0, seg1, False)
            part(seg1, row, True)
        return

    which = [-1] * size
    for k, pos in enumerate(taken):
        which[pos] = k
    table = const_table(kb, "which", I32, which)
    if inner > 1:
        lo, hi = kc.split(kb.mul(outer, size))
        with kb.loop(lo, hi, name="row") as r:
            o, pos = kb.div(r, size), kb.rem(r, size)
            k = _load_index(kb, table, pos)
            with kb.if_else(kb.icmp(">=", k, 0)) as (then, otherwise):
                with then:
                    src = kb.mul(kb.add(kb.mul(o, length), k), inner)
                    _copy(kb, dy.ptr, src, dx.ptr, kb.mul(r, inner), inner)
                with otherwise:
                    _fill(kb, 0.0, dx.ptr, kb.mul(r, inner), inner)
        return
    lo, hi = kc.split(outer)
    with kb.loop(lo, hi, name="o") as o:
        src, dst = kb.mul(o, length), kb.mul(o, size)
        with kb.loop(0, size, name="p") as pos:
            k = _load_index(kb, table, pos)
            has = kb.icmp(">=", k, 0)
            v = kb.load(dy.ptr, kb.add(src, kb.b.select(has, k, kb.i64(0))))
            kb.store(kb.select(has, v, kb.fconst(0.0)), dx.ptr, kb.add(dst, pos))


def _source(p: int, n: int, lo: int, mode: str) -> int | None:
    """The input index padded position p (of an axis padded by `lo` before, `n` long) copies, None for a constant."""
    i = p - lo
    if 0 <= i < n:
        return i
    if mode == "constant":
        return None
    if mode == "edge":
        return min(max(i, 0), n - 1)
    j = abs(i)
    return min(j, 2 * (n - 1) - j)


@kernel("pad_grad")
def emit_pad_grad(kc: KernelContext) -> None:
    _no_block(kc)
    kb = kc.kb
    dy, dx = kc.inputs[0], kc.out
    a = kc.attrs
    top, left, bottom, right = a["pads"]
    mode = a["mode"]
    n, C, h, w = dx.dims
    OH, OW = int(dy.dims[2]), int(dy.dims[3])

    row_taps: list[list[tuple[int, float]]] = [[] for _ in range(h)]
    for p in range(OH):
        i = _source(p, h, top, mode)
        if i is not None:
            row_taps[i].append((p, 1.0))
    rows = _Taps(kb, "rows", row_taps, weighted=False)
    border = [(c, _source(c, w, left, mode)) for c in list(range(left)) + list(range(left + w, OW))]
    border = sorted(((c, j) for c, j in border if j is not None), key=lambda cj: (cj[1], cj[0]))

    lo, hi = kc.split(kb.mul(n, C, h))
    with kb.loop(lo, hi, name="item") as item:
        plane, i = kb.div(item, h), kb.rem(item, h)
        dy_plane = kb.mul(plane, OH * OW)
        out_row = kb.add(kb.mul(plane, h * w), kb.mul(i, w))

        def column_sum(col: Index, lanes: int | None):
            return rows.sum(kb, i, lambda p: kb.load_n(dy.ptr, kb.add(dy_plane, kb.mul(p, OW), col), lanes), lanes)

        def body(j0: Index, lanes: int | None) -> None:
            kb.store_n(column_sum(kb.add(j0, left), lanes), dx.ptr, kb.add(out_row, j0), lanes)

        _spans(kb, w, body)
        for c, j in border:  # after the interior: each folded column in a fixed order
            at = kb.add(out_row, j)
            kb.store(kb.fadd(kb.load(dx.ptr, at), column_sum(c, None)), dx.ptr, at)
