"""Pooling: the sliding-window pools (max_pool2d, avg_pool2d, lp_pool2d, window_reduce) and the global ones
(global_avg_pool, global_max_pool, reduce_mean), in the plain layout NCHW and the blocked NCHW16c.

Sliding windows. Every shape but the batch is static, so the geometry is worked out in Python: along each axis the
output positions whose window lies wholly inside the input ("interior") form one range, and the few before and after
it ("border") have their own static tap ranges. Padding and the ceil_mode overhang are never read: a border window
simply has fewer taps, which is what the reference's fill values amount to (-inf never wins a max; zeros add
nothing to a sum or an Lp norm). The work items are (plane, output row) pairs, split between threads; an interior row
has every kernel row as a tap (unrolled), a border row computes its tap range from the row index at run time.
Along the row:
- plain layout: interior columns go a vector of consecutive outputs at a time, the window separated: first the
  kernel rows are reduced, one vector at a time over the input span the outputs read (a few vector loads per kernel
  row, `_pieces`), then each column tap picks its lanes from those vectors with a shuffle (stride 1: a shifted
  window of two vectors; stride 2: even or odd lanes of two, one vpermt2ps). 3×3/2 max pooling costs 9 loads, about 4
  shuffles and 8 maxima per 16 outputs; nothing past the last element a window reads is ever loaded. The last
  interior columns are one more whole vector overlapping the one before (or, in rows narrower than a vector,
  narrower vectors and a scalar); border columns are scalars. Strides so large that a vector's span covers more
  than `MAX_PIECES` vectors go column by column.
- blocked layout: every output pixel is one 16-lane vector (its block of channels) and every tap one vector load;
  interior pixels go four at a time for independent dependency chains (LLVM merges the loads they share).

Divisors (avg_pool2d, PyTorch semantics) are the product of a row count and a column count: static for border columns
and interior positions, computed per border row at run time with the same rule as `AvgPool2d.divisor`. A
window_reduce `scale` [OH, OW] (a parameter, the same in both layouts) is read per output position. Each stored
value goes through the node's epilogue.

Global pools reduce each plane (plain: H·W contiguous values, as vectors with several accumulators and narrowing
tails; blocked: H·W pixels of 16 lanes, four accumulators) and split the planes between threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from llvmlite import ir

from ..builder import I32, KB, Index
from ..kernel import KernelContext, Unsupported, kernel

PIXELS = 4  # blocked interior pixels per loop iteration
MAX_PIECES = 4  # plain layout: a vector of columns reads at most this many input vectors (else: column by column)


@dataclass(frozen=True)
class Axis:
    """The sliding window along one axis: output position o reads input o·stride - pad + k·dilation, k < kernel."""

    size: int
    kernel: int
    stride: int
    dilation: int
    pad: int  # before
    pad_after: int
    out: int

    def start(self, o: int) -> int:
        return o * self.stride - self.pad

    def taps(self, o: int) -> range:
        """The taps k of output position o that read the input."""
        s, d = self.start(o), self.dilation
        lo = 0 if s >= 0 else (-s + d - 1) // d
        hi = min(self.kernel, (self.size - s + d - 1) // d) if self.size > s else 0
        return range(lo, max(lo, hi))

    def interior(self) -> tuple[int, int]:
        """[lo, hi): the output positions whose every tap reads the input (lo == hi when there are none)."""
        inside = [o for o in range(self.out) if len(self.taps(o)) == self.kernel]
        return (inside[0], inside[-1] + 1) if inside else (0, 0)

    def count(self, o: int, include_pad: bool) -> int:
        """avg_pool2d's divisor factor along this axis (`_window_counts` in graphconv/ops/pool.py)."""
        s = self.start(o)
        end = min(s + self.kernel, self.size + self.pad_after)
        return end - s if include_pad else min(end, self.size) - max(s, 0)


