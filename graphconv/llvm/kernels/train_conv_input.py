"""Input gradients of the conv family (graphconv/ops/grad/conv.py): conv2d_grad_input, conv_transpose2d_grad_input
and dense_grad_input, by one register-blocked engine over channel vectors (and one along rows for narrow groups).

The three are one computation, dx[n, c, i, j] = Σ_o Σ_taps dy[n, o, p(i, kh), q(j, kw)]·w(o, c, kh, kw) over the dy
channels o of c's group and the kernel taps whose dy position is in range, with the position maps (`_Axis`)
- conv2d_grad_input (the adjoint of a strided convolution): p·stride = i + pad - kh·dilation, when divisible;
- conv_transpose2d_grad_input (a convolution of dy):        p = i·stride + kh·dilation - pad;
- dense_grad_input:                                          a 1×1 "kernel" over [N, units, P], P the rest flattened.

The engine (`_Engine`) vectorizes over dx channels: L adjacent channels of a group in a vector (the vector width, or
8/4 lanes when a group has fewer channels), B such vectors × T positions accumulate in B·T registers. A position is
(sample, row, column) at a static offset from its tile's base, so which taps each position reads, and the offset of
the dy element each reads, are decided in Python: out-of-range taps (borders, the other phases of a stride, rows no
window reaches) are never emitted, and a position no tap reaches is stored as zeros. Per dy channel (the loop) and
kernel row, the B·kw weight vectors are loaded, then each distinct dy element the row reads is broadcast once into
the FMAs of every (position, kernel column) pair that reads it. The dy pointer goes through an empty inline asm per
kernel row, so LLVM cannot merge the loads of an element two kernel rows read (it kept such broadcasts in registers
across rows and spilled: half speed at B = 1). Every element sums in a fixed order (dy channel, kernel row, then its
taps in the order of the dy elements they read), whatever the tile: results do not depend on the plan, the batch
size or the thread count.

Tiles (`_choose`, by a cycle estimate: FMA and broadcast throughput, weight bandwidth from L1 or L2, FMA latency,
stores; calibrated on znver4): for maps of a few positions (ResNet's late stages at 32×32: 4×4, 2×2, 1×1) a tile is
S whole maps of consecutive samples, so one weight vector serves S samples (the batch's last S-1 or fewer samples
take a variant chosen by a switch); otherwise R rows × Tc columns of one sample. Row chunks whose taps read alike
relative to their base (interior rows of one stride phase) share code, selected by a switch on the chunk; runs of
alike column tiles are loops.

Groups of at most a quarter vector of dx channels (depthwise, narrow groups) take `_RowEngine` instead: vectors
along a dx row, the weight as stored broadcast per tap, each vector's dy elements one load shuffled into its lanes
(zeros where a stride's phase or a border leaves a lane without that tap). Depthwise 3x3 on 112x112, batch 8: 55
GF/s, against 13 in channel vectors of which one lane is used.

Weights: a thread packs the block of B·L channels it is about to compute into its scratch ([B, O_g, taps, L], zero
lanes past the group's channels, flipped back when the forward conv2d flipped, only the taps some position reads)
when it reaches the block's first item, so no packed copy lives in the weights blob: a training step, which updates
the weight every step, would otherwise gather a fresh copy of every weight at the start of each run. Measured on a
1×1-map 3×3 conv 512->512 with its SGD update, batch 32, one thread: 0.67 ms a step packing here, 2.42 ms with a
blob copy gathered every run (the gather reads an index table, the weight and writes the copy, all from DRAM in a
training step; the kernel reads the weight once and its packed block stays in cache). 1×1 kernels and dense layers
with whole vectors of channels read the weight as stored. A weight that is not a parameter works the same.

Threads split items (channel group, vector block, sample block, row chunk), vector blocks outermost (a thread packs
each of its blocks once, and reuses it over the samples); every dx element is written by one thread.

Compile time: the helper loops (packing, the lanes of the stores) carry loop hints that keep LLVM's vectorizer and
unroller off them (`_plain_loop`: a 3x3 64->64 kernel optimized in 2 s without, 0.2 s with), stores of positions
whose channels are spread over planes go through a loop over the lanes, and plans whose tiles would emit more than
MAX_CODE FMAs in all are avoided (big kernels on big maps: a 7x7 kernel compiles in about 3 s; an 11x11 one, which
no network here differentiates, in about 10 s).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from llvmlite import ir

from ..builder import Index
from ..kernel import KernelContext, Unsupported, kernel
from .conv import _coords

OPS = ("conv2d_grad_input", "conv_transpose2d_grad_input", "dense_grad_input")

# Plans can be forced (benchmarking, tests): {"L": lanes, "B": vectors, "S": samples, "R": rows, "Tc": columns,
# "rows": True/False for the row engine}
PLAN_OVERRIDE: dict[str, int] = {}
MAX_T = 28  # positions per tile
MAX_COLUMN_CODES = 12  # static column tiles and loops of alike tiles in the code of one row
MAX_CODE = 12000  # FMAs a kernel's tiles may emit in all
PACK_UNROLL = 64  # weight elements per dy channel and lane the packing code unrolls (more: loops over taps)


# -- geometry ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Axis:
    """One spatial axis: dx position i (of `out`) reads dy position j (of `inp`) through kernel tap k."""

    out: int
    inp: int
    k: int
    s: int
    d: int
    p: int
    adjoint: bool  # True: j·s = i + p - k·d (conv2d's gradient); False: j = i·s + k·d - p (a convolution)

    def taps(self, i: int) -> tuple[tuple[int, int], ...]:
        """(k, j) for every tap of position i whose dy position j is in range, k ascending."""
        out = []
        for k in range(self.k):
            if self.adjoint:
                t = i + self.p - k * self.d
                if t % self.s:
                    continue
                j = t // self.s
            else:
                j = i * self.s + k * self.d - self.p
            if 0 <= j < self.inp:
                out.append((k, j))
        return tuple(out)

    def base(self, i0: int) -> int:
        """The dy position offsets of a chunk starting at i0 are relative to this."""
        return (i0 + self.p) // self.s if self.adjoint else i0 * self.s

    def base_ir(self, kb, i0: Index) -> Index:
        if isinstance(i0, int):
            return self.base(i0)
        # i0 + p >= 0: a truncating division is the floor
        return kb.div(kb.add(i0, self.p), self.s) if self.adjoint else kb.mul(i0, self.s)

    def sig(self, i0: int, count: int) -> tuple:
        """What a chunk of `count` positions from i0 reads, relative to base(i0): per position, (k, j - base)."""
        b = self.base(i0)
        return tuple(tuple((k, j - b) for k, j in self.taps(i0 + r)) for r in range(count))


@dataclass(frozen=True)
class _Geo:
    G: int
    Cg: int  # dx channels per group (vectorized)
    Og: int  # dy channels per group (the reduction)
    H: int
    W: int
    OH: int
    OW: int
    KH: int
    KW: int
    rows: _Axis
    cols: _Axis
    # the weight as stored: element (g, o, c, kh, kw) at g·w_g + o·w_o + c·w_c + kh·KW + kw (kh, kw flipped)
    w_g: int
    w_o: int
    w_c: int
    flip: bool

    @property
    def C(self) -> int:
        return self.G * self.Cg

    @property
    def O(self) -> int:  # noqa: E743 - the dy channels
        return self.G * self.Og


def _geometry(kc: KernelContext, op: str, wshape: tuple[int, ...]) -> _Geo:
    a = kc.attrs
    dy, dx = kc.inputs[0], kc.out
    if op == "dense_grad_input":
        U, F = (int(d) for d in wshape)
        P = int(np.prod([int(d) for d in dy.dims[2:]], dtype=np.int64)) if dy.rank > 2 else 1
        ax1 = _Axis(1, 1, 1, 1, 1, 0, True)
        axw = _Axis(P, P, 1, 1, 1, 0, True)
        return _Geo(1, F, U, 1, P, 1, P, 1, 1, ax1, axw, 0, F, 1, False)
    O, OH, OW = (int(d) for d in dy.dims[1:])
    C, H, W = (int(d) for d in dx.dims[1:])
    G = int(a.get("groups", 1))
    sh, sw = a.get("stride", (1, 1))
    dh, dw = a.get("dilation", (1, 1))
    top, left, _, _ = a.get("padding", (0, 0, 0, 0))
    if op == "conv2d_grad_input":
        _, cg, KH, KW = wshape
        og = O // G
        rows = _Axis(H, OH, KH, sh, dh, top, True)
        cols = _Axis(W, OW, KW, sw, dw, left, True)
        return _Geo(G, cg, og, H, W, OH, OW, KH, KW, rows, cols, og * cg * KH * KW, cg * KH * KW, KH * KW,
                    bool(a.get("flip", False)))
    _, og, KH, KW = wshape
    cg = C // G
    rows = _Axis(H, OH, KH, sh, dh, top, False)
    cols = _Axis(W, OW, KW, sw, dw, left, False)
    return _Geo(G, cg, og, H, W, OH, OW, KH, KW, rows, cols, cg * og * KH * KW, KH * KW, og * KH * KW, False)


# -- the plan -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    L: int  # lanes per vector
    NV: int  # channel vectors per group
    B: int  # vectors per tile
    S: int  # samples per tile (> 1: whole maps)
    R: int  # rows per chunk
    Tc: int  # columns per tile
    cost: float = 0.0


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(size, n - i)) for i in range(0, n, size)]


def _col_groups(axis: _Axis, n: int, size: int) -> list[tuple[int, tuple, int, int]]:
    """The column tiles of a row as (first column, signature, run, dy step): `run` consecutive tiles that read
    alike, each `step` dy columns after the previous (run 1: a tile on its own)."""
    tiles = _chunks(n, size)
    out = []
    k = 0
    while k < len(tiles):
        c0, cn = tiles[k]
        sig = axis.sig(c0, cn)
        run = 1
        step = axis.base(c0 + size) - axis.base(c0)
        while k + run < len(tiles):
            c1, cn1 = tiles[k + run]
            if cn1 != cn or axis.sig(c1, cn1) != sig or axis.base(c1) - axis.base(c0) != run * step:
                break
            run += 1
        out.append((c0, sig, run, step))
        k += run
    return out


def _tile_cost(geo: _Geo, rsig, csig, S: int, B: int, L: int, wide: bool, budget: int,
               ft_bytes: int) -> float | None:
    """Estimated cycles of one tile (None when its registers do not fit `budget`).

    Per dy channel: the FMAs (one 512-bit FMA a cycle on AVX-512, two narrower ones), plus the broadcasts: about
    0.3 cycle each, and about 0.9 for one feeding a single FMA (LLVM folds it into the FMA as an embedded broadcast,
    which runs at half speed on znver4: measured 1.9 cycles an FMA at B = 1, 1.1 at B = 2), bounded below by the
    loads (two a cycle), the weight vectors' bandwidth (from L1, or L2 when the block's weights do not fit L1) and
    the longest accumulator chain (4 cycles an FMA); then the stores (a lane at a time when the channels of a position
    are spread over planes). Registers: B·(live positions) accumulators, the B·kw weight vectors of one kernel row, a
    broadcast or two."""
    fr = 1.0 if (wide and L * ft_bytes >= 64) else 2.0
    uses: dict[tuple, int] = {}
    taps = []
    kws: dict[int, set] = {}
    for sn in range(S):
        for r in rsig:
            for c in csig:
                taps.append(len(r) * len(c))
                for kh, dr in r:
                    for kw, dc in c:
                        key = (kh, sn, dr, dc)
                        uses[key] = uses.get(key, 0) + 1
                        kws.setdefault(kh, set()).add(kw)
    live = sum(1 for t in taps if t)
    kw_max = max((len(v) for v in kws.values()), default=0)
    if live > MAX_T or B * live + B * kw_max + 2 > budget:
        return None
    spread = geo.H * geo.W > 1
    stores = sum(B * (L if spread else 1) for t in taps if t) + sum(B * L / 4.0 for t in taps if not t)
    if not live:
        return stores + 8.0
    fmas = B * sum(taps)
    single = sum(1 for u in uses.values() if u == 1) if B == 1 else 0
    used = sum(len(v) for v in kws.values())
    # the weight vectors stream from L1 when the block's weights (those this tile reads) fit there, else from L2
    # (measured about 24 bytes a cycle) or beyond
    wbytes = B * used * L * ft_bytes
    footprint = wbytes * geo.Og
    bw = 64.0 if footprint <= 24 << 10 else 24.0 if footprint <= 768 << 10 else 12.0
    per_o = max(fmas / fr + 0.3 * len(uses) + 0.6 * single, (B * used + len(uses)) / 2.0, wbytes / bw,
                4.0 * max(taps)) + 2.0
    return geo.Og * per_o + stores + 8.0


def _choose(geo: _Geo, vw: int, ft_bytes: int) -> _Plan:
    wide = vw * ft_bytes >= 64  # AVX-512: 32 vector registers
    budget = 32 if wide else 16
    min_lanes = max(2, vw // 4)
    if "L" in PLAN_OVERRIDE:
        L = int(PLAN_OVERRIDE["L"])
    elif geo.Cg >= vw:
        L = vw
    else:
        L = min(vw, max(min_lanes, 1 << (geo.Cg - 1).bit_length()))
    NV = -(-geo.Cg // L)
    HW = geo.H * geo.W
    best: _Plan | None = None
    smallest: tuple[int, _Plan] | None = None  # the plan of least code, when every plan has too much
    memo: dict[tuple, float | None] = {}
    counted: dict[tuple, dict[tuple, int]] = {}

    col_groups: dict[int, list] = {}

    def groups(size: int) -> list:
        if size not in col_groups:
            col_groups[size] = _col_groups(geo.cols, geo.W, size)
        return col_groups[size]

    def sigs(axis: _Axis, n: int, size: int) -> dict[tuple, int]:
        """How many chunks of `size` along the axis read alike."""
        key = (axis, size)
        if key not in counted:
            out: dict[tuple, int] = {}
            for i0, cnt in _chunks(n, size):
                sig = axis.sig(i0, cnt)
                out[sig] = out.get(sig, 0) + 1
            counted[key] = out
        return counted[key]

    bs = [b for b in range(1, 9) if NV % b == 0]
    if "B" in PLAN_OVERRIDE:
        bs = [int(PLAN_OVERRIDE["B"])]
    for B in bs:
        cands = [(S, geo.H, geo.W) for S in range(2, MAX_T // HW + 1)] if HW <= MAX_T // 2 else []
        for R in range(1, min(geo.H, 4) + 1):
            for Tc in range(1, min(geo.W, MAX_T // R) + 1):
                cands.append((1, R, Tc))
        for S, R, Tc in cands:
            if any(k in PLAN_OVERRIDE and PLAN_OVERRIDE[k] != v for k, v in (("S", S), ("R", R), ("Tc", Tc))):
                continue
            if "Tc" not in PLAN_OVERRIDE and S == 1 and len(groups(Tc)) > MAX_COLUMN_CODES:
                continue  # too much code for a row (tiles of a stride's phases that never repeat alike)
            total = 0.0
            ok = True
            for rsig, nr in sigs(geo.rows, geo.H, R).items():
                for csig, nc in sigs(geo.cols, geo.W, Tc).items():
                    key = (rsig, csig, S, B)
                    if key not in memo:  # tiles alike (interior ones) cost the same
                        memo[key] = _tile_cost(geo, rsig, csig, S, B, L, wide, budget, ft_bytes)
                    c = memo[key]
                    if c is None:
                        ok = False
                        break
                    total += nr * nc * c
                if not ok:
                    break
            if not ok:
                continue
            cost = total / (S * B)  # per sample and channel vector
            # the FMAs emitted: every row class × every column code (S > 1: the variants of 1 to S samples)
            code = B * S * (S + 1) // 2 * sum(
                sum(len(r) for r in rsig) * sum(len(c) for c in csig)
                for rsig in sigs(geo.rows, geo.H, R) for _, csig, _, _ in groups(Tc))
            plan = _Plan(L, NV, B, S, R, Tc, cost)
            if code > MAX_CODE:  # compile time grows with it (a 7x7 kernel's 11.5K FMAs: 2.7 s)
                if smallest is None or code < smallest[0]:
                    smallest = (code, plan)
            elif best is None or cost < best.cost - 1e-9:
                best = plan
    if best is None and smallest is not None:
        best = smallest[1]
    if best is None:
        raise Unsupported(f"no tile fits the registers (plan override {PLAN_OVERRIDE})")
    return best


# -- the engine -----------------------------------------------------------------------------------------------------

class _Engine:
    def __init__(self, kc: KernelContext, geo: _Geo, plan: _Plan):
        self.kc, self.kb, self.geo, self.plan = kc, kc.kb, geo, plan
        self.dy = kc.inputs[0].ptr
        self.src = kc.inputs[1].ptr
        self.dx = kc.out.ptr
        self.N = kc.inputs[0].dims[0]
        # the taps some position reads: the kernel rows some dx row reads × the columns some dx column reads
        khs = sorted({k for i in range(geo.H) for k, _ in geo.rows.taps(i)})
        kws = sorted({k for j in range(geo.W) for k, _ in geo.cols.taps(j)})
        self.taps = [(kh, kw) for kh in khs for kw in kws]
        L, B = plan.L, plan.B
        # the weight as stored serves when L adjacent dx channels are adjacent there (1×1 kernels, dense)
        self.direct = geo.KH * geo.KW == 1 and geo.w_c == 1 and geo.Cg % L == 0
        if self.direct:
            self.w = self.src
            self.slot = {(0, 0): 0}
            self.w_bs, self.w_os = L, geo.w_o
        else:
            if B * len(self.taps) > PACK_UNROLL:  # packed by loops over every tap
                self.taps = [(kh, kw) for kh in range(geo.KH) for kw in range(geo.KW)]
            nt = len(self.taps)
            self.slot = {t: k * L for k, t in enumerate(self.taps)}
            self.w_os = nt * L
            self.w_bs = geo.Og * nt * L
            self.w = kc.thread_scratch(B * self.w_bs * kc.kb.ft_bytes)

    def _w_base(self, g, vb) -> Index:
        """Where vector 0 of block vb of group g starts in self.w (dy channel 0, tap slot 0)."""
        if self.direct:
            return self.kb.add(self.kb.mul(g, self.geo.w_g), self.kb.mul(vb, self.plan.B * self.plan.L))
        return 0

    def _pack(self, g, vb) -> None:
        """This thread's copy of block vb of group g: [B, O_g, taps, L], L dx channels side by side (zeros past
        the group's channels), the kernel flipped back when the forward conv2d flipped it. Loops over the dy
        channels and the lanes; the B vectors and the taps are unrolled (for a conv2d weight, one lane's taps are
        adjacent in the stored weight)."""
        kb, geo, pl = self.kb, self.geo, self.plan
        b_ = kb.b
        L, B = pl.L, pl.B
        nt = self.w_os // L
        unrolled = B * nt <= PACK_UNROLL
        with _plain_loop(kb, 0, geo.Og, name="pack") as o:
            src_o = kb.add(kb.mul(g, geo.w_g), kb.mul(o, geo.w_o))
            with _plain_loop(kb, 0, L, name="plane") as lane:
                for bb in range(B):
                    c = kb.add(kb.mul(kb.add(kb.mul(vb, B), bb), L), lane)
                    valid = None if geo.Cg % L == 0 else kb.icmp("<", c, geo.Cg)
                    if valid is not None:
                        c = b_.select(valid, kb.i64(c), kb.i64(0))
                    src_c = kb.add(src_o, kb.mul(c, geo.w_c))
                    dst = kb.add(kb.mul(kb.add(bb * geo.Og, o), nt * L), lane)

                    def one(kh, kw, slot):
                        khs = kb.sub(geo.KH - 1, kh) if geo.flip else kh
                        kws = kb.sub(geo.KW - 1, kw) if geo.flip else kw
                        val = kb.load(self.src, kb.add(src_c, kb.mul(khs, geo.KW), kws))
                        if valid is not None:
                            val = b_.select(valid, val, kb.fconst(0.0))
                        kb.store(val, self.w, kb.add(dst, kb.mul(slot, L)))

                    if unrolled:
                        for k, (kh, kw) in enumerate(self.taps):
                            one(kh, kw, k)
                    else:
                        with _plain_loop(kb, 0, geo.KH, name="pkh") as kh:
                            with _plain_loop(kb, 0, geo.KW, name="pkw", unroll=True) as kw:
                                one(kh, kw, kb.add(kb.mul(kh, geo.KW), kw))

    def run(self) -> None:
        kb, geo, pl = self.kb, self.geo, self.plan
        NVB = pl.NV // pl.B
        S = pl.S
        row_chunks = _chunks(geo.H, pl.R)
        RC = len(row_chunks)
        NB = kb.div(kb.add(self.N, S - 1), S) if S > 1 else self.N
        items = kb.mul(geo.G * NVB, NB, RC)
        lo, hi = self.kc.split(items)
        packed = None
        if not self.direct:  # the block whose weights this thread packed last (none yet)
            packed = kb.alloca(ir.IntType(64), name="packed")
            kb.b.store(kb.i64(-1), packed)
        with kb.loop(lo, hi, name="item") as item:
            gv, nb, rc = _coords(kb, item, [geo.G * NVB, NB, RC])
            g, vb = (kb.div(gv, NVB), kb.rem(gv, NVB)) if NVB > 1 else (gv, 0)
            if packed is not None:
                with kb.if_(kb.b.icmp_signed("!=", kb.b.load(packed), kb.i64(gv))):
                    self._pack(g, vb)
                    kb.b.store(kb.i64(gv), packed)
            n0 = kb.mul(nb, S)
            if S == 1:
                self._rows(g, vb, n0, rc, row_chunks)
            else:
                self._samples(g, vb, n0)

    # S > 1: whole maps of S samples (fewer at the end of the batch)
    def _samples(self, g, vb, n0) -> None:
        kb, geo, S = self.kb, self.geo, self.plan.S
        rsig = geo.rows.sig(0, geo.H)
        csig = geo.cols.sig(0, geo.W)
        q0, p0 = geo.rows.base(0), geo.cols.base(0)
        left = kb.sub(self.N, n0)
        if isinstance(left, int):
            self._tile(g, vb, n0, 0, q0, rsig, 0, p0, csig, min(S, left))
            return
        b_ = kb.b
        done = b_.append_basic_block("samples.done")
        default = b_.append_basic_block("samples.full")
        sw = b_.switch(left, default)
        for k in range(1, S):
            blk = b_.append_basic_block(f"samples.{k}")
            sw.add_case(ir.Constant(left.type, k), blk)
            b_.position_at_end(blk)
            self._tile(g, vb, n0, 0, q0, rsig, 0, p0, csig, k)
            b_.branch(done)
        b_.position_at_end(default)
        self._tile(g, vb, n0, 0, q0, rsig, 0, p0, csig, S)
        b_.branch(done)
        b_.position_at_end(done)

    # S = 1: row chunk rc of one sample, dispatched to the code of its class
    def _rows(self, g, vb, n0, rc, row_chunks) -> None:
        _row_classes(self.kb, self.geo.rows, rc, row_chunks, self.plan.R,
                     lambda r0, q0, sig: self._row_chunk(g, vb, n0, r0, q0, sig))

    def _row_chunk(self, g, vb, n0, r0: Index, q0: Index, rsig) -> None:
        """Every column tile of one row chunk: static tiles, runs of alike tiles as loops."""
        kb, geo, Tc = self.kb, self.geo, self.plan.Tc
        cols = geo.cols
        for c0, sig, run, step in _col_groups(cols, geo.W, Tc):
            if run == 1:
                self._tile(g, vb, n0, r0, q0, rsig, c0, cols.base(c0), sig, 1)
            else:
                with kb.loop(0, run, name="ctile") as j:
                    self._tile(g, vb, n0, r0, q0, rsig, kb.add(kb.mul(j, Tc), c0),
                               kb.add(kb.mul(j, step), cols.base(c0)), sig, 1)

    def _tile(self, g, vb, n0, r0: Index, q0: Index, rsig, c0: Index, p0: Index, csig, S: int) -> None:
        """One tile: S samples from n0 × rows r0 + r (dy rows q0 + rsig offsets) × columns c0 + c (dy columns
        p0 + csig offsets), B channel vectors from vector block vb of group g."""
        kb, geo, pl = self.kb, self.geo, self.plan
        B, L = pl.B, pl.L
        dy_plane = geo.OH * geo.OW
        dy_sample = geo.O * dy_plane
        pos = [(sn, r, c) for sn in range(S) for r in range(len(rsig)) for c in range(len(csig))]
        readers: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (kh, kw) -> [(position, dy offset)]
        for t, (sn, r, c) in enumerate(pos):
            for kh, dr in rsig[r]:
                for kw, dc in csig[c]:
                    readers.setdefault((kh, kw), []).append((t, sn * dy_sample + dr * geo.OW + dc))
        live = sorted({t for rs in readers.values() for t, _ in rs})
        at = {t: k for k, t in enumerate(live)}  # accumulator b·len(live) + at[t]
        nl = len(live)
        accs = [kb.fconst(0.0, L)] * (B * nl)
        if readers:
            # dy channel o of sample n0 at the tile's base row/column; the weights of block vb, dy channel o
            dy_base = kb.add(kb.mul(kb.add(kb.mul(n0, geo.O), kb.mul(g, geo.Og)), dy_plane), kb.mul(q0, geo.OW), p0)
            w_base = self._w_base(g, vb)
            w_vs = self.w_bs
            # per kernel row: its dy elements, each with the (position, kernel column) pairs that read it
            rows: dict[int, dict[int, list[tuple[int, int]]]] = {}
            for (kh, kw), rs in readers.items():
                for t, off in rs:
                    rows.setdefault(kh, {}).setdefault(off, []).append((at[t], kw))
            i64 = ir.IntType(64)
            fence = ir.InlineAsm(ir.FunctionType(self.dy.type, [self.dy.type, i64]), "", "=r,0,r")

            def body(o, accs):
                accs = list(accs)
                dyo = kb.add(dy_base, kb.mul(o, dy_plane))
                wo = kb.add(w_base, kb.mul(o, self.w_os))
                for kh in sorted(rows):
                    elems = rows[kh]
                    kws = sorted({kw for pairs in elems.values() for _, kw in pairs})
                    wv = {(kw, b): kb.vload(self.w, kb.add(wo, b * w_vs + self.slot[(kh, kw)]), L)
                          for kw in kws for b in range(B)}
                    # an opaque copy of the dy pointer per kernel row: LLVM must not merge the loads of an element
                    # two kernel rows read (it would keep the broadcast in a register from one row to the next)
                    dyk = kb.b.call(fence, [kb.ptr(self.dy, dyo), ir.Constant(i64, kh)], attrs=("readnone", "nounwind"))
                    for off in sorted(elems):
                        x = kb.splat(kb.load(dyk, off), L)
                        for k, kw in elems[off]:
                            for b in range(B):
                                accs[b * nl + k] = kb.fma(x, wv[(kw, b)], accs[b * nl + k])
                return accs

            accs = kb.carried_loop(0, geo.Og, accs, body, name="o")
        self._store(g, vb, n0, r0, c0, pos, {t: [accs[b * nl + at[t]] for b in range(B)] for t in live})

    def _store(self, g, vb, n0, r0, c0, pos, accs: dict[int, list[ir.Value]]) -> None:
        """dx of every position of the tile: accs[t][b] for the positions some tap reaches, zeros elsewhere. With
        the channels of a position spread over planes (H·W > 1), a loop over the lanes stores one lane of every
        position per iteration (small code: a tile's scatter unrolled was most of its instructions); else vectors.
        The last vector of a group stores its first C_g mod L lanes only."""
        kb, geo, pl = self.kb, self.geo, self.plan
        b_ = kb.b
        B, L = pl.B, pl.L
        HW = geo.H * geo.W
        part = geo.Cg % L
        buf = None
        if HW > 1 and accs:
            buf = kb.alloca_vectors(B * len(pos), L, name="dxbuf")
            fbuf = b_.bitcast(buf, kb.ft.as_pointer())
        for b in range(B):
            v = kb.add(kb.mul(vb, B), b)
            ch = kb.add(kb.mul(g, geo.Cg), kb.mul(v, L))
            last_possible = bool(part) and (not isinstance(v, int) or v == pl.NV - 1)
            if not last_possible:
                lanes: Index = L
            elif isinstance(v, int):
                lanes = part
            else:
                lanes = b_.select(kb.icmp("<", v, pl.NV - 1), kb.i64(L), kb.i64(part))
            bases = [kb.add(kb.mul(kb.add(kb.mul(kb.add(n0, sn), geo.C), ch), HW), kb.mul(kb.add(r0, r), geo.W), c0, c)
                     for sn, r, c in pos]
            if HW > 1:
                for t in accs:
                    b_.store(accs[t][b], b_.gep(buf, [kb.i64(b * len(pos) + t)]))
                with _plain_loop(kb, 0, lanes, name="lane") as lane:
                    for t in range(len(pos)):
                        val = kb.load(fbuf, kb.add(kb.mul(b * len(pos) + t, L), lane)) if t in accs else \
                            kb.fconst(0.0)
                        kb.store(val, self.dx, kb.add(bases[t], kb.mul(lane, HW)))
                continue
            for t, base in enumerate(bases):
                acc = accs[t][b] if t in accs else kb.fconst(0.0, L)
                if not last_possible:
                    kb.vstore(acc, self.dx, base)
                elif isinstance(v, int):  # the last vector, statically
                    _store_lanes(kb, acc, self.dx, base, part)
                else:
                    with kb.if_else(kb.icmp("<", v, pl.NV - 1)) as (then, otherwise):
                        with then:
                            kb.vstore(acc, self.dx, base)
                        with otherwise:
                            _store_lanes(kb, acc, self.dx, base, part)


# -- few channels per group: vectors along the rows ------------------------------------------------------------------

class _RowEngine:
    """Groups of few dx channels (depthwise and narrow grouped convolutions): one dx channel row at a time, vectors of
    V adjacent columns, U of them per tile (U·V columns). Per dy channel of the group, kernel row and kernel column,
    the weight is one broadcast scalar (the weight as stored: nothing packed) and each vector's dy elements one load
    of the dy columns its lanes read, shuffled into place (the phases of a stride, borders: zeros in the lanes that
    tap does not reach). Rows dispatch by class like the channel engine's row chunks; runs of alike tiles loop."""

    U = 4

    def __init__(self, kc: KernelContext, geo: _Geo):
        self.kc, self.kb, self.geo = kc, kc.kb, geo
        self.dy, self.w, self.dx = kc.inputs[0].ptr, kc.inputs[1].ptr, kc.out.ptr
        self.N = kc.inputs[0].dims[0]
        self.V = kc.kb.vw

    def run(self) -> None:
        kb, geo = self.kb, self.geo
        chunks = _chunks(geo.H, 1)
        items = kb.mul(self.N, geo.C, geo.H)
        lo, hi = self.kc.split(items)
        with kb.loop(lo, hi, name="item") as item:
            n, c, i = _coords(kb, item, [self.N, geo.C, geo.H])
            g, cl = (kb.div(c, geo.Cg), kb.rem(c, geo.Cg)) if geo.Cg > 1 else (c, 0)
            _row_classes(kb, geo.rows, i, chunks, 1, lambda r0, q0, sig: self._row(n, c, g, cl, r0, q0, sig[0]))

    def _row(self, n, c, g, cl, i, q0, rtaps) -> None:
        kb, geo = self.kb, self.geo
        cols = geo.cols
        size = self.U * self.V
        for c0, csig, run, step in _col_groups(cols, geo.W, size):
            if run == 1:
                self._tile(n, c, g, cl, i, q0, rtaps, c0, cols.base(c0), csig)
            else:
                with kb.loop(0, run, name="rtile") as j:
                    self._tile(n, c, g, cl, i, q0, rtaps, kb.add(kb.mul(j, size), c0),
                               kb.add(kb.mul(j, step), cols.base(c0)), csig)

    def _tile(self, n, c, g, cl, i, q0, rtaps, c0, p0, csig) -> None:
        kb, geo, V = self.kb, self.geo, self.V
        b_ = kb.b
        widths = [min(V, len(csig) - u * V) for u in range(-(-len(csig) // V))]
        # per vector and kernel column: (first dy column, element count, shuffle mask) of the lanes it reaches
        reads: dict[tuple[int, int], tuple[int, int, list[int]]] = {}
        for u, wd in enumerate(widths):
            lanes = csig[u * V:u * V + wd]
            for kw in sorted({k for lane in lanes for k, _ in lane}):
                dq = [dict(lane).get(kw) for lane in lanes]
                lo_ = min(q for q in dq if q is not None)
                cnt = max(q for q in dq if q is not None) - lo_ + 1
                reads[(u, kw)] = (lo_, cnt, [cnt if q is None else q - lo_ for q in dq])
        accs = [kb.fconst(0.0, wd) for wd in widths]
        if rtaps and reads:
            dy_plane = geo.OH * geo.OW
            dy0 = kb.add(kb.mul(kb.add(kb.mul(n, geo.O), kb.mul(g, geo.Og)), dy_plane), kb.mul(q0, geo.OW), p0)
            w0 = kb.add(kb.mul(g, geo.w_g), kb.mul(cl, geo.w_c))
            kws = sorted({kw for _, kw in reads})

            def body(o, accs):
                accs = list(accs)
                dyo = kb.add(dy0, kb.mul(o, dy_plane))
                wo = kb.add(w0, kb.mul(o, geo.w_o))
                for kh, dr in rtaps:
                    khs = geo.KH - 1 - kh if geo.flip else kh
                    row = kb.add(dyo, dr * geo.OW)
                    for kw in kws:
                        kws_ = geo.KW - 1 - kw if geo.flip else kw
                        wv = kb.load(self.w, kb.add(wo, khs * geo.KW + kws_))
                        for u, wd in enumerate(widths):
                            if (u, kw) not in reads:
                                continue
                            lo_, cnt, mask = reads[(u, kw)]
                            if cnt == 1:
                                x = kb.splat(kb.load(self.dy, kb.add(row, lo_)), 2)
                                cnt = 2  # a vector of two, the second lane unused (shuffles take vectors)
                            else:
                                x = kb.vload(self.dy, kb.add(row, lo_), cnt)
                            if mask != list(range(wd)) or cnt != wd:
                                zero = kb.fconst(0.0, cnt)
                                x = b_.shuffle_vector(x, zero, ir.Constant(ir.VectorType(ir.IntType(32), wd),
                                                                           [m if m < cnt else cnt for m in mask]))
                            accs[u] = kb.fma(x, kb.splat(wv, wd), accs[u])
                return accs

            accs = kb.carried_loop(0, geo.Og, accs, body, name="o")
        base = kb.add(kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, geo.C), c), geo.H), i), geo.W), c0)
        for u, wd in enumerate(widths):
            kb.vstore(accs[u], self.dx, kb.add(base, u * V))


