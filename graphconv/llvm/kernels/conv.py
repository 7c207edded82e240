"""Convolutions: conv2d (plain NCHW and blocked NCHW16c), channel_matmul (plain and blocked), conv_transpose2d.

Every direct convolution here is register-blocked the same way (`_Direct`): a tile of T output columns of one output
row times B vectors of output channels lives in B·T vector accumulators. For each reduction step (an input channel,
or one lane of a block of 16 input channels) the B·kw weight vectors of the kernel row are loaded once, then each
distinct input element the tile reads is broadcast once and multiplied into every (column, kernel column) pair that
reads it, so at most the accumulators, the weights and an input or two are live: `_choose_tile` picks (B, T) to fit
the 32 vector registers of AVX-512. The T columns, the kernel width and a few lanes of an input block are unrolled
in Python; the kernel rows and the reduction are loops.

Borders: every output row is split into tiles (`_row_tiles`). A tile whose columns read only in-range inputs for
every kernel tap is "interior": consecutive interior tiles run in a loop. The other tiles (at the left and right
borders, and a short last tile) are emitted with static columns, so which kernel columns each output column reads
is decided in Python: out-of-range taps are simply not emitted. Out-of-range kernel rows are skipped by a branch per
kernel row (outside the reduction loop).

- blocked conv2d (groups 1): x [N, C/16, H, W, 16], weight OIHW16i16o; the reduction is (input block, lane).
- blocked depthwise: the same tile with vector inputs (one FMA per tap and column, no broadcast).
- plain conv2d: the weight re-packed at build time to [G, ceil(O_g/V), C_g, kh, kw, V] (zero-padded output
  channels, flipped for flip=true); outputs scattered to NCHW (V scalar stores per pixel and vector). When a group
  has few output channels (depthwise and most grouped convolutions), vectors run along the output row instead
  (`_emit_width`).
- channel_matmul plain: a GEMM per sample vectorized along the pixels (`_emit_gemm`); blocked: the blocked 1×1
  tile over the flattened pixels.
- conv_transpose2d: a gather per output pixel, vectorized over output channels.

Threads split the (sample, output-channel group, output row) items (`KernelContext.split`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from llvmlite import ir

from ..builder import I32, KB, Index
from ..kernel import KernelContext, Unsupported, kernel, packer

BLOCK = 16

# Tile choices can be forced (benchmarking): {"blocked": (B, T), "plain": (B, T), "dw": T, "unroll": lanes}
TILE_OVERRIDE: dict[str, object] = {}
LANE_UNROLL = 4  # lanes of an input block unrolled per iteration of the blocked reduction loop


# -- packers (run once when the model is built) ---------------------------------------------------------------------

@packer("conv_oc_vectors")
def pack_conv_oc(w: np.ndarray, *, groups: int, vw: int, flip: bool = False) -> np.ndarray:
    """[O, C_g, kh, kw] -> [G, ceil(O_g/vw), C_g, kh, kw, vw]: vw output channels side by side, zero-padded."""
    w = np.asarray(w)
    o, cg, kh, kw = w.shape
    og = o // groups
    if flip:
        w = w[:, :, ::-1, ::-1]
    nv = -(-og // vw)
    wg = w.reshape(groups, og, cg, kh, kw)
    out = np.zeros((groups, nv * vw, cg, kh, kw), dtype=w.dtype)
    out[:, :og] = wg
    return np.ascontiguousarray(out.reshape(groups, nv, vw, cg, kh, kw).transpose(0, 1, 3, 4, 5, 2))


@packer("conv_oc_bias")
def pack_conv_bias(b: np.ndarray, *, groups: int, vw: int) -> np.ndarray:
    """[O] -> [G, ceil(O_g/vw)·vw], zero-padded like the weight."""
    b = np.asarray(b)
    og = b.shape[0] // groups
    nv = -(-og // vw)
    out = np.zeros((groups, nv * vw), dtype=b.dtype)
    out[:, :og] = b.reshape(groups, og)
    return out


@packer("matrix_as_conv")
def pack_matrix_as_conv(w: np.ndarray, *, vw: int) -> np.ndarray:
    """A channel matmul's [U, C] weight as a 1×1 convolution's, packed by conv_oc_vectors."""
    w = np.asarray(w)
    return pack_conv_oc(w.reshape(w.shape[0], w.shape[1], 1, 1), groups=1, vw=vw)


@packer("gemm_rows")
def pack_gemm_rows(w: np.ndarray, *, rows: int) -> np.ndarray:
    """[U, C] -> [ceil(U/rows), C, rows]: the `rows` weights of one input channel side by side (zero-padded)."""
    w = np.asarray(w)
    u, c = w.shape
    nt = -(-u // rows)
    out = np.zeros((nt * rows, c), dtype=w.dtype)
    out[:u] = w
    return np.ascontiguousarray(out.reshape(nt, rows, c).transpose(0, 2, 1))


@packer("transpose_oc_vectors")
def pack_transpose_oc(w: np.ndarray, *, groups: int, vw: int) -> np.ndarray:
    """conv_transpose2d's [C, O_g, kh, kw] -> [G, ceil(O_g/vw), C_g, kh, kw, vw]."""
    w = np.asarray(w)
    c, og, kh, kw = w.shape
    cg = c // groups
    nv = -(-og // vw)
    out = np.zeros((groups, cg, nv * vw, kh, kw), dtype=w.dtype)
    out[:, :, :og] = w.reshape(groups, cg, og, kh, kw)
    return np.ascontiguousarray(out.reshape(groups, cg, nv, vw, kh, kw).transpose(0, 2, 1, 4, 5, 3))


# -- geometry -------------------------------------------------------------------------------------------------------

def _coords(kb: KB, idx: Index, dims: list[Index]) -> list[Index]:
    """The coordinates of flat `idx` in a row-major index space of `dims` (the first may be dynamic)."""
    out: list[Index] = []
    for d in reversed(dims[1:]):
        out.append(kb.rem(idx, d))
        idx = kb.div(idx, d)
    out.append(idx)
    return out[::-1]


def _interior(ow_count: int, w: int, k: int, s: int, d: int, pl: int) -> tuple[int, int]:
    """[a, b): the output columns whose every kernel column reads an input column inside [0, w)."""
    a = max(0, -(-pl // s))
    num = w - 1 + pl - (k - 1) * d
    b = num // s + 1 if num >= 0 else 0
    a = min(a, ow_count)
    return a, max(a, min(ow_count, b))


def _valid_taps(ow: int, w: int, k: int, s: int, d: int, pl: int) -> tuple[int, ...]:
    return tuple(j for j in range(k) if 0 <= ow * s - pl + j * d < w)


@dataclass
class Tile:
    """Output columns ow0 + offs[t]; valid[t]: the kernel columns column t reads (None: all)."""

    ow0: Index
    offs: list[int]
    valid: list[tuple[int, ...]] | None = None

    def taps(self, t: int, kw: int) -> bool:
        return self.valid is None or kw in self.valid[t]


def _row_tiles(kb: KB, ow_count: int, T: int, a: int, b: int, taps: Callable[[int], tuple[int, ...]],
               emit: Callable[[Tile], None]) -> None:
    """Cover output columns [0, ow_count) with tiles of at most T columns: runs of interior tiles in a loop, the
    others static."""
    starts = list(range(0, ow_count, T))
    k = 0
    while k < len(starts):
        c0 = starts[k]
        size = min(T, ow_count - c0)
        if size == T and a <= c0 and c0 + T <= b:
            run = 1
            while k + run < len(starts) and starts[k + run] + T <= min(b, ow_count) and \
                    min(T, ow_count - starts[k + run]) == T:
                run += 1
            if run == 1:
                emit(Tile(c0, list(range(T))))
            else:
                with kb.loop(0, run, name="tile") as it:
                    emit(Tile(kb.add(kb.mul(it, T), c0), list(range(T))))
            k += run
            continue
        cols = list(range(c0, c0 + size))
        emit(Tile(0, cols, [taps(c) for c in cols]))
        k += 1


@dataclass
class _Direct:
    """A register-blocked direct convolution over one output row (see the module docstring).

    Input element of reduction step r (a loop), unrolled sub-step u, input row ih, input column iw:
        x[x_row(r, ih) + iw·x_cs + u·x_us]            (a scalar broadcast; a vector of `lanes` when x_vector)
    Weight vector for accumulator group b, step (r, u), kernel row kh, kernel column kw:
        w[w_base(r, kh) + b·w_bs + w_kw(kw) + u·w_us]
    """

    kb: KB
    x: ir.Value
    w: ir.Value
    lanes: int
    KH: int
    KW: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    H: int
    W: int
    R: Index
    U: int
    x_row: Callable[[Index, Index], Index]
    x_cs: int
    x_us: int
    w_base: Callable[[Index, Index], Index]
    w_bs: int
    w_kw: Callable[[int], int]
    w_us: int
    rows_checked: bool
    x_vector: bool = False
    unroll: int = 0  # sub-steps unrolled per reduction iteration (0: all U); the rest is the reduction loop

    @property
    def groups(self) -> int:
        return self.U // self.unroll if self.unroll and self.U % self.unroll == 0 else 1

    def tile(self, B: int, oh: Index, tile: Tile, init: Callable[[int, Index], ir.Value],
             finish: Callable[[int, int, Index, ir.Value], None]) -> None:
        """Accumulators init(b, ow), the reduction, then finish(b, t, ow, value) for each."""
        kb = self.kb
        b_ = kb.b
        T = len(tile.offs)
        vt = kb.vtype(self.lanes)
        accs = [[kb.alloca(vt, name="acc") for _ in range(T)] for _ in range(B)]
        for bb in range(B):
            for t in range(T):
                b_.store(init(bb, kb.add(tile.ow0, tile.offs[t])), accs[bb][t])
        with kb.loop(0, self.KH, name="kh") as kh:
            ih = kb.add(kb.mul(oh, self.sh), kb.mul(kh, self.dh), -self.pt)
            if self.rows_checked:
                ok = b_.icmp_unsigned("<", kb.i64(ih), kb.i64(self.H))
                ctx = kb.if_(ok)
            else:
                ctx = _nullctx()
            with ctx:
                with kb.loop(0, kb.mul(self.R, self.groups), name="r") as r:
                    self._body(B, tile, accs, r, ih, kh)
        for bb in range(B):
            for t in range(T):
                finish(bb, t, kb.add(tile.ow0, tile.offs[t]), b_.load(accs[bb][t]))

    def _body(self, B, tile: Tile, accs, r, ih, kh) -> None:
        """One reduction step: per unrolled sub-step u, the B·KW weight vectors, then each distinct input element
        once (broadcast, or a vector load) with the FMAs of every (column, kernel column) pair that reads it, so
        each broadcast dies right after its use (live: the accumulators, the weights, one input)."""
        kb = self.kb
        b_ = kb.b
        T = len(tile.offs)
        vals = [[b_.load(accs[bb][t]) for t in range(T)] for bb in range(B)]
        G = self.groups
        U = self.U // G
        ug: Index = 0
        if G > 1:
            r, ug = b_.udiv(r, kb.i64(G)), b_.urem(r, kb.i64(G))
        xp = kb.ptr(self.x, kb.add(self.x_row(r, ih), kb.mul(tile.ow0, self.sw * self.x_cs), kb.mul(ug, U * self.x_us)))
        wp = kb.ptr(self.w, kb.add(self.w_base(r, kh), kb.mul(ug, U * self.w_us)))
        for u in range(U):
            readers: dict[int, list[tuple[int, int]]] = {}
            for t in range(T):
                for kw in range(self.KW):
                    if tile.taps(t, kw):
                        off = (tile.offs[t] * self.sw - self.pl + kw * self.dw) * self.x_cs + u * self.x_us
                        readers.setdefault(off, []).append((t, kw))
            if not readers:
                continue
            used = sorted({kw for pairs in readers.values() for _, kw in pairs})
            wv = {(kw, bb): kb.vload(wp, bb * self.w_bs + self.w_kw(kw) + u * self.w_us, self.lanes)
                  for kw in used for bb in range(B)}
            for off in sorted(readers):
                if self.x_vector:
                    xs = kb.vload(xp, off, self.lanes)
                else:
                    xs = kb.splat(kb.load(xp, off), self.lanes)
                for t, kw in readers[off]:
                    for bb in range(B):
                        vals[bb][t] = kb.fma(xs, wv[(kw, bb)], vals[bb][t])
        for bb in range(B):
            for t in range(T):
                b_.store(vals[bb][t], accs[bb][t])


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _rows_checked(OH: int, H: int, KH: int, sh: int, dh: int, pt: int) -> bool:
    return pt > 0 or (OH - 1) * sh + (KH - 1) * dh - pt > H - 1


def _regs_per_vector(kb: KB, lanes: int) -> int:
    return max(1, -(-lanes // kb.vw))


def _choose_tile(ow_count: int, nvec: int, rpv: int, *, wregs: int = 1, max_b: int = 4, max_t: int = 28,
                 budget: int = 32) -> tuple[int, int]:
    """(B, T): accumulator groups (dividing nvec) × columns such that the accumulators, the weights of one step
    (B·wregs) and two inputs in flight fit the vector registers, with the lowest estimated cycles per output vector
    (small tiles are latency bound, a short last tile wastes)."""
    best = None
    for B in range(1, max_b + 1):
        if nvec % B:
            continue
        tmax = min(max_t, ow_count, (budget // rpv - B * wregs - 2) // B)
        for T in range(1, tmax + 1):
            sizes = [min(T, ow_count - c) for c in range(0, ow_count, T)]
            cycles = sum(max(B * t * rpv, 10) + B + 2 for t in sizes)
            cost = cycles / (B * ow_count)
            key = (round(cost, 3), -B, max(sizes) - min(sizes), -T)
            if best is None or key < best[0]:
                best = (key, B, T)
    if best is None:
        return 1, 1
    return best[1], best[2]


# -- conv2d -------------------------------------------------------------------------------------------------------

@dataclass
class _Geom:
    N: Index
    C: int
    H: int
    W: int
    O: int
    OH: int
    OW: int
    KH: int
    KW: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    G: int
    flip: bool

    @property
    def Cg(self) -> int:
        return self.C // self.G

    @property
    def Og(self) -> int:
        return self.O // self.G


def _conv_geom(kc: KernelContext) -> _Geom:
    a = kc.attrs
    x, y = kc.inputs[0], kc.out
    (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
    top, left, _, _ = a["padding"]
    if kc.block:
        n, cb, h, w, b = x.dims
        _, ob, oh, ow, _ = y.dims
        c, o = cb * b, ob * b
    else:
        n, c, h, w = x.dims
        _, o, oh, ow = y.dims
    return _Geom(n, int(c), int(h), int(w), int(o), int(oh), int(ow), kh, kw, sh, sw, dh, dw, top, left,
                 a["groups"], bool(a.get("flip", False)))


@kernel("conv2d")
def emit_conv2d(kc: KernelContext) -> None:
    g = _conv_geom(kc)
    bias = kc.params.get("bias")
    if kc.block:
        if kc.block != BLOCK:
            raise Unsupported(f"blocked layout of {kc.block} channels (only {BLOCK})")
        if g.G == 1:
            _emit_blocked(kc, g, kc.params["weight"].ptr, bias.ptr if bias else None)
        elif g.G == g.C == g.O:
            _emit_blocked_dw(kc, g, kc.params["weight"].ptr, bias.ptr if bias else None)
        else:
            raise Unsupported(f"blocked grouped convolution with {g.G} groups")
        return
    if g.Og * 2 < kc.kb.vw:
        _emit_width(kc, g, kc.params["weight"].ptr, bias.ptr if bias else None)
    else:
        w = kc.packed("weight", "conv_oc_vectors", groups=g.G, vw=kc.kb.vw, flip=g.flip)
        bp = kc.packed("bias", "conv_oc_bias", groups=g.G, vw=kc.kb.vw) if bias else None
        _emit_plain(kc, g, w, bp)


def _emit_blocked(kc: KernelContext, g: _Geom, w: ir.Value, bias: ir.Value | None, *,
                  flat: tuple[int, int] | None = None) -> None:
    """Blocked direct convolution, groups 1. `flat` = (P, L): a 1×1 stride-1 unpadded convolution over P pixels
    taken as rows of L (the last one shorter)."""
    kb = kc.kb
    x, y = kc.inputs[0].ptr, kc.out.ptr
    bk = BLOCK
    CB, OB = g.C // bk, g.O // bk
    rpv = _regs_per_vector(kb, bk)
    if flat:
        P, L = flat
        rows = -(-P // L)
        in_plane = out_plane = P
        in_row = out_row = L
        last = P - (rows - 1) * L
        OH, OW, H, W = rows, L, rows, L
    else:
        OH, OW, H, W = g.OH, g.OW, g.H, g.W
        in_plane, in_row, out_plane, out_row = g.H * g.W, g.W, g.OH * g.OW, g.OW
        last = OW
    B, T = TILE_OVERRIDE.get("blocked") or _choose_tile(OW, OB, rpv, wregs=g.KW)
    KH, KW = g.KH, g.KW
    flip = g.flip

    def x_row_of(n):
        return lambda r, ih: kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, CB), r), in_plane), kb.mul(ih, in_row)), bk)

    def w_base_of(ob0):
        def f(r, kh):
            khf = kb.sub(KH - 1, kh) if flip else kh
            return kb.mul(kb.add(kb.mul(kb.add(kb.mul(ob0, CB), r), KH), khf), KW * bk * bk)
        return f

    items = kb.mul(g.N, OB // B, OH)
    lo, hi = kc.split(items)
    with kb.loop(lo, hi, name="item") as item:
        n, obg, oh = _coords(kb, item, [g.N, OB // B, OH])
        ob0 = kb.mul(obg, B)
        d = _Direct(kb, x, w, bk, KH, KW, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, H, W, CB, bk,
                    x_row_of(n), bk, 1, w_base_of(ob0), CB * KH * KW * bk * bk,
                    (lambda kw: (KW - 1 - kw if flip else kw) * bk * bk), bk,
                    rows_checked=(not flat) and _rows_checked(OH, H, KH, g.sh, g.dh, g.pt),
                    unroll=int(TILE_OVERRIDE.get("unroll", LANE_UNROLL)))

        def init(bb, ow):
            if bias is None:
                return kb.fconst(0.0, bk)
            return kb.vload(bias, kb.mul(kb.add(ob0, bb), bk), bk)

        def finish(bb, t, ow, v):
            idx = kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, OB), ob0, bb), out_plane), kb.mul(oh, out_row), ow), bk)
            kb.vstore(kc.epilogue(v, idx), y, idx)

        def row(count):
            a, b = _interior(count, W, KW, g.sw, g.dw, g.pl)
            _row_tiles(kb, count, T, a, b, lambda c: _valid_taps(c, W, KW, g.sw, g.dw, g.pl),
                       lambda tile: d.tile(B, oh, tile, init, finish))

        if last != OW:
            with kb.if_else(kb.icmp("==", oh, OH - 1)) as (then, otherwise):
                with then:
                    row(last)
                with otherwise:
                    row(OW)
        else:
            row(OW)


def _emit_blocked_dw(kc: KernelContext, g: _Geom, w: ir.Value, bias: ir.Value | None) -> None:
    """Blocked depthwise: x [N, C/16, H, W, 16], weight [C/16, kh, kw, 16]; one vector FMA per tap and column."""
    kb = kc.kb
    x, y = kc.inputs[0].ptr, kc.out.ptr
    bk = BLOCK
    CB = g.C // bk
    rpv = _regs_per_vector(kb, bk)
    T = TILE_OVERRIDE.get("dw") or _choose_tile(g.OW, 1, rpv, wregs=g.KW, max_b=1, max_t=24)[1]
    KH, KW = g.KH, g.KW
    flip = g.flip
    items = kb.mul(g.N, CB, g.OH)
    lo, hi = kc.split(items)
    with kb.loop(lo, hi, name="item") as item:
        n, cb, oh = _coords(kb, item, [g.N, CB, g.OH])
        d = _Direct(kb, x, w, bk, KH, KW, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.H, g.W, 1, 1,
                    lambda r, ih: kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, CB), cb), g.H), ih), g.W * bk), bk, 0,
                    lambda r, kh: kb.mul(kb.add(kb.mul(cb, KH), kb.sub(KH - 1, kh) if flip else kh), KW * bk), 0,
                    (lambda kw: (KW - 1 - kw if flip else kw) * bk), 0,
                    rows_checked=_rows_checked(g.OH, g.H, KH, g.sh, g.dh, g.pt), x_vector=True)

        def init(bb, ow):
            return kb.vload(bias, kb.mul(cb, bk), bk) if bias is not None else kb.fconst(0.0, bk)

        def finish(bb, t, ow, v):
            idx = kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, CB), cb), g.OH * g.OW), kb.mul(oh, g.OW), ow), bk)
            kb.vstore(kc.epilogue(v, idx), y, idx)

        a, b = _interior(g.OW, g.W, KW, g.sw, g.dw, g.pl)
        _row_tiles(kb, g.OW, T, a, b, lambda c: _valid_taps(c, g.W, KW, g.sw, g.dw, g.pl),
                   lambda tile: d.tile(1, oh, tile, init, finish))