@dataclass
class Reduction:
    """What a pool computes: combine(acc, f(x)) over the taps (from `init`), then `root`."""

    kind: str  # "max", "sum" or "lp"
    p: float = 1.0

    def init(self, kb: KB, lanes: int | None) -> ir.Value:
        return kb.fconst(float("-inf") if self.kind == "max" else 0.0, lanes)

    def f(self, kb: KB, x: ir.Value) -> ir.Value:
        if self.kind != "lp":
            return x
        p = self.p
        if p == 1:
            return kb.abs(x)
        if p == 2:
            return kb.fmul(x, x)
        if p == 3:
            return kb.fmul(kb.abs(x), kb.fmul(x, x))
        if p == 4:
            sq = kb.fmul(x, x)
            return kb.fmul(sq, sq)
        return kb.pow(kb.abs(x), kb.like(p, x))

    def combine(self, kb: KB, acc: ir.Value | None, v: ir.Value) -> ir.Value:
        """acc combined with v; None stands for the initial value (a reduction's first tap starts it)."""
        if acc is None:
            return v
        return kb.max(acc, v) if self.kind == "max" else kb.fadd(acc, v)

    def root(self, kb: KB, v: ir.Value) -> ir.Value:
        if self.kind != "lp" or self.p == 1:
            return v
        if self.p == 2:
            return kb.sqrt(v)
        return kb.pow(v, kb.like(1.0 / self.p, v))




def _shuffle(kb: KB, v: ir.Value, lanes: list[int]) -> ir.Value:
    """The lanes `lanes` of vector v, as a vector."""
    return kb.b.shuffle_vector(v, ir.Constant(v.type, ir.Undefined),
                               ir.Constant(ir.VectorType(I32, len(lanes)), lanes))


def _concat(kb: KB, parts: list[ir.Value]) -> ir.Value:
    """The vectors `parts` (all of one width) side by side as one vector (the last repeated to a power of two)."""
    while len(parts) > 1:
        if len(parts) % 2:
            parts = parts + [parts[-1]]
        n = parts[0].type.count
        parts = [kb.b.shuffle_vector(parts[i], parts[i + 1], ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n))))
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _pieces(lanes: int, stride: int, kernel: int, dilation: int) -> list[int]:
    """Where to load vectors of `lanes` elements (offsets from a vector of columns' first input element) so that
    together they cover exactly what its taps read, [0, (lanes-1)·stride + (kernel-1)·dilation]: every `lanes`
    elements, the last vector placed to end at the last element read (nothing beyond it is read)."""
    last = (lanes - 1) * stride + (kernel - 1) * dilation  # the last element read
    offs = list(range(0, last + 1 - lanes, lanes))
    return offs + [max(0, last + 1 - lanes)]


def _pick(kb: KB, parts: list[ir.Value], offs: list[int], want: list[int]) -> ir.Value:
    """The elements at offsets `want` of the input the vectors `parts` (loaded at offsets `offs`) cover, as one
    vector: a shuffle across them (AVX-512: vpermt2ps for two; a vector taken whole costs nothing)."""
    lanes = parts[0].type.count
    for m, o in enumerate(offs):  # a whole vector as it is
        if want == list(range(o, o + lanes)):
            return parts[m]
    srcs: list[int] = []
    where = []
    for r in want:
        m = next(m for m, o in enumerate(offs) if o <= r < o + lanes)
        if m not in srcs:
            srcs.append(m)
        where.append((srcs.index(m), r - offs[m]))
    return _shuffle(kb, _concat(kb, [parts[m] for m in srcs]), [k * lanes + i for k, i in where])


def _taps_reduce(kb: KB, lo: Index, hi: Index, inits: list[ir.Value],
                 body: Callable[[Index, list[ir.Value]], list[ir.Value]]) -> list[ir.Value]:
    """vals = body(k, vals) for k in [lo, hi): unrolled in Python when the bounds are static, else a loop."""
    if isinstance(lo, int) and isinstance(hi, int):
        vals = [None] * len(inits)  # the first tap starts each reduction
        for k in range(lo, hi):
            vals = body(k, vals)
        return [init if v is None else v for v, init in zip(vals, inits)]  # (no tap at all: the initial value)
    return kb.carried_loop(lo, hi, inits, body, name="kh")


