"""Gradient kernels of the pools, upsample and lrn (graphconv/ops/grad/pool.py, grad/resize.py, grad/lrn.py), in
the plain NCHW layout (training graphs are never re-laid out).

Every kernel is deterministic and gives the same bits for every thread count: each element of dx is written by one
thread, and the sum it is made of is added up in an order fixed when the kernel is generated.

sum_window_grad, avg_window_grad, lp_window_grad (gathers). The work items are the rows (plane, ih) of dx, split
between threads. Every shape but the batch is static, so for each input row ih the output rows whose windows read
it are listed in Python (a table [H, R] of window rows, R the most any row has, with a count per row). A row of dx is
then made in two separable steps:
1. rows: t[ow] = Σ over the listed window rows oh of dy[oh, ow] (avg: times 1/rowcount(oh), then times
   1/colcount(ow)), vectors of output columns at a time, the R taps unrolled (a tap beyond the row's count is masked
   off with a select, so no branch);
2. columns: t is written "stuffed" into a private row (t[ow] at position ow·stride, zeros between: stride 1 is a
   plain store, a larger stride interleaves zeros with a shuffle), padded with (kernel-1)·dilation zeros on the
   left; then dx[iw] = Σ_kw row[iw + left - kw·dilation] is a vector of dx columns per KW unaligned loads.
Padding and the ceil_mode overhang are never written (only real input positions are computed); avg divisors are
the forward op's (count_include_pad, ceil_mode); lp's dy·y^(1-p) is formed as dy is read and |x|^(p-1)·sign(x)
multiplies the stored value.

max_window_grad (a scatter that one thread owns). The first maximum of a window is where all its gradient goes, so
each plane (n, c) belongs to one thread: it zeroes its dx plane, then finds every window's first maximum (strict >
in row-major tap order, as numpy's argmax; a window whose first tap is padding starts with "no position", so when
no real value beats -inf nothing reaches the input, like the padding winning in the reference) and adds dy there,
windows in row-major order. Interior windows go a vector of consecutive windows at a time (the forward kernel's
loads and shuffles, `pool._pieces`/`pool._pick`, with the winning tap's position carried in an integer vector;
strides too wide for that go window by window), border windows one at a time with static tap ranges; the additions
themselves are scalar. A gather would find each window's maximum once per input position it covers; the scatter
finds it once and is as deterministic, the plane being one thread's.

global_avg_grad: dy/(H·W) broadcast over each plane (planes split between threads). Its fusion kind is
broadcast, so with H·W = 1 the memory planner may give dx dy's memory: each plane reads its value first.

upsample_grad: dx = A_hᵀ·dy·A_w, rows (plane, i) split between threads. The nonzeros of each A_hᵀ row (which dy
rows, with which weights) are a table; their weighted sum is one row t of OW values in a private buffer. Then the
columns: when OW is a multiple s of W, the dx columns j whose A_w column is the common pattern (the same offsets
q - s·j and weights: all but a few border columns, for nearest and for bilinear without align_corners) go a vector
at a time (narrower vectors for a wide pattern), the pattern's taps picked out of a few loads of t with shuffles;
every other column is a scalar sum over its own static taps (a runtime loop over a table when there are many).

lrn_grad: per (sample, vector of pixels) unit: one pass over the channels keeps d^-beta and dy·x·d^(-beta-1) of
every channel in a private buffer, a second forms dx from the transposed window of the latter.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from llvmlite import ir

from ..builder import I32, KB, Index
from ..kernel import KernelContext, Unsupported, kernel
from .data import _fill, _load_index, const_table
from .norm import _pow_neg, _vec_units
from .pool import MAX_PIECES, Axis, _pick, _pieces

UNROLL_COLUMNS = 64  # upsample_grad: border columns up to this many are unrolled (static taps), else a table loop


def _no_block(kc: KernelContext) -> None:
    if kc.block:
        raise Unsupported(f"{kc.node.op} in the blocked layout")


def _spans(kb: KB, total: int, body: Callable[[Index, int | None], None], overlap: bool = True,
           width: int | None = None) -> None:
    """body(offset, lanes) over [0, total): whole vectors of `width` lanes (default: the vector width; a loop), then,
    when total is at least a vector and `overlap` allows it (the body must then be idempotent), one more whole
    vector ending at total; otherwise narrower vectors and scalars (lanes None)."""
    vw = width or kb.vw
    nvec, rest = divmod(total, vw)
    if nvec:
        with kb.loop(0, nvec, name="sv") as v:
            body(kb.mul(v, vw), vw)
    if rest and nvec and overlap:
        body(total - vw, vw)
        return
    chunks, lanes, off = [], vw // 2, nvec * vw  # as KB.tail_chunks, for vectors of vw
    while off < total:
        while lanes > 1 and total - off < lanes:
            lanes //= 2
        chunks.append((off, lanes if lanes > 1 else None))
        off += lanes
    for off, lanes in chunks:
        body(off, lanes)


def _shuffle2(kb: KB, a: ir.Value, c: ir.Value, mask: list[int]) -> ir.Value:
    return kb.b.shuffle_vector(a, c, ir.Constant(ir.VectorType(I32, len(mask)), mask))


def _geometry(kc: KernelContext, dx_hw: tuple[int, int], dy_hw: tuple[int, int]) -> tuple[Axis, Axis]:
    a = kc.attrs
    (KH, KW), (SH, SW) = a["kernel"], a["stride"]
    DH, DW = a.get("dilation", (1, 1))
    top, left, bottom, right = a["padding"]
    (H, W), (OH, OW) = dx_hw, dy_hw
    return Axis(H, KH, SH, DH, top, bottom, OH), Axis(W, KW, SW, DW, left, right, OW)


def _readers(ax: Axis) -> list[list[int]]:
    """For each input position i along an axis, the output positions whose window reads it (ascending)."""
    out: list[list[int]] = [[] for _ in range(ax.size)]
    for o in range(ax.out):
        for k in range(ax.kernel):
            i = o * ax.stride - ax.pad + k * ax.dilation
            if 0 <= i < ax.size:
                out[i].append(o)
    return out


class _Taps:
    """A static table of taps per position (a list of (source index, weight) for each of `count` positions),
    padded to R taps a position: `sum(kb, pos, load)` adds load(source, weight) over the taps of runtime position
    `pos` (R unrolled, taps beyond the position's count masked off)."""

    def __init__(self, kb: KB, name: str, taps: list[list[tuple[int, float]]], weighted: bool):
        self.R = max((len(t) for t in taps), default=0)
        self.full = all(len(t) == self.R for t in taps)
        self.weighted = weighted
        R = max(self.R, 1)
        idx = np.zeros((len(taps), R), np.int64)
        wts = np.zeros((len(taps), R))
        for i, t in enumerate(taps):
            for r, (s, w) in enumerate(t):
                idx[i, r], wts[i, r] = s, w
        self.idx = const_table(kb, f"{name}_idx", I32, idx.reshape(-1))
        self.wts = const_table(kb, f"{name}_w", kb.ft, wts.reshape(-1)) if weighted else None
        self.cnt = None if self.full else const_table(kb, f"{name}_n", I32, [len(t) for t in taps])

    def sum(self, kb: KB, pos: Index, load: Callable[[Index], ir.Value], lanes: int | None) -> ir.Value:
        """Σ_r weight_r · load(source_r) (vectors of `lanes` or scalars); zero without taps."""
        acc = kb.fconst(0.0, lanes)
        if self.R == 0:
            return acc
        cnt = None if self.full else _load_index(kb, self.cnt, pos)
        first = True
        for r in range(self.R):
            e = kb.add(kb.mul(pos, self.R), r)
            v = load(_load_index(kb, self.idx, e))
            if self.weighted:
                w = kb.load(self.wts, e)
                v = kb.fmul(v, kb.splat(w, lanes) if lanes else w)
            new = v if first and self.full else kb.fadd(acc, v)
            acc = new if cnt is None else kb.select(kb.icmp("<", r, cnt), new, acc)
            first = False
        return acc


# -- sum, avg and lp window gradients: gathers ----------------------------------------------------------------------

def _lp_dy(kb: KB, dy: ir.Value, y: ir.Value, p: float) -> ir.Value:
    """dy·y^(1-p) where y > 0, else 0."""
    zero = kb.like(0.0, dy)
    if p == 1:
        g = dy
    elif p == 2:
        g = kb.fdiv(dy, y)
    elif p == 3:
        g = kb.fdiv(dy, kb.fmul(y, y))
    else:
        g = kb.fmul(dy, kb.pow(y, kb.like(1.0 - p, y)))
    return kb.select(kb.fcmp(">", y, zero), g, zero)


def _lp_factor(kb: KB, x: ir.Value, p: float) -> ir.Value:
    """|x|^(p-1)·sign(x), 0 where x is 0."""
    zero, one = kb.like(0.0, x), kb.like(1.0, x)
    if p == 2:
        return x
    if p == 3:
        return kb.fmul(x, kb.abs(x))
    if p == 1:
        f = kb.intrinsic("copysign", [one, x])
    else:
        f = kb.intrinsic("copysign", [kb.pow(kb.abs(x), kb.like(p - 1.0, x)), x])
    return kb.select(kb.fcmp(">", kb.abs(x), zero), f, zero)


@kernel("sum_window_grad", "avg_window_grad", "lp_window_grad")
def emit_window_spread(kc: KernelContext) -> None:
    _no_block(kc)
    kb = kc.kb
    op, a = kc.node.op, kc.attrs
    dy, dx = kc.inputs[0], kc.out
    n, C, H, W = dx.dims
    OH, OW = int(dy.dims[2]), int(dy.dims[3])
    rows, cols = _geometry(kc, (H, W), (OH, OW))
    avg, lp = op == "avg_window_grad", op == "lp_window_grad"
    p = float(a["p"]) if lp else 1.0
    x = kc.inputs[1] if lp else None
    y = kc.inputs[2] if lp else None
    include_pad = bool(a.get("count_include_pad", True))
    SW, DW, KW, left = cols.stride, cols.dilation, cols.kernel, cols.pad

    # step 1: which window rows read each input row (avg: with 1/rowcount as the weight)
    readers = _readers(rows)
    taps = [[(oh, 1.0 / rows.count(oh, include_pad) if avg else 1.0) for oh in r] for r in readers]
    table = _Taps(kb, "rows", taps, weighted=avg)
    colscale = const_table(kb, "cs", kb.ft, [1.0 / cols.count(ow, include_pad) for ow in range(OW)]) if avg else None

    # step 2: the stuffed row, M zeros before position 0
    M = (KW - 1) * DW
    L = M + max(OW * SW, left + W)
    row = kc.thread_scratch(L * kb.ft_bytes)
    _fill(kb, 0.0, row, 0, L)  # positions never stored stay zero for the whole kernel

    lo, hi = kc.split(kb.mul(n, C, H))
    with kb.loop(lo, hi, name="item") as item:
        plane, ih = kb.div(item, H), kb.rem(item, H)
        dy_plane = kb.mul(plane, OH * OW)

        def gather_rows(ow0: Index, lanes: int | None) -> None:
            def load(oh):
                at = kb.add(dy_plane, kb.mul(oh, OW), ow0)
                v = kb.load_n(dy.ptr, at, lanes)
                return _lp_dy(kb, v, kb.load_n(y.ptr, at, lanes), p) if lp else v

            t = table.sum(kb, ih, load, lanes)
            if avg:
                t = kb.fmul(t, kb.load_n(colscale, ow0, lanes))
            at = kb.add(M, kb.mul(ow0, SW))
            if SW == 1 or lanes is None:
                kb.store_n(t, row, at, lanes)
                return
            zero = kb.fconst(0.0, lanes)
            for m in range(SW):  # lanes of positions m·lanes.. : t where the position is a multiple of SW
                mask = [(q // SW if q % SW == 0 else lanes) for q in range(m * lanes, (m + 1) * lanes)]
                kb.vstore(_shuffle2(kb, t, zero, mask), row, kb.add(at, m * lanes))

        _spans(kb, OW, gather_rows)
        x_row = kb.add(kb.mul(plane, H * W), kb.mul(ih, W))

        def gather_cols(iw0: Index, lanes: int | None) -> None:
            acc = None
            for kw in range(KW):
                v = kb.load_n(row, kb.add(M + left - kw * DW, iw0), lanes)
                acc = v if acc is None else kb.fadd(acc, v)
            at = kb.add(x_row, iw0)
            if lp:
                acc = kb.fmul(acc, _lp_factor(kb, kb.load_n(x.ptr, at, lanes), p))
            kb.store_n(acc, dx.ptr, at, lanes)

        _spans(kb, W, gather_cols)


# -- max window gradient: each plane's first maxima, scattered by its one thread ------------------------------------

@kernel("max_window_grad")
def emit_max_window_grad(kc: KernelContext) -> None:
    _no_block(kc)
    kb, b = kc.kb, kc.kb.b
    (dy, x), dx = kc.inputs, kc.out
    n, C, H, W = x.dims
    OH, OW = int(dy.dims[2]), int(dy.dims[3])
    rows, cols = _geometry(kc, (H, W), (OH, OW))
    KH, SH, DH, top = rows.kernel, rows.stride, rows.dilation, rows.pad
    KW, SW, DW, left = cols.kernel, cols.stride, cols.dilation, cols.pad
    vw = kb.vw
    neg_inf = float("-inf")

    lo, hi = kc.split(kb.mul(n, C))
    with kb.loop(lo, hi, name="plane") as plane:
        xp = kb.mul(plane, H * W)
        dyp = kb.mul(plane, OH * OW)
        _fill(kb, 0.0, dx.ptr, xp, H * W)

        def add_to(pos: Index, g: ir.Value, maybe_none: bool) -> None:
            """dx[plane][pos] += g; pos -1 (no position) adds nothing when `maybe_none`."""
            def add() -> None:
                at = kb.add(xp, pos)
                kb.store(kb.fadd(kb.load(dx.ptr, at), g), dx.ptr, at)

            if maybe_none:
                with kb.if_(kb.icmp(">=", pos, 0)):
                    add()
            else:
                add()

        def scalar_window(oh: Index, ow: Index, khs: range, kws: range) -> None:
            ih0 = kb.sub(kb.mul(oh, SH), top)
            iw0 = kb.sub(kb.mul(ow, SW), left)
            first_real = khs.start == 0 and kws.start == 0
            best = kb.fconst(neg_inf)
            where: Index = kb.add(kb.mul(ih0, W), iw0) if first_real else -1
            where = kb.i64(where)
            for kh in khs:
                rowat = kb.mul(kb.add(ih0, kh * DH), W)
                for kw in kws:
                    pos = kb.add(rowat, iw0, kw * DW)
                    v = kb.load(x.ptr, kb.add(xp, pos))
                    gt = kb.fcmp(">", v, best)
                    best = kb.select(gt, v, best)
                    where = b.select(gt, kb.i64(pos), where)
            g = kb.load(dy.ptr, kb.add(dyp, kb.mul(oh, OW), ow))
            add_to(where, g, not first_real)

        def vector_windows(oh: Index, ow0: Index, lanes: int, khs: range) -> None:
            """`lanes` consecutive interior windows (every column tap reads the input) from ow0."""
            ih0 = kb.sub(kb.mul(oh, SH), top)
            iw0 = kb.sub(kb.mul(ow0, SW), left)
            offs = _pieces(lanes, SW, KW, DW)
            ivt = ir.VectorType(I32, lanes)
            best = kb.fconst(neg_inf, lanes)
            first_real = khs.start == 0
            # positions relative to (ih0, iw0), as int32 lanes
            where = ir.Constant(ivt, [j * SW if first_real else -1 for j in range(lanes)])
            for kh in khs:
                rowat = kb.add(xp, kb.mul(kb.add(ih0, kh * DH), W), iw0)
                parts = [kb.vload(x.ptr, kb.add(rowat, o), lanes) for o in offs]
                for kw in range(KW):
                    v = _pick(kb, parts, offs, [j * SW + kw * DW for j in range(lanes)])
                    gt = kb.fcmp(">", v, best)
                    best = kb.select(gt, v, best)
                    rel = ir.Constant(ivt, [kh * DH * W + j * SW + kw * DW for j in range(lanes)])
                    where = b.select(gt, rel, where)
            base = kb.add(kb.mul(ih0, W), iw0)
            g = kb.vload(dy.ptr, kb.add(dyp, kb.mul(oh, OW), ow0), lanes)
            for j in range(lanes):
                rel = b.sext(kb.lane(where, j), ir.IntType(64))
                if first_real:
                    add_to(kb.add(base, rel), kb.lane(g, j), False)
                else:
                    with kb.if_(kb.icmp(">=", rel, 0)):
                        add_to(kb.add(base, rel), kb.lane(g, j), False)

        lo_c, hi_c = cols.interior()

        def vector_ok(lanes: int) -> bool:
            return len(_pieces(lanes, SW, KW, DW)) <= MAX_PIECES

        def window_row(oh: Index, khs: range) -> None:
            """Every window of output row oh, in column order (each window's gradient added once)."""
            for ow in range(0, lo_c):
                scalar_window(oh, ow, khs, cols.taps(ow))
            inner = hi_c - lo_c
            if inner and not vector_ok(vw):  # strides too large for shuffles: window by window
                with kb.loop(lo_c, hi_c, name="ow") as ow:
                    scalar_window(oh, ow, khs, range(KW))
                inner = 0
            nvec = inner // vw
            if nvec:
                with kb.loop(0, nvec, name="ov") as v:
                    vector_windows(oh, kb.add(lo_c, kb.mul(v, vw)), vw, khs)
            for off, lanes in kb.tail_chunks(lo_c + nvec * vw, lo_c + inner):  # (no overlap: each adds once)
                if lanes and vector_ok(lanes):
                    vector_windows(oh, off, lanes, khs)
                else:
                    for ow in range(off, off + (lanes or 1)):
                        scalar_window(oh, ow, khs, range(KW))
            for ow in range(hi_c, OW):
                scalar_window(oh, ow, khs, cols.taps(ow))

        lo_r, hi_r = rows.interior()
        for oh in range(0, lo_r):
            window_row(oh, rows.taps(oh))
        if hi_r > lo_r:
            with kb.loop(lo_r, hi_r, name="oh") as oh:
                window_row(oh, range(KH))
        for oh in range(max(hi_r, lo_r), OH):
            window_row(oh, rows.taps(oh))


# -- global average --------------------------------------------------------------------------------------------------

@kernel("global_avg_grad")
def emit_global_avg_grad(kc: KernelContext) -> None:
    _no_block(kc)
    kb = kc.kb
    dy, dx = kc.inputs[0], kc.out
    n, C, H, W = dx.dims
    hw = H * W
    lo, hi = kc.split(kb.mul(n, C))
    with kb.loop(lo, hi, name="plane") as plane:
        v = kb.fdiv(kb.load(dy.ptr, plane), kb.fconst(float(hw)))
        base = kb.mul(plane, hw)
        vec = kb.splat(v) if hw >= kb.vw else None

        def body(off, lanes):
            kb.store_n(vec if lanes == kb.vw else (kb.splat(v, lanes) if lanes else v), dx.ptr, kb.add(base, off),
                       lanes)

        _spans(kb, hw, body)


# -- upsample --------------------------------------------------------------------------------------------------------

def _column_pattern(a_w: np.ndarray, s: int) -> tuple[list[tuple[int, float]], int, int] | None:
    """For A_w [OW, W] with OW = s·W: the taps (q - s·j, weight) most columns j share and the longest run [lo, hi)
    of consecutive columns that have exactly them; None if no run is worth vectors."""
    W = a_w.shape[1]
    pats, keys = [], []
    for j in range(W):
        qs = np.nonzero(a_w[:, j])[0]
        pats.append([(int(q) - s * j, float(a_w[q, j])) for q in qs])
        # bilinear weights computed per position differ in their last bits: equal to 12 digits is the same tap
        keys.append(tuple((c, round(w, 12)) for c, w in pats[-1]))
    lo = hi = 0
    j = 0
    while j < W:
        k = j
        while k < W and keys[k] == keys[j]:
            k += 1
        if k - j > hi - lo and keys[j]:
            lo, hi = j, k
        j = k
    if hi - lo < 2:
        return None
    return pats[(lo + hi) // 2], lo, hi


@kernel("upsample_grad")
def emit_upsample_grad(kc: KernelContext) -> None:
    from ...ops import REGISTRY

    _no_block(kc)
    kb = kc.kb
    dy, dx = kc.inputs[0], kc.out
    n, C, H, W = dx.dims
    OH, OW = int(dy.dims[2]), int(dy.dims[3])
    a_ht, a_w = REGISTRY["upsample_grad"].matrices(kc.attrs, (OH, OW))  # [H, OH], [OW, W]
    vw = kb.vw

    row_taps = [[(int(o), float(a_ht[i, o])) for o in np.nonzero(a_ht[i])[0]] for i in range(H)]
    rows = _Taps(kb, "rows", row_taps, weighted=any(w != 1.0 for t in row_taps for _, w in t))
    col_taps = [[(int(q), float(a_w[q, j])) for q in np.nonzero(a_w[:, j])[0]] for j in range(W)]
    col_weighted = any(w != 1.0 for t in col_taps for _, w in t)

    pattern = _column_pattern(a_w, OW // W) if OW % W == 0 else None
    width = vw
    if pattern is not None:
        pat, lo_j, hi_j = pattern
        s = OW // W
        cmin = min(c for c, _ in pat)
        span = max(c for c, _ in pat) - cmin + 1
        # the widest vectors of columns whose taps a few loads cover (a wide tap pattern: narrower vectors)
        while width > 4 and len(_pieces(width, s, span, 1)) > MAX_PIECES:
            width //= 2
        if len(_pieces(min(width, hi_j - lo_j), s, span, 1)) > MAX_PIECES:
            pattern = None
    if pattern is None:
        lo_j = hi_j = 0
    border = [j for j in range(W) if not lo_j <= j < hi_j]
    loop_border = len(border) > UNROLL_COLUMNS
    if loop_border:  # every column through a table (border == all columns here: no pattern)
        cols = _Taps(kb, "cols", col_taps, weighted=col_weighted)

    t = kc.thread_scratch(OW * kb.ft_bytes)
    lo, hi = kc.split(kb.mul(n, C, H))
    with kb.loop(lo, hi, name="item") as item:
        plane, i = kb.div(item, H), kb.rem(item, H)
        dy_plane = kb.mul(plane, OH * OW)

        def gather_rows(q0: Index, lanes: int | None) -> None:
            v = rows.sum(kb, i, lambda o: kb.load_n(dy.ptr, kb.add(dy_plane, kb.mul(o, OW), q0), lanes), lanes)
            kb.store_n(v, t, q0, lanes)

        _spans(kb, OW, gather_rows)
        out_row = kb.add(kb.mul(plane, H * W), kb.mul(i, W))

        def weighted(v: ir.Value, w: float) -> ir.Value:
            return v if w == 1.0 else kb.fmul(v, kb.like(w, v))

        def scalar_col(j: int) -> None:
            acc = None
            for q, w in col_taps[j]:
                v = weighted(kb.load(t, q), w)
                acc = v if acc is None else kb.fadd(acc, v)
            kb.store(acc if acc is not None else kb.fconst(0.0), dx.ptr, kb.add(out_row, j))

        def vector_cols(j0: Index, lanes: int | None) -> None:
            j0 = kb.add(j0, lo_j)
            if lanes is None:
                acc = None
                for c, w in pat:
                    v = weighted(kb.load(t, kb.add(kb.mul(j0, s), c)), w)
                    acc = v if acc is None else kb.fadd(acc, v)
                kb.store(acc, dx.ptr, kb.add(out_row, j0))
                return
            offs = _pieces(lanes, s, span, 1)
            base = kb.add(kb.mul(j0, s), cmin)
            parts = [kb.vload(t, kb.add(base, o), lanes) for o in offs]
            acc = None
            for c, w in pat:
                v = weighted(_pick(kb, parts, offs, [jj * s + c - cmin for jj in range(lanes)]), w)
                acc = v if acc is None else kb.fadd(acc, v)
            kb.vstore(acc, dx.ptr, kb.add(out_row, j0))

        if loop_border:
            with kb.loop(0, W, name="j") as j:
                v = cols.sum(kb, j, lambda q: kb.load(t, q), None)
                kb.store(v, dx.ptr, kb.add(out_row, j))
        else:
            for j in border:
                if j < lo_j:
                    scalar_col(j)
            if hi_j > lo_j:
                _spans(kb, hi_j - lo_j, vector_cols, width=width)
            for j in border:
                if j >= hi_j:
                    scalar_col(j)


# -- lrn -------------------------------------------------------------------------------------------------------------

@kernel("lrn_grad")
def emit_lrn_grad(kc: KernelContext) -> None:
    """dx_j = dy_j·d_j^-beta - 2·alpha·beta/size · x_j · Σ_{c ∈ j-after..j+before} dy_c·x_c·d_c^(-beta-1), per
    (sample, vector of pixels): the first pass stores d^-beta and dy·x·d^(-beta-1) per channel in a private buffer."""
    _no_block(kc)
    kb = kc.kb
    (dy, x), dx = kc.inputs, kc.out
    a = kc.attrs
    size, alpha, beta, bias = a["size"], a["alpha"], a["beta"], a["bias"]
    before = (size - 1) // 2
    after = size - 1 - before
    n, C, H, W = x.dims
    P = int(H) * int(W)
    vw = kb.vw
    scale = alpha / size
    coef = 2.0 * alpha * beta / size
    pbuf = kc.thread_scratch(C * vw * kb.ft_bytes)
    ubuf = kc.thread_scratch(C * vw * kb.ft_bytes)

    def unit(s: Index, j: Index, lanes: int | None) -> None:
        base = kb.add(kb.mul(s, C * P), j)
        ty = kb.vtype(lanes) if lanes else kb.ft
        acc = kb.alloca(ty, "sq")
        with kb.loop(0, C, name="c") as c:
            lo_c = kb.imax(kb.sub(c, before), 0)
            hi_c = kb.imin(kb.add(c, after + 1), C)
            kb.b.store(kb.fconst(0.0, lanes), acc)
            with kb.loop(lo_c, hi_c, name="cw") as cw:
                v = kb.load_n(x.ptr, kb.add(base, kb.mul(cw, P)), lanes)
                kb.b.store(kb.fma(v, v, kb.b.load(acc)), acc)
            d = kb.fma(kb.b.load(acc), kb.fconst(scale, lanes), kb.fconst(bias, lanes))
            pw = _pow_neg(kb, d, beta)
            at = kb.add(base, kb.mul(c, P))
            xv, gv = kb.load_n(x.ptr, at, lanes), kb.load_n(dy.ptr, at, lanes)
            kb.store_n(pw, pbuf, kb.mul(c, vw), lanes)
            kb.store_n(kb.fdiv(kb.fmul(kb.fmul(gv, xv), pw), d), ubuf, kb.mul(c, vw), lanes)
        with kb.loop(0, C, name="c") as c:
            lo_c = kb.imax(kb.sub(c, after), 0)
            hi_c = kb.imin(kb.add(c, before + 1), C)
            kb.b.store(kb.fconst(0.0, lanes), acc)
            with kb.loop(lo_c, hi_c, name="cw") as cw:
                kb.b.store(kb.fadd(kb.b.load(acc), kb.load_n(ubuf, kb.mul(cw, vw), lanes)), acc)
            at = kb.add(base, kb.mul(c, P))
            xv, gv = kb.load_n(x.ptr, at, lanes), kb.load_n(dy.ptr, at, lanes)
            first = kb.fmul(gv, kb.load_n(pbuf, kb.mul(c, vw), lanes))
            kb.store_n(kb.fsub(first, kb.fmul(kb.fmul(xv, kb.b.load(acc)), kb.fconst(coef, lanes))), dx.ptr, at,
                       lanes)

    _vec_units(kc, n, P, unit)