def _use_rows(geo: _Geo, vw: int) -> bool:
    """Vectors along the rows when a group's channels would fill at most a quarter of a channel vector and rows
    are at least half a vector wide."""
    if "rows" in PLAN_OVERRIDE:
        return bool(PLAN_OVERRIDE["rows"])
    return geo.Cg * 4 <= vw and geo.W * 2 >= vw and geo.KH * geo.KW > 1


def _store_lanes(kb, v: ir.Value, ptr: ir.Value, base: Index, count: int) -> None:
    """The first `count` lanes of v to ptr[base...] (the channels of a partial last vector)."""
    for k in range(count):
        kb.store(kb.lane(v, k), ptr, kb.add(base, k))


def _row_classes(kb, rows: _Axis, rc: Index, chunks: list[tuple[int, int]], R: int,
                 emit: Callable[[Index, Index, tuple], None]) -> None:
    """emit(first row, its dy base row, signature) for row chunk rc (of `chunks`, R rows each): chunks that read
    alike share one code, chosen by a switch on rc (a class of one chunk gets its row as a constant)."""
    classes: dict[tuple, list[int]] = {}
    for k, (r0, rn) in enumerate(chunks):
        classes.setdefault(rows.sig(r0, rn), []).append(k)

    def emit_class(sig, members):
        if len(members) == 1:
            r0 = chunks[members[0]][0]
            emit(r0, rows.base(r0), sig)
        else:
            r0 = kb.mul(rc, R)
            emit(r0, rows.base_ir(kb, r0), sig)

    if isinstance(rc, int):
        sig = rows.sig(*chunks[rc])
        emit_class(sig, classes[sig])
        return
    order = sorted(classes.items(), key=lambda kv: -len(kv[1]))
    if len(order) == 1:
        emit_class(*order[0])
        return
    b_ = kb.b
    done = b_.append_basic_block("rows.done")
    default = b_.append_basic_block("rows.main")
    sw = b_.switch(rc, default)
    for sig, members in order[1:]:
        blk = b_.append_basic_block("rows.class")
        for m in members:
            sw.add_case(ir.Constant(rc.type, m), blk)
        b_.position_at_end(blk)
        emit_class(sig, members)
        b_.branch(done)
    b_.position_at_end(default)
    emit_class(*order[0])
    b_.branch(done)
    b_.position_at_end(done)