def _reduction(kc: KernelContext) -> tuple[Reduction, bool, bool | None]:
    """(what to compute, whether a scale parameter multiplies, the avg_pool2d count_include_pad or None)."""
    op, a = kc.node.op, kc.attrs
    if op == "max_pool2d":
        return Reduction("max"), False, None
    if op == "avg_pool2d":
        return Reduction("sum"), False, bool(a["count_include_pad"])
    if op == "lp_pool2d":
        return Reduction("lp", float(a["p"])), False, None
    if op == "window_reduce":
        return Reduction(a["reduce"]), a["scale"] is not False, None
    raise Unsupported(f"no pooling code for '{op}'")


@kernel("max_pool2d", "avg_pool2d", "lp_pool2d", "window_reduce")
def emit_pool(kc: KernelContext) -> None:
    kb, b = kc.kb, kc.kb.b
    x, y = kc.inputs[0], kc.out
    a = kc.attrs
    red, scaled, include_pad = _reduction(kc)
    B = kc.block or 1  # lanes per pixel: the channel block, or 1 in the plain layout
    if kc.block:
        n, planes, H, W, _ = x.dims
        OH, OW = y.dims[2], y.dims[3]
    else:
        n, planes, H, W = x.dims
        OH, OW = y.dims[2], y.dims[3]
    (KH, KW), (SH, SW) = a["kernel"], a["stride"]
    DH, DW = a.get("dilation", (1, 1))
    top, left, bottom, right = a["padding"]
    rows = Axis(H, KH, SH, DH, top, bottom, OH)
    cols = Axis(W, KW, SW, DW, left, right, OW)
    scale = kc.params["scale"].ptr if scaled else None
    avg = include_pad is not None
    vw = kb.vw

    def row(plane: Index, oh: Index, klo: Index, khi: Index, rowcount: Index) -> None:
        """Output row oh of a plane, reading kernel rows [klo, khi) (rowcount: the avg divisor's row factor)."""
        ih0 = kb.sub(kb.mul(oh, SH), top)
        xplane = kb.mul(plane, H * W * B)
        ybase = kb.add(kb.mul(plane, OH * OW * B), kb.mul(oh, OW * B))

        def xrow(kh: Index) -> ir.Value:
            return kb.ptr(x.ptr, kb.add(xplane, kb.mul(kb.add(ih0, kb.mul(kh, DH)), W * B)))

        def finish(v: ir.Value, ow: Index, lanes: int | None, colcount: int) -> None:
            """Post-process the reduction of output column(s) from ow (`lanes` of them in the plain layout) and
            store through the epilogue."""
            v = red.root(kb, v)
            if avg:
                d = kb.to_float(kb.mul(rowcount, colcount))
                v = kb.fdiv(v, kb.splat(d, v.type.count) if lanes else d)
            if scale is not None:
                at = kb.add(kb.mul(oh, OW), ow)
                if B > 1:
                    v = kb.fmul(v, kb.splat(kb.load(scale, at), B))
                else:
                    v = kb.fmul(v, kb.load_n(scale, at, lanes))
            idx = kb.add(ybase, kb.mul(ow, B))
            kb.store_n(kc.epilogue(v, idx), y.ptr, idx, lanes)

        # -- plain layout ---------------------------------------------------------------------------------------
        def scalar_col(ow: Index, kws: range, colcount: int) -> None:
            iw0 = kb.sub(kb.mul(ow, SW), left)

            def body(kh, accs):
                p = xrow(kh)
                acc = accs[0]
                for kw in kws:
                    acc = red.combine(kb, acc, red.f(kb, kb.load(p, kb.add(iw0, kw * DW))))
                return [acc]

            acc = _taps_reduce(kb, klo, khi, [red.init(kb, None)], body)[0]
            finish(acc, ow, None, colcount)

        def vector_cols(ow0: Index, lanes: int) -> None:
            """`lanes` consecutive interior columns from ow0 (every column tap reads the input). The window is
            separable: the kernel rows are reduced first, vector by vector over the input span the columns read
            (`_pieces`), then each column tap picks its lanes from those vectors with a shuffle."""
            iw0 = kb.sub(kb.mul(ow0, SW), left)
            offs = _pieces(lanes, SW, KW, DW)

            def body(kh, accs):
                p = xrow(kh)
                return [red.combine(kb, acc, red.f(kb, kb.vload(p, kb.add(iw0, o), lanes)))
                        for acc, o in zip(accs, offs)]

            cols = _taps_reduce(kb, klo, khi, [red.init(kb, lanes)] * len(offs), body)
            acc = None
            for kw in range(KW):
                acc = red.combine(kb, acc, _pick(kb, cols, offs, [j * SW + kw * DW for j in range(lanes)]))
            finish(acc, ow0, lanes, KW)

        # -- blocked layout -------------------------------------------------------------------------------------
        def pixels(ow0: Index, taps: list[range], counts: list[int]) -> None:
            """Output pixels ow0 + j (j < len(taps)), pixel j reading the column taps taps[j]."""
            iws = [kb.sub(kb.mul(kb.add(ow0, j), SW), left) for j in range(len(taps))]

            def body(kh, accs):
                p = xrow(kh)
                out = []
                for acc, iw0, kws in zip(accs, iws, taps):
                    for kw in kws:
                        v = kb.vload(p, kb.mul(kb.add(iw0, kw * DW), B), B)
                        acc = red.combine(kb, acc, red.f(kb, v))
                    out.append(acc)
                return out

            accs = _taps_reduce(kb, klo, khi, [red.init(kb, B)] * len(taps), body)
            for j, acc in enumerate(accs):
                finish(acc, kb.add(ow0, j), B, counts[j])

        lo_c, hi_c = cols.interior()
        border = [ow for ow in range(OW) if not lo_c <= ow < hi_c]

        def border_col(ow: int) -> None:
            count = cols.count(ow, include_pad) if avg else 0
            if B > 1:
                pixels(ow, [cols.taps(ow)], [count])
            else:
                scalar_col(ow, cols.taps(ow), count)

        for ow in border:
            if ow < lo_c:
                border_col(ow)
        inner = hi_c - lo_c
        if inner and B > 1:
            groups, rest = divmod(inner, PIXELS)
            with kb.loop(0, groups, name="px") as g:
                pixels(kb.add(lo_c, kb.mul(g, PIXELS)), [range(KW)] * PIXELS, [KW] * PIXELS)
            if rest:
                pixels(lo_c + groups * PIXELS, [range(KW)] * rest, [KW] * rest)
        elif inner and len(_pieces(vw, SW, KW, DW)) > MAX_PIECES:  # a gather from too many registers
            with kb.loop(lo_c, hi_c, name="ow") as ow:
                scalar_col(ow, range(KW), KW)
        elif inner:
            nvec, rest = divmod(inner, vw)
            with kb.loop(0, nvec, name="ov") as v:
                vector_cols(kb.add(lo_c, kb.mul(v, vw)), vw)
            at = lo_c + nvec * vw
            lanes = vw // 2
            if nvec and rest:  # the columns left: one more whole vector ending at the last (overlapping the one before)
                vector_cols(hi_c - vw, vw)
                rest = 0
            while rest:  # fewer columns than a vector: narrower vectors, then a scalar
                while lanes > rest:
                    lanes //= 2
                if lanes > 1:
                    vector_cols(at, lanes)
                else:
                    scalar_col(at, range(KW), KW)
                at += lanes
                rest -= lanes
        for ow in border:
            if ow >= hi_c:
                border_col(ow)

    lo_r, hi_r = rows.interior()
    total = kb.mul(n, planes, OH)
    lo, hi = kc.split(total)
    with kb.loop(lo, hi, name="item") as item:
        plane = kb.div(item, OH)
        oh = kb.rem(item, OH)

        def border_row() -> None:
            if isinstance(oh, int):  # a single output row: all static
                t = rows.taps(oh)
                row(plane, oh, t.start, t.stop, rows.count(oh, include_pad) if avg else 0)
                return
            ih0 = kb.sub(kb.mul(oh, SH), top)
            neg = kb.icmp("<", ih0, 0)
            klo = b.select(neg, kb.div(kb.sub(DH - 1, ih0), DH), kb.i64(0))
            khi = kb.imin(KH, kb.div(kb.add(kb.sub(H, ih0), DH - 1), DH))
            rowcount: Index = 0
            if avg:
                if include_pad:
                    rowcount = kb.sub(kb.imin(kb.add(ih0, KH), H + bottom), ih0)
                else:
                    rowcount = kb.sub(kb.imin(kb.add(ih0, KH), H), kb.imax(ih0, 0))
            row(plane, oh, klo, khi, rowcount)

        if lo_r >= hi_r or (isinstance(oh, int) and not lo_r <= oh < hi_r):
            border_row()
        elif lo_r == 0 and hi_r == OH or isinstance(oh, int):
            row(plane, oh, 0, KH, KH)
        else:
            inside = b.and_(kb.icmp(">=", oh, lo_r), kb.icmp("<", oh, hi_r))
            with b.if_else(inside) as (then, otherwise):
                with then:
                    row(plane, oh, 0, KH, KH)
                with otherwise:
                    border_row()