def _emit_plain(kc: KernelContext, g: _Geom, w: ir.Value, bias: ir.Value | None) -> None:
    """Plain NCHW, vectors over output channels: weight packed [G, NV, C_g, kh, kw, V] (already flipped), bias
    [G, NV·V]; outputs scattered to NCHW."""
    kb = kc.kb
    x = kc.inputs[0].ptr
    V = kb.vw
    Cg, Og = g.Cg, g.Og
    NV = -(-Og // V)
    B, T = TILE_OVERRIDE.get("plain") or _choose_tile(g.OW, NV, 1, wregs=g.KW)
    KH, KW = g.KH, g.KW
    part = Og % V  # lanes of the last vector that hold channels (0: all)
    items = kb.mul(g.N, g.G, NV // B, g.OH)
    lo, hi = kc.split(items)
    with kb.loop(lo, hi, name="item") as item:
        n, gi, vg, oh = _coords(kb, item, [g.N, g.G, NV // B, g.OH])
        v0 = kb.mul(vg, B)
        d = _Direct(kb, x, w, V, KH, KW, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.H, g.W, Cg, 1,
                    lambda r, ih: kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, g.C), kb.mul(gi, Cg), r), g.H), ih), g.W),
                    1, 0,
                    lambda r, kh: kb.mul(kb.add(kb.mul(kb.add(kb.mul(kb.add(kb.mul(gi, NV), v0), Cg), r), KH), kh),
                                         KW * V),
                    Cg * KH * KW * V, (lambda kw: kw * V), 0,
                    rows_checked=_rows_checked(g.OH, g.H, KH, g.sh, g.dh, g.pt))

        def init(bb, ow):
            if bias is None:
                return kb.fconst(0.0, V)
            return kb.vload(bias, kb.mul(kb.add(kb.mul(gi, NV), v0, bb), V), V)

        def finish(bb, t, ow, v):
            o_local = kb.mul(kb.add(v0, bb), V)
            base = kb.add(kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, g.O), kb.mul(gi, Og), o_local),
                                               g.OH), oh), g.OW), ow)
            _scatter(kc, v, base, g.OH * g.OW, part, lambda: kb.icmp("<", kb.add(v0, bb), NV - 1))

        a, b = _interior(g.OW, g.W, KW, g.sw, g.dw, g.pl)
        _row_tiles(kb, g.OW, T, a, b, lambda c: _valid_taps(c, g.W, KW, g.sw, g.dw, g.pl),
                   lambda tile: d.tile(B, oh, tile, init, finish))