@contextmanager
def _plain_loop(kb, start: Index, stop: Index, name: str, unroll: bool = False) -> Iterator[Index]:
    """kb.loop, hinted not to be vectorized (nor unrolled unless `unroll`): LLVM's loop vectorizer and the unrolling
    that feeds dead store elimination big blocks of stores took most of the compile time of these kernels (2 s of a
    3x3 64->64 kernel's 2.1 s, 0.05 s without), for loops that gain nothing from them (the lanes of a scatter, the
    packing of a weight block, the reduction, whose body is vector code already)."""
    pre = kb.b.block
    with kb.loop(start, stop, name=name) as i:
        body = kb.b.block
        yield i
    if body is pre:  # a loop of one iteration known in Python: no loop
        return
    fn = kb.function
    head = next((blk for blk in fn.blocks if isinstance(blk.terminator, ir.instructions.ConditionalBranch)
                 and body in blk.terminator.operands[1:]), None)
    if head is None:
        return
    mod = kb.module
    hints = [mod.add_metadata([ir.MetaDataString(mod, "llvm.loop.vectorize.enable"), ir.Constant(ir.IntType(1), 0)])]
    if not unroll:
        hints.append(mod.add_metadata([ir.MetaDataString(mod, "llvm.loop.unroll.disable")]))
    for blk in fn.blocks:
        term = blk.terminator
        if blk is not pre and isinstance(term, ir.instructions.Branch) and term.operands[0] is head:
            # a distinct loop id (self-referential; the name keeps add_metadata from sharing it between loops)
            loop_id = mod.add_metadata([ir.MetaDataString(mod, f"graphconv.loop.{len(mod.metadata)}"), *hints])
            loop_id.operands = (loop_id, *hints)
            term.set_metadata("llvm.loop", loop_id)


# -- the ops --------------------------------------------------------------------------------------------------------

@kernel(*OPS)
def emit_grad_input(kc: KernelContext) -> None:
    if kc.block:
        raise Unsupported("the blocked layout")
    kb = kc.kb
    wshape = tuple(int(d) for d in kc.inputs[1].type.shape)
    geo = _geometry(kc, kc.node.op, wshape)
    if _use_rows(geo, kb.vw):
        _RowEngine(kc, geo).run()
        return
    plan = _choose(geo, kb.vw, kb.ft_bytes)
    _Engine(kc, geo, plan).run()