# -- global pools -------------------------------------------------------------------------------------------------

def _reduce_flat(kb: KB, ptr: ir.Value, count: int, red: Reduction) -> ir.Value:
    """The reduction of ptr[0:count] (static count) to a scalar: vectors with four accumulators, then narrower
    vectors and a scalar for the tail."""
    vw = kb.vw
    uf = 4
    nvec = count // vw
    niter = nvec // uf

    def body(i, accs):
        base = kb.mul(i, uf * vw)
        return [red.combine(kb, acc, kb.vload(ptr, kb.add(base, u * vw))) for u, acc in enumerate(accs)]

    accs = kb.carried_loop(0, niter, [red.init(kb, vw)] * uf, body, name="v")
    for j, v in enumerate(range(niter * uf, nvec)):
        accs[j % uf] = red.combine(kb, accs[j % uf], kb.vload(ptr, v * vw))
    used = min(uf, nvec)
    acc = accs[0]
    for u in range(1, used):
        acc = red.combine(kb, acc, accs[u])
    horizontal = kb.hmax if red.kind == "max" else kb.hsum
    total = horizontal(acc) if nvec else red.init(kb, None)
    for off, lanes in kb.tail_chunks(nvec * vw, count):
        part = kb.load_n(ptr, off, lanes)
        total = red.combine(kb, total, horizontal(part) if lanes else part)
    return total