def _scatter(kc: KernelContext, v: ir.Value, base: Index, stride: Index, part: int,
             not_last: Callable[[], ir.Value]) -> None:
    """Store the lanes of output-channel vector `v` to NCHW: lane k at base + k·stride, each through the epilogue.
    With `part`, only the first `part` lanes hold channels in the last vector: the others are stored when
    `not_last()` holds."""
    kb = kc.kb

    def lanes(ks):
        for k in ks:
            idx = kb.add(base, kb.mul(k, stride))
            kb.store(kc.epilogue(kb.lane(v, k), idx), kc.out.ptr, idx)

    n = v.type.count
    lanes(range(part or n))
    if part:
        with kb.if_(not_last()):
            lanes(range(part, n))


def _emit_width(kc: KernelContext, g: _Geom, w: ir.Value, bias: ir.Value | None) -> None:
    """Plain NCHW with few output channels per group (depthwise, grouped): one output channel row at a time,
    vectors along the output row (strided inputs gathered by a shuffle of one contiguous load), scalar code for the
    border columns. The weight is read as stored ([O, C_g, kh, kw])."""
    kb = kc.kb
    b_ = kb.b
    x, y = kc.inputs[0].ptr, kc.out.ptr
    V = kb.vw
    Cg, Og = g.Cg, g.Og
    KH, KW, sw = g.KH, g.KW, g.sw
    items = kb.mul(g.N, g.O, g.OH)
    lo, hi = kc.split(items)
    rows_checked = _rows_checked(g.OH, g.H, KH, g.sh, g.dh, g.pt)
    with kb.loop(lo, hi, name="item") as item:
        n, o, oh = _coords(kb, item, [g.N, g.O, g.OH])
        c0 = kb.mul(kb.div(o, Og), Cg)
        ybase = kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, g.O), o), g.OH), oh), g.OW)

        def run(ow0: Index, lanes: int | None, valid: tuple[int, ...]):
            """Output columns ow0 .. ow0+lanes-1 (one column when lanes is None)."""
            ty = kb.vtype(lanes) if lanes else kb.ft
            acc = kb.alloca(ty, name="acc")
            if bias is not None:
                bv = kb.load(bias, o)
                b_.store(kb.splat(bv, lanes) if lanes else bv, acc)
            else:
                b_.store(kb.fconst(0.0, lanes), acc)
            with kb.loop(0, KH, name="kh") as kh:
                ih = kb.add(kb.mul(oh, g.sh), kb.mul(kh, g.dh), -g.pt)
                ctx = kb.if_(b_.icmp_unsigned("<", kb.i64(ih), kb.i64(g.H))) if rows_checked else _nullctx()
                with ctx:
                    khf = kb.sub(KH - 1, kh) if g.flip else kh
                    with kb.loop(0, Cg, name="ic") as ic:
                        v = b_.load(acc)
                        xrow = kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, g.C), c0, ic), g.H), ih), g.W)
                        wrow = kb.mul(kb.add(kb.mul(kb.add(kb.mul(o, Cg), ic), KH), khf), KW)
                        for kw in valid:
                            kwf = KW - 1 - kw if g.flip else kw
                            wv = kb.load(w, kb.add(wrow, kwf))
                            start = kb.add(xrow, kb.mul(ow0, sw), kw * g.dw - g.pl)
                            if lanes is None:
                                v = kb.fma(kb.load(x, start), wv, v)
                                continue
                            if sw == 1:
                                xv = kb.vload(x, start, lanes)
                            else:
                                wide = kb.vload(x, start, (lanes - 1) * sw + 1)
                                xv = b_.shuffle_vector(wide, ir.Constant(wide.type, ir.Undefined),
                                                       ir.Constant(ir.VectorType(I32, lanes),
                                                                   [j * sw for j in range(lanes)]))
                            v = kb.fma(xv, kb.splat(wv, lanes), v)
                        b_.store(v, acc)
            idx = kb.add(ybase, ow0)
            val = kc.epilogue(b_.load(acc), idx)
            if lanes:
                kb.vstore(val, y, idx)
            else:
                kb.store(val, y, idx)

        a, b = _interior(g.OW, g.W, KW, sw, g.dw, g.pl)
        nvec = (b - a) // V
        for c in range(0, a):
            run(c, None, _valid_taps(c, g.W, KW, sw, g.dw, g.pl))
        allk = tuple(range(KW))
        if nvec == 1:
            run(a, V, allk)
        elif nvec > 1:
            with kb.loop(0, nvec, name="vec") as j:
                run(kb.add(kb.mul(j, V), a), V, allk)
        rest = (b - a) - nvec * V
        if rest >= 2:
            run(a + nvec * V, rest, allk)
        elif rest == 1:
            run(a + nvec * V, None, allk)
        for c in range(b, g.OW):
            run(c, None, _valid_taps(c, g.W, KW, sw, g.dw, g.pl))


# -- channel_matmul -------------------------------------------------------------------------------------------------

@kernel("channel_matmul")
def emit_channel_matmul(kc: KernelContext) -> None:
    kb = kc.kb
    x = kc.inputs[0]
    units = int(kc.attrs["units"])
    bias = kc.params.get("bias")
    if kc.block:
        if kc.block != BLOCK or x.rank != 5:
            raise Unsupported(f"blocked channel_matmul of a rank-{x.rank} input, block {kc.block}")
        n, cb, h, w, bk = x.dims
        P = int(h) * int(w)
        L = P if P <= 112 else next((d for d in range(112, 55, -1) if P % d == 0), 112)
        g = _Geom(n, int(cb) * bk, 1, P, units, 1, P, 1, 1, 1, 1, 1, 1, 0, 0, 1, False)
        _emit_blocked(kc, g, kc.params["weight"].ptr, bias.ptr if bias else None, flat=(P, L))
        return
    n, c = x.dims[0], int(x.dims[1])
    P = int(np.prod([int(d) for d in x.dims[2:]], dtype=np.int64)) if x.rank > 2 else 1
    if P >= kb.vw:
        _emit_gemm(kc, n, c, P, units, bias.ptr if bias else None)
        return
    # few pixels: a 1×1 convolution vectorized over the units
    g = _Geom(n, c, 1, P, units, 1, P, 1, 1, 1, 1, 1, 1, 0, 0, 1, False)
    w = kc.packed("weight", "matrix_as_conv", vw=kb.vw)
    bp = kc.packed("bias", "conv_oc_bias", groups=1, vw=kb.vw) if bias else None
    _emit_plain(kc, g, w, bp)