@kernel("global_avg_pool", "global_max_pool", "reduce_mean")
def emit_global_pool(kc: KernelContext) -> None:
    kb = kc.kb
    x, y = kc.inputs[0], kc.out
    red = Reduction("max" if kc.node.op == "global_max_pool" else "sum")
    mean = red.kind == "sum"
    if kc.block:
        B = kc.block
        n, cb, H, W, _ = x.dims
        hw = H * W
        lo, hi = kc.split(kb.mul(n, cb))
        with kb.loop(lo, hi, name="plane") as plane:
            base = kb.ptr(x.ptr, kb.mul(plane, hw * B))
            uf = min(4, hw)
            niter = hw // uf

            def body(i, accs):
                at = kb.mul(i, uf * B)
                return [red.combine(kb, acc, kb.vload(base, kb.add(at, u * B), B)) for u, acc in enumerate(accs)]

            accs = kb.carried_loop(0, niter, [red.init(kb, B)] * uf, body, name="px")
            for j, p in enumerate(range(niter * uf, hw)):
                accs[j % uf] = red.combine(kb, accs[j % uf], kb.vload(base, p * B, B))
            acc = accs[0]
            for u in range(1, uf):
                acc = red.combine(kb, acc, accs[u])
            if mean:
                acc = kb.fdiv(acc, kb.fconst(float(hw), B))
            idx = kb.mul(plane, B)
            kb.vstore(kc.epilogue(acc, idx), y.ptr, idx)
        return
    n, c, H, W = x.dims
    hw = H * W
    lo, hi = kc.split(kb.mul(n, c))
    with kb.loop(lo, hi, name="plane") as plane:
        v = _reduce_flat(kb, kb.ptr(x.ptr, kb.mul(plane, hw)), hw, red)
        if mean:
            v = kb.fdiv(v, kb.fconst(float(hw)))
        kb.store(kc.epilogue(v, plane), y.ptr, plane)