def _emit_gemm(kc: KernelContext, N: Index, C: int, P: int, U: int, bias: ir.Value | None) -> None:
    """Y[n] (U×P) = W (U×C) · X[n] (C×P): tiles of R units × up to NB vectors of pixels; W packed [U/R, C, R]."""
    kb = kc.kb
    b_ = kb.b
    x, y = kc.inputs[0].ptr, kc.out.ptr
    V = kb.vw
    R, NB = 6, 4
    wp = kc.packed("weight", "gemm_rows", rows=R)
    span = NB * V
    full = P // span
    rem = P - full * span
    ntiles = full + (1 if rem else 0)
    UT = U // R
    urem = U - UT * R

    def utile(n, p0, ut, rows: int, widths: list[int]):
        accs = [[kb.alloca(kb.vtype(wd), name="acc") for wd in widths] for _ in range(rows)]
        for i in range(rows):
            bv = kb.load(bias, kb.add(kb.mul(ut, R), i)) if bias is not None else None
            for j, wd in enumerate(widths):
                b_.store(kb.splat(bv, wd) if bv is not None else kb.fconst(0.0, wd), accs[i][j])
        with kb.loop(0, C, name="c") as c:
            vals = [[b_.load(a) for a in row] for row in accs]
            xrow = kb.add(kb.mul(kb.add(kb.mul(n, C), c), P), p0)
            xs = [kb.vload(x, kb.add(xrow, j * V), wd) for j, wd in enumerate(widths)]
            wrow = kb.mul(kb.add(kb.mul(ut, C), c), R)
            for i in range(rows):
                ws = kb.load(wp, kb.add(wrow, i))
                for j, wd in enumerate(widths):
                    vals[i][j] = kb.fma(kb.splat(ws, wd), xs[j], vals[i][j])
            for i in range(rows):
                for j in range(len(widths)):
                    b_.store(vals[i][j], accs[i][j])
        for i in range(rows):
            for j, wd in enumerate(widths):
                idx = kb.add(kb.mul(kb.add(kb.mul(n, U), kb.mul(ut, R), i), P), p0, j * V)
                kb.vstore(kc.epilogue(b_.load(accs[i][j]), idx), y, idx)

    def ptile(n, p0, widths):
        if UT:
            with kb.loop(0, UT, name="ut") as ut:
                utile(n, p0, ut, R, widths)
        if urem:
            utile(n, p0, UT, urem, widths)

    rem_widths = [V] * (rem // V) + ([rem % V] if rem % V else [])
    items = kb.mul(N, ntiles)
    lo, hi = kc.split(items)
    with kb.loop(lo, hi, name="item") as item:
        n, pt = _coords(kb, item, [N, ntiles])
        if full and rem:
            with kb.if_else(kb.icmp("<", pt, full)) as (then, otherwise):
                with then:
                    ptile(n, kb.mul(pt, span), [V] * NB)
                with otherwise:
                    ptile(n, full * span, rem_widths)
        elif full:
            ptile(n, kb.mul(pt, span), [V] * NB)
        else:
            ptile(n, 0, rem_widths)


# -- conv_transpose2d -----------------------------------------------------------------------------------------------

@kernel("conv_transpose2d")
def emit_conv_transpose2d(kc: KernelContext) -> None:
    """y[n, o, oh, ow] = bias[o] + Σ x[n, c, ih, iw]·w[c, o_g, kh, kw] over the group's c and the taps with
    oh + top = ih·sh + kh·dh and ow + left = iw·sw + kw·dw: a gather per output pixel, vectors over output
    channels; the row conditions are computed once per output row."""
    if kc.block:
        raise Unsupported("blocked conv_transpose2d")
    kb = kc.kb
    b_ = kb.b
    a = kc.attrs
    x, y = kc.inputs[0], kc.out
    N, C, H, W = x.dims
    C, H, W = int(C), int(H), int(W)
    _, O, OH, OW = y.dims
    O, OH, OW = int(O), int(OH), int(OW)
    (KH, KW), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
    top, left, _, _ = a["padding"]
    G = a["groups"]
    Cg, Og = C // G, O // G
    V = kb.vw
    NV = -(-Og // V)
    part = Og % V
    w = kc.packed("weight", "transpose_oc_vectors", groups=G, vw=V)
    bias = kc.packed("bias", "conv_oc_bias", groups=G, vw=V) if "bias" in kc.params else None
    xp = x.ptr

    def tap(pos: Index, pad: int, k: int, s: int, d: int, size: int) -> tuple[ir.Value, Index]:
        """(in range, input index) for output position pos and kernel tap k."""
        t = kb.add(pos, pad - k * d)
        if s == 1:
            return b_.icmp_unsigned("<", kb.i64(t), kb.i64(size)), t
        i = kb.div(t, s)
        ok = kb.land(kb.icmp(">=", t, 0), kb.icmp("==", kb.rem(t, s), 0), kb.icmp("<", i, size))
        return ok, i

    items = kb.mul(N, G, NV, OH)
    lo, hi = kc.split(items)
    with kb.loop(lo, hi, name="item") as item:
        n, gi, vi, oh = _coords(kb, item, [N, G, NV, OH])
        rows = [tap(oh, top, k, sh, dh, H) for k in range(KH)]
        wbase = kb.mul(kb.add(kb.mul(gi, NV), vi), Cg * KH * KW * V)
        with kb.loop(0, OW, name="ow") as ow:
            acc = kb.alloca(kb.vt, name="acc")
            b_.store(kb.vload(bias, kb.mul(kb.add(kb.mul(gi, NV), vi), V)) if bias is not None
                     else kb.fconst(0.0, V), acc)
            for kw in range(KW):
                okw, iw = tap(ow, left, kw, sw, dw, W)
                for kh in range(KH):
                    okh, ih = rows[kh]
                    with kb.if_(b_.and_(okh, okw)):
                        xrow = kb.add(kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, C), kb.mul(gi, Cg)), H), ih), W), iw)
                        with kb.loop(0, Cg, name="ic") as ic:
                            xs = kb.splat(kb.load(xp, kb.add(xrow, kb.mul(ic, H * W))))
                            wv = kb.vload(w, kb.add(wbase, kb.mul(ic, KH * KW * V), (kh * KW + kw) * V))
                            b_.store(kb.fma(xs, wv, b_.load(acc)), acc)
            v = b_.load(acc)
            base = kb.add(kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, O), kb.mul(gi, Og), kb.mul(vi, V)), OH), oh), OW),
                          ow)
            _scatter(kc, v, base, OH * OW, part, lambda: kb.icmp("<", vi, NV - 1))
