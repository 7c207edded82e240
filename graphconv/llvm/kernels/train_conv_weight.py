"""Weight gradients: conv2d_grad_weight and dense_grad_weight (graphconv/ops/grad/conv.py).

Both are GEMMs with a small output and a long reduction. For conv2d, kernel tap (i, j) of group g is

    dW[o, c, i, j] = Σ over n, p, q of dy[n, o, p, q] · x[n, c, p·sh + i·dh - top, q·sw + j·dw - left]

(M = Og output channels, N = Cg channels × taps, K = batch × output positions). How it runs:

- A lowering (`kernel.lowering`) first writes dy transposed, [N, G, OH·OW, opad] (`~gw_dyT`: each sample's
  [Og, P] matrices in 16×16 register tiles, rows zero-padded to `opad`, a multiple of the widest vector), so that
  a vector of L output channels is one load at every reduction step: a per-sample temporary, split between the
  threads, then a barrier. When dy already has that layout (1×1 maps, Og a multiple of 16) it is read as is.
- `~gw_conv`: a register tile of B vectors of L output channels × T columns, a column being (input channel, tap):
  at each reduction step (n, p, q) the B dy vectors are loaded and each column's x value is broadcast into the B
  accumulators it meets (B·T FMAs for B + T loads; the broadcasts fold into the FMAs' memory operand). The columns
  of a tile share their reduction range: taps are grouped in classes by the output positions whose window reads
  them inside the input (exact ranges, decided in Python), so padding is never read and taps that no window
  reaches cost nothing (ResNet's 3×3 convolutions on 2×2 and 1×1 maps compute 4/9 and 1/9 of the taps). The
  reduction loops are n (runtime), then the class's rows and columns (static); tiles of one tap over runs of
  channels are a loop.
- Work items are (group, block of B·L output channels, chunk of Tc input channels, range of taps); threads take
  contiguous runs of items, every output element belongs to exactly one item and is summed in a fixed order (n,
  p, q within blocks of samples, the blocks in order), so the result is the same bits on every run and for every
  thread count. An item's accumulators go to this
  thread's scratch as [column][L] vectors, then L×L register transposes write the rows dW[o, c0:c0+Tc, taps]
  (contiguous in OIHW): the output is written once, in vectors. Flipped kernels only permute the columns.
- (B, Tc, tap ranges) come from a small cost model (FMA and load cycles per step, per-pass and store overheads, the
  busiest of two threads). Channel counts that are not multiples of the vector width use narrower vectors
  (Og <= 8: 8 lanes, ...) or padded lanes whose results are never stored.
- Accuracy: the batch runs in blocks of samples (a few hundred products per tile and block), each block summed from
  zero and added to the item's total in the scratch, in block order (`_block`); the blocks also keep an item's dy
  and x in cache when a whole batch would not fit in L2.
- A weight gradient larger than L2 is written with non-temporal stores (through a staging copy of each unit's rows,
  when dW is aligned: `_Item.streaming`).
- One input channel per group (depthwise convolutions, channel multipliers, a single-channel input with padding),
  where the tiles above would be one column wide: x and dy are made channels-last (`~gw_cl`; x zero-padded, and
  repeated so that lane o holds output channel o's input channel), then `~gw_dw` keeps a vector of output channels
  × every tap in registers, one dy vector and one x vector per tap and step.
- dense_grad_weight of [N, F] (dense, `~gw_dense`): dW[u, f] = Σ_n dy[n, u]·x[n, f] with vectors along f (rows of
  x) and dy broadcast: tiles of Tu units × B f-vectors stored straight to dW. Of [N, F, ...] (channel_matmul): the
  1×1 convolution's path above, the positions flattened.

Float32 sums are float32 FMAs; float64 builds run the same code in doubles. Measured on the 2-core AVX-512
reference machine (tools/bench_train_kernels.py; peak 116 GFLOP/s a core): ResNet-18's layers at 32×32, batch 32,
reach 100-115 GFLOP/s of useful FLOPs (those not multiplying padding) on one thread, 85-99% of peak, except the
1×1- and 2×2-map layers bound by writing their 9.4 and 4.7 MB gradients. All of ResNet-18's weight gradients take
13.8 ms on one thread (useful-FLOP floor 12.0 ms) and 8.2-8.6 ms of a two-thread training step (floor 6.0);
LeNet-5's at batch 64, 0.55 and 0.39 ms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Callable

from llvmlite import ir

from ...ir.graph import Node, TensorType, Value
from ..builder import I32, KB, Index
from ..kernel import CodegenError, KernelContext, Unsupported, kernel, lowering
from .data import transpose_tile

LMAX = 16  # the widest vector of output channels any build uses: dyT rows are padded to a multiple of it
REP_BATCH = 32  # the batch the cost model assumes (the real one is only known at run time)
BLOCK_STEPS = 64  # reduction steps per tile and sample block at least
CHAIN_STEPS = 128  # reduction steps per tile and sample block at most, when the steps of a sample allow
BLOCK_BYTES = 256 << 10  # dy and x of one sample block of an item at most
STREAM_BYTES = 1 << 20  # an item's dy and x over REP_BATCH samples beyond which the batch is blocked
STREAM_OUTPUT = 1 << 20  # a weight gradient at least this large (L2) is written with non-temporal stores

# Plans can be forced (benchmarking, tests): {"B": int, "Tc": int, "ranges": int, "NB": int}
PLAN_OVERRIDE: dict[str, int] = {}


# -- geometry -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Geo:
    """A weight gradient as a correlation: x [N, C, H, W], dy [N, O, OH, OW], dW [O, C/G, KH, KW]."""

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

    @property
    def KK(self) -> int:
        return self.KH * self.KW

    @property
    def P(self) -> int:
        return self.OH * self.OW

    @property
    def opad(self) -> int:
        """The row length of transposed dy: Og rounded up to the widest vector that fits it (a power of two up to
        LMAX), so any narrower vector width a build picks also tiles it."""
        lm = min(LMAX, 1 << max(0, (self.Og - 1).bit_length()))
        return -(-self.Og // lm) * lm

    def rows(self, i: int) -> tuple[int, int]:
        """[p0, p1): the output rows whose window reads kernel row i inside the input."""
        return _range(self.OH, self.H, self.sh, self.dh, self.pt, i)

    def cols(self, j: int) -> tuple[int, int]:
        return _range(self.OW, self.W, self.sw, self.dw, self.pl, j)


def _range(count: int, size: int, s: int, d: int, pad: int, k: int) -> tuple[int, int]:
    """The positions p in [0, count) with 0 <= p·s + k·d - pad < size, as [lo, hi) (lo == hi: none)."""
    off = k * d - pad
    lo = max(0, -(off // s)) if off < 0 else 0
    hi = min(count, (size - 1 - off) // s + 1) if size - 1 - off >= 0 else 0
    return lo, max(lo, hi)


def _static(d, what: str) -> int:
    if not isinstance(d, int):
        raise CodegenError(f"the llvm backend's weight gradients need a static {what}, got {d!r}")
    return d


def _geo(op: str, attrs: dict, xt: TensorType, dyt: TensorType) -> _Geo:
    if op == "dense_grad_weight":  # channel_matmul: a 1×1 convolution over the flattened positions
        P = math.prod(_static(d, "position dimension") for d in xt.shape[2:])
        return _Geo(_static(xt.shape[1], "channel count"), P, 1, _static(dyt.shape[1], "unit count"), P, 1, 1, 1,
                    1, 1, 1, 1, 0, 0, 1, False)
    _, c, h, w = (_static(d, "dimension") if k else d for k, d in enumerate(xt.shape))
    o, oh, ow = (_static(d, "dimension") for d in dyt.shape[1:])
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs["dilation"]
    top, left, _, _ = attrs["padding"]
    return _Geo(c, h, w, o, oh, ow, kh, kw, sh, sw, dh, dw, top, left, attrs["groups"], bool(attrs.get("flip")))


_GEO_FIELDS = [f.name for f in fields(_Geo)]


def _geo_of_attrs(attrs: dict) -> _Geo:
    return _Geo(**{k: attrs[k] for k in _GEO_FIELDS})


# -- the lowering -----------------------------------------------------------------------------------------------------

@lowering("conv2d_grad_weight", "dense_grad_weight")
def lower_weight_grad(node: Node) -> list[Node]:
    """dense of [N, F]: one node (`~gw_dense`). Else: dy transposed into a per-sample temporary (`~gw_dyT`) unless it
    already has that layout, then the tiled GEMM (`~gw_conv`)."""
    x, dy = node.inputs
    if node.op == "dense_grad_weight" and x.type.rank == 2:
        return [Node(node.name, "~gw_dense", [x, dy], {}, node.output, {}, node.loc)]
    g = _geo(node.op, node.attrs, x.type, dy.type)
    attrs = asdict(g)
    if g.Cg == 1 and (g.G > 1 or len(set(_classes(g).values())) > 1):
        return _lower_channels_last(node, g)
    if g.P == 1 and g.opad == g.Og:  # [N, O] rows: already [N, G, 1, Og]
        return [Node(node.name, "~gw_conv", [x, dy], {**attrs, "opad": g.Og}, node.output, {}, node.loc)]
    t = Value(f"{node.name}.~dyT", TensorType((dy.type.shape[0], g.G, g.P, g.opad), dy.type.dtype), "node")
    first = Node(node.name, "~gw_dyT", [dy], {"groups": g.G, "opad": g.opad}, t, {}, node.loc)
    t.producer = first
    return [first, Node(node.name, "~gw_conv", [x, t], {**attrs, "opad": g.opad}, node.output, {}, node.loc)]


def _padded(g: _Geo) -> tuple[int, int]:
    """[Hp, Wp] of x zero-padded so that every tap of every window in dy reads inside it."""
    return (max(g.H + g.pt, (g.OH - 1) * g.sh + (g.KH - 1) * g.dh + 1),
            max(g.W + g.pl, (g.OW - 1) * g.sw + (g.KW - 1) * g.dw + 1))


def _lower_channels_last(node: Node, g: _Geo) -> list[Node]:
    """One input channel per group (depthwise, channel multipliers, a single-channel input with padding): x and dy
    channels-last, x zero-padded and repeated so that lane o holds output channel o's input channel (`~gw_cl`), then
    every tap of a vector of output channels at once (`~gw_dw`)."""
    x, dy = node.inputs
    n = x.type.shape[0]
    Hp, Wp = _padded(g)
    cpad = _Geo(1, 1, 1, g.O, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, False).opad  # O rounded up like opad
    dt = Value(f"{node.name}.~dyT", TensorType((n, g.OH, g.OW, cpad), dy.type.dtype), "node")
    xt = Value(f"{node.name}.~xT", TensorType((n, Hp, Wp, cpad), x.type.dtype), "node")
    first = Node(node.name, "~gw_cl", [dy], {"mult": 1, "cpad": cpad, "top": 0, "left": 0, "lanes": g.O}, dt, {},
                 node.loc)
    second = Node(node.name, "~gw_cl", [x], {"mult": g.Og, "cpad": cpad, "top": g.pt, "left": g.pl,
                                            "lanes": g.O}, xt, {}, node.loc)
    dt.producer, xt.producer = first, second
    last = Node(node.name, "~gw_dw", [xt, dt], {**asdict(g), "cpad": cpad}, node.output, {}, node.loc)
    return [first, second, last]


@kernel("~gw_cl")
def emit_gw_cl(kc: KernelContext) -> None:
    """x [N, C, H, W] -> [N, Hp, Wp, cpad], channels last: lane o of pixel (top + h, left + w) is x[n, o // mult, h,
    w] for o < lanes, everything else zero. Rows of pixels transposed in Lt×Lt register tiles (as ~gw_dyT), then the
    zero border."""
    kb = kc.kb
    x, t = kc.inputs[0], kc.out
    N, C, H, W = x.dims[0], int(x.dims[1]), int(x.dims[2]), int(x.dims[3])
    _, Hp, Wp, cpad = (int(d) if k else d for k, d in enumerate(t.dims))
    a = kc.attrs
    M, top, left, lanes = int(a["mult"]), int(a["top"]), int(a["left"]), int(a["lanes"])
    flat = top == 0 and left == 0 and Hp == H and Wp == W
    rows, rlen = (1, H * W) if flat else (H, W)
    Lt = min(kb.vw, cpad)
    oblocks = [(lanes // Lt, 0, Lt, Lt)] if lanes // Lt else []
    for ob in range(lanes // Lt, -(-cpad // Lt)):
        oblocks.append((1, ob, max(0, min(Lt, lanes - ob * Lt)), min(Lt, cpad - ob * Lt)))
    wblocks = [(rlen // Lt, 0, Lt)] if rlen // Lt else []
    if rlen % Lt:
        wblocks.append((1, rlen // Lt, rlen % Lt))

    def block(n: Index, r: Index, ob: Index, nrows: int, nlanes: int, wb: Index, npx: int) -> None:
        vecs = []
        for k in range(nrows):
            c = kb.div(kb.add(kb.mul(ob, Lt), k), M)
            src = kb.add(kb.mul(kb.add(kb.mul(kb.add(kb.mul(n, C), c), rows), r), rlen), kb.mul(wb, Lt))
            vecs.append(_load_prefix(kb, x.ptr, src, npx, Lt))
        vecs += [kb.fconst(0.0, Lt if Lt > 1 else None)] * (Lt - nrows)
        cols = transpose_tile(kb, vecs) if Lt > 1 else vecs
        pix = kb.add(kb.mul(kb.add(kb.mul(n, Hp), r, top), Wp), left, kb.mul(wb, Lt))
        dst = kb.add(kb.mul(pix, cpad), kb.mul(ob, Lt))
        for j in range(npx):
            if Lt == 1:
                kb.store(cols[j], t.ptr, kb.add(dst, j * cpad))
            else:
                _store_prefix(kb, cols[j], t.ptr, kb.add(dst, j * cpad), nlanes)

    variants: list = []
    for ocount, ob0, nrows, nlanes in oblocks:
        for wcount, wb0, npx in wblocks:
            def emit(u, ocount=ocount, ob0=ob0, nrows=nrows, nlanes=nlanes, wcount=wcount, wb0=wb0, npx=npx):
                n, r, ob, wb = _coords(kb, u, [N, rows, ocount, wcount])
                block(n, r, kb.add(ob, ob0), nrows, nlanes, kb.add(wb, wb0), npx)

            variants.append((kb.mul(N, rows * ocount * wcount), emit))
    if not flat:  # the zero border: whole rows above and below, the columns left and right of x's rows
        def full_rows(first: int, count: int):
            def emit(u):
                n, r = _coords(kb, u, [N, count])
                _zero_fill(kb, t.ptr, kb.mul(kb.add(kb.mul(n, Hp), r, first), Wp * cpad), Wp * cpad)
            return emit

        def edges(u):
            n, r = _coords(kb, u, [N, H])
            base = kb.mul(kb.add(kb.mul(n, Hp), r, top), Wp * cpad)
            if left:
                _zero_fill(kb, t.ptr, base, left * cpad)
            if Wp > left + W:
                _zero_fill(kb, t.ptr, kb.add(base, (left + W) * cpad), (Wp - left - W) * cpad)

        if top:
            variants.append((kb.mul(N, top), full_rows(0, top)))
        if Hp > top + H:
            variants.append((kb.mul(N, Hp - top - H), full_rows(top + H, Hp - top - H)))
        if left or Wp > left + W:
            variants.append((kb.mul(N, H), edges))
    _run_items(kc, variants)


def _zero_fill(kb: KB, ptr: ir.Value, base: Index, n: int) -> None:
    """ptr[base:base+n] = 0 (n static): whole vectors in a loop, then narrower pieces."""
    vw = kb.vw
    nvec = n // vw
    with kb.loop(0, nvec, name="z") as v:
        kb.vstore(kb.fconst(0.0, vw), ptr, kb.add(base, kb.mul(v, vw)))
    for off, lanes in kb.tail_chunks(nvec * vw, n):
        kb.store_n(kb.fconst(0.0, lanes), ptr, kb.add(base, off), lanes)


@kernel("~gw_dw")
def emit_gw_dw(kc: KernelContext) -> None:
    """dW [O, 1, KH, KW] from channels-last xT [N, Hp, Wp, cpad] (zero-padded) and dyT [N, OH, OW, cpad]: a vector
    of L output channels × a group of taps in registers, each step one dy vector and one x vector per tap (every
    tap reads inside the padded x, so all share the reduction over n, p, q), the accumulators then transposed into
    the channels' rows of dW."""
    kb = kc.kb
    b_ = kb.b
    g = _geo_of_attrs(kc.attrs)
    cpad = int(kc.attrs["cpad"])
    xt, dt, out = kc.inputs[0].ptr, kc.inputs[1].ptr, kc.out.ptr
    N = kc.inputs[0].dims[0]
    Hp, Wp = _padded(g)
    L = _lanes(g.O, kb.vw)
    NV = -(-g.O // L)
    lanes = L if L > 1 else None
    tmax = max(1, _regs(kb) - 3)
    taps = list(range(g.KK))
    sizes = _groups(g.KK, tmax)
    groups, t0 = [], 0
    for k in sizes:
        groups.append(taps[t0:t0 + k])
        t0 += k
    S = kc.thread_scratch(max(sizes) * L * kb.ft_bytes)
    vt = _vec(kb, L)
    offs = {}
    for t in taps:
        i, j = _compute_tap(g, t)
        offs[t] = (i * g.dh * Wp + j * g.dw) * cpad

    def item(cv: Index, group: list[int]) -> None:
        c0 = kb.mul(cv, L)

        def q_body(xrow: Index, drow: Index):
            def body(q, accs):
                dv = kb.load_n(dt, kb.add(drow, kb.mul(q, cpad)), lanes)
                xq = kb.add(xrow, kb.mul(q, g.sw * cpad))
                return [kb.fma(dv, kb.load_n(xt, kb.add(xq, offs[t]), lanes), a) for t, a in zip(group, accs)]
            return body

        def rows_body(r, accs):  # r: a row (sample n, output row p) flattened
            n, p = kb.div(r, g.OH), kb.rem(r, g.OH)
            xrow = kb.add(kb.mul(kb.add(kb.mul(n, Hp), kb.mul(p, g.sh)), Wp * cpad), c0)
            drow = kb.add(kb.mul(r, g.OW * cpad), c0)
            return kb.carried_loop(0, g.OW, accs, q_body(xrow, drow), name="q")

        def block(r0: Index, r1: Index) -> None:
            """Rows [r0, r1) summed from zero, then added to the total in the scratch."""
            accs = kb.carried_loop(r0, r1, [_zero(kb, L)] * len(group), rows_body, name="rows")
            for k, a in enumerate(accs):
                slot = b_.bitcast(kb.ptr(S, k * L), vt.as_pointer())
                b_.store(kb.fadd(b_.load(slot), a), slot)
            _memory_barrier(kb)

        # blocks of rows, a few hundred products per chain at most (see _block)
        R = max(1, CHAIN_STEPS // g.OW, -(-BLOCK_STEPS // g.OW))
        rows = kb.mul(N, g.OH)
        _zero_fill(kb, S, 0, len(group) * L)
        with kb.loop(0, kb.div(kb.add(rows, R - 1), R), name="rblk") as blk:
            r0 = kb.mul(blk, R)
            block(r0, kb.imin(kb.add(r0, R), rows))
        _store_rows(kb, g, S, kb.ptr(out, group[0]), c0, L, len(group))

    variants = []
    for group in groups:
        variants.append((NV, lambda u, group=group: item(u, group)))
    _run_items(kc, variants)


@kernel("~gw_dyT")
def emit_gw_dyt(kc: KernelContext) -> None:
    """dy [N, O, ...] -> [N, G, P, opad]: each (sample, group)'s [Og, P] matrix transposed in Lt×Lt register tiles
    (Lt = min(vector width, opad)), rows past Og read as zeros so the padding lanes come out zero; a partial block
    of pixels at the end of the row is loaded in pieces."""
    kb = kc.kb
    dy, t = kc.inputs[0], kc.out
    N, O = dy.dims[0], int(dy.dims[1])
    P = math.prod(int(d) for d in dy.dims[2:])
    G, opad = int(kc.attrs["groups"]), int(kc.attrs["opad"])
    Og = O // G
    Lt = min(kb.vw, opad)
    R = kb.mul(N, G)
    # output-channel blocks: (count, first block, rows read, lanes stored)
    oblocks = [(Og // Lt, 0, Lt, Lt)] if Og // Lt else []
    for ob in range(Og // Lt, -(-opad // Lt)):
        oblocks.append((1, ob, max(0, min(Lt, Og - ob * Lt)), min(Lt, opad - ob * Lt)))
    pblocks = [(P // Lt, 0, Lt)] if P // Lt else []
    if P % Lt:
        pblocks.append((1, P // Lt, P % Lt))

    def block(r: Index, ob: Index, rows: int, lanes: int, pb: Index, npx: int) -> None:
        src = kb.add(kb.mul(kb.add(kb.mul(r, Og), kb.mul(ob, Lt)), P), kb.mul(pb, Lt))
        vecs = [_load_prefix(kb, dy.ptr, kb.add(src, k * P), npx, Lt) for k in range(rows)]
        vecs += [kb.fconst(0.0, Lt if Lt > 1 else None)] * (Lt - rows)
        cols = transpose_tile(kb, vecs) if Lt > 1 else vecs
        dst = kb.add(kb.mul(kb.add(kb.mul(r, P), kb.mul(pb, Lt)), opad), kb.mul(ob, Lt))
        for j in range(npx):
            if Lt == 1:
                kb.store(cols[j], t.ptr, kb.add(dst, j * opad))
            else:
                _store_prefix(kb, cols[j], t.ptr, kb.add(dst, j * opad), lanes)

    variants = []
    for ocount, ob0, rows, lanes in oblocks:
        for pcount, pb0, npx in pblocks:
            def emit(u, ocount=ocount, ob0=ob0, rows=rows, lanes=lanes, pcount=pcount, pb0=pb0, npx=npx):
                r, ob, pb = _coords(kb, u, [R, ocount, pcount])
                block(r, kb.add(ob, ob0), rows, lanes, kb.add(pb, pb0), npx)

            variants.append((kb.mul(R, ocount * pcount), emit))
    _run_items(kc, variants)


def _load_prefix(kb: KB, ptr: ir.Value, index: Index, count: int, lanes: int) -> ir.Value:
    """A vector of `lanes` lanes whose first `count` are ptr[index...] (loaded in power-of-two pieces), the rest
    zero (a scalar when lanes is 1)."""
    if lanes == 1:
        return kb.load(ptr, index)
    if count == lanes:
        return kb.vload(ptr, index, lanes)
    vt = kb.vtype(lanes)
    acc = kb.fconst(0.0, lanes)
    off, w = 0, lanes // 2
    while off < count:
        while w > 1 and count - off < w:
            w //= 2
        if w > 1:
            piece = kb.vload(ptr, kb.add(index, off), w)
            wide = kb.b.shuffle_vector(piece, kb.fconst(0.0, w), ir.Constant(
                ir.VectorType(I32, lanes), [j - off if off <= j < off + w else w for j in range(lanes)]))
            acc = kb.b.shuffle_vector(acc, wide, ir.Constant(
                ir.VectorType(I32, lanes), [lanes + j if off <= j < off + w else j for j in range(lanes)]))
        else:
            acc = kb.b.insert_element(acc, kb.load(ptr, kb.add(index, off)), ir.Constant(I32, off))
        off += w
    assert acc.type == vt
    return acc


# -- planning -------------------------------------------------------------------------------------------------------

def _regs(kb: KB) -> int:
    """Vector registers: 32 with AVX-512, else 16."""
    return 32 if kb.vw * kb.ft_bytes >= 64 else 16


def _lanes(Og: int, vw: int) -> int:
    """Output channels per vector: the vector width, or the smallest power of two holding a group's channels."""
    return min(vw, 1 << max(0, (Og - 1).bit_length()))


def _balanced(n: int, parts: int) -> list[int]:
    """n split into `parts` contiguous sizes differing by at most one (larger first)."""
    q, r = divmod(n, parts)
    return [q + 1] * r + [q] * (parts - r)


@dataclass
class _Plan:
    L: int  # lanes per vector (1: scalars)
    NV: int  # vectors per group's output channels
    B: int  # vectors per tile (and per item)
    tmax: int  # columns per tile at most
    Tc: int  # input channels per item (the last chunk may be shorter)
    ranges: list[tuple[int, ...]]  # the output taps (flat i·KW + j) of each tap range
    classes: dict[int, tuple[int, int, int, int]]  # output tap -> (p0, p1, q0, q1) of its compute tap
    NB: int = 0  # samples per block of the reduction (0: the whole batch in one go)


def _compute_tap(g: _Geo, t: int) -> tuple[int, int]:
    i, j = divmod(t, g.KW)
    return (g.KH - 1 - i, g.KW - 1 - j) if g.flip else (i, j)


def _classes(g: _Geo) -> dict[int, tuple[int, int, int, int]]:
    out = {}
    for t in range(g.KK):
        i, j = _compute_tap(g, t)
        (p0, p1), (q0, q1) = g.rows(i), g.cols(j)
        out[t] = (p0, p1, q0, q1) if p1 > p0 and q1 > q0 else (0, 0, 0, 0)
    return out


def _groups(m: int, tmax: int) -> list[int]:
    return _balanced(m, -(-m // tmax)) if m else []


def _item_cost(g: _Geo, plan_b: int, tmax: int, L: int, fb: int, tc: int, taps: tuple[int, ...],
               classes) -> float:
    """Estimated cycles of one item: passes over the reduction, zero columns, the transposed store."""
    fma = max(1.0, L * fb / 32) / 2  # a 512-bit FMA a cycle, narrower ones two
    by: dict[tuple, int] = {}
    for t in taps:
        by[classes[t]] = by.get(classes[t], 0) + 1
    cost = 0.0
    B = plan_b
    for (p0, p1, q0, q1), k in by.items():
        if p1 == p0:
            cost += B * tc * k * 0.5
            continue
        steps = REP_BATCH * (p1 - p0) * (q1 - q0)
        for T in _groups(tc * k, tmax):
            cost += steps * (max(B * T * fma, 4.0, (B + T) / 3) + 1.0) + B * T * 2 + 30
    cols = tc * len(taps)
    cost += cols * B * max(L, 1) * 0.4 + 20
    return cost


def _busiest(costs: list[float], threads: int) -> float:
    """The largest share of `costs` a thread gets from KernelContext.split (contiguous runs of items)."""
    n = len(costs)
    bounds = [n * t // threads for t in range(threads + 1)]
    return max(sum(costs[bounds[t]:bounds[t + 1]]) for t in range(threads))


def _plan(g: _Geo, kb: KB) -> _Plan:
    vw, regs = kb.vw, _regs(kb)
    L = _lanes(g.Og, vw)
    NV = -(-g.Og // L)
    classes = _classes(g)
    best = None
    Bs = [b for b in (1, 2, 3, 4) if NV % b == 0]
    if PLAN_OVERRIDE.get("B") in Bs:
        Bs = [PLAN_OVERRIDE["B"]]
    for B in Bs:
        tmax = max(1, (regs - B - 2) // B)
        tcs = [min(g.Cg, PLAN_OVERRIDE["Tc"])] if "Tc" in PLAN_OVERRIDE else range(1, min(g.Cg, 64) + 1)
        for Tc in tcs:
            n_cc = -(-g.Cg // Tc)
            sizes = [Tc] * (n_cc - 1) + [g.Cg - (n_cc - 1) * Tc]
            base_items = g.G * (NV // B) * n_cc
            if "ranges" in PLAN_OVERRIDE:
                nrs = [min(g.KK, PLAN_OVERRIDE["ranges"])]
            else:  # split the taps only to give two threads work, keeping tiles a few columns wide
                nrs = [1] + [r for r in range(2, g.KK + 1) if base_items * r <= 8 and Tc * (g.KK // r) >= 6]
            for nr in nrs:
                bounds = _balanced(g.KK, nr)
                ranges, t0 = [], 0
                for k in bounds:
                    ranges.append(tuple(range(t0, t0 + k)))
                    t0 += k
                if max(sizes) * g.KK * B * max(L, 1) * kb.ft_bytes > (256 << 10):  # scratch per thread
                    continue
                costs = []
                for rg in ranges:
                    per = {tc: _item_cost(g, B, tmax, L, kb.ft_bytes, tc, rg, classes) for tc in set(sizes)}
                    costs.extend(per[tc] for tc in sizes for _ in range(g.G * (NV // B)))
                # the busiest thread of two (this machine's count), and a little of four (other machines)
                key = (_busiest(costs, 2) + 0.2 * _busiest(costs, 4), sum(costs), -Tc, nr)
                if best is None or key < best[0]:
                    best = (key, _Plan(L, NV, B, tmax, Tc, ranges, classes))
    if best is None:
        raise Unsupported("no tiling fits the scratch memory")
    plan = best[1]
    plan.NB = PLAN_OVERRIDE["NB"] if "NB" in PLAN_OVERRIDE else _block(g, plan, kb.ft_bytes)
    return plan


def _block(g: _Geo, p: _Plan, fb: int) -> int:
    """Samples per block of the reduction (0: none). Each block's sum starts from zero and is added to the item's
    total in the scratch, in block order: float32 sums of a few hundred products each, then a few sums of those,
    rather than one chain over the whole batch (LeNet-5's first layer sums 12544 products a weight at batch 16:
    one chain had 22 times the error of numpy's float32 einsum, blocks have 2 times; Adam's normalized steps
    amplify such differences). Blocks also keep an item's dy and x in cache across its tiles when the whole batch
    would not fit in L2 (maps larger than the benchmarks'). Enough steps per tile and block to hide loading and
    storing the accumulators (no measurable cost on LeNet-5 and ResNet-18 at 32x32)."""
    steps = [(p1 - p0) * (q1 - q0) for p0, p1, q0, q1 in p.classes.values() if p1 > p0]
    if not steps:
        return 0
    nb = max(1, CHAIN_STEPS // max(steps), -(-BLOCK_STEPS // min(steps)))
    per_sample = (g.P * p.B * max(p.L, 1) + p.Tc * g.H * g.W) * fb
    if per_sample * REP_BATCH > STREAM_BYTES:
        nb = max(1, min(nb, BLOCK_BYTES // per_sample))
    return 0 if nb >= REP_BATCH else nb


# -- the GEMM -------------------------------------------------------------------------------------------------------

def _run_items(kc: KernelContext, variants: list[tuple[int, Callable[[Index], None]]]) -> None:
    """Items numbered across `variants` ((count, emit(local index))): this thread's contiguous share of them."""
    kb = kc.kb
    variants = [(c, e) for c, e in variants if not isinstance(c, int) or c > 0]
    total = kb.add(*[c for c, _ in variants]) if variants else 0
    lo, hi = kc.split(total)
    start: Index = 0
    for count, emit in variants:
        a = kb.imax(kb.sub(lo, start), 0)
        b = kb.imin(kb.sub(hi, start), count)
        with kb.loop(a, b, name="item") as u:
            emit(u)
        start = kb.add(start, count)


def _coords(kb: KB, idx: Index, dims: list[int]) -> list[Index]:
    out: list[Index] = []
    for d in reversed(dims[1:]):
        out.append(kb.rem(idx, d))
        idx = kb.div(idx, d)
    out.append(idx)
    return out[::-1]


def _vec(kb: KB, lanes: int) -> ir.Type:
    return kb.vtype(lanes) if lanes > 1 else kb.ft


def _zero(kb: KB, lanes: int) -> ir.Value:
    return kb.fconst(0.0, lanes if lanes > 1 else None)


def _store_prefix(kb: KB, v: ir.Value, ptr: ir.Value, index: Index, count: int) -> None:
    """Store the first `count` lanes of vector v at ptr[index...] (whole, or in power-of-two pieces)."""
    n = v.type.count
    if count == n:
        kb.vstore(v, ptr, index)
        return
    off = 0
    w = n // 2
    while off < count:
        while w > 1 and count - off < w:
            w //= 2
        if w > 1:
            part = kb.b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, w), list(range(off, off + w))))
            kb.vstore(part, ptr, kb.add(index, off))
        else:
            kb.store(kb.lane(v, off), ptr, kb.add(index, off))
        off += w


@kernel("~gw_conv")
def emit_gw_conv(kc: KernelContext) -> None:
    kb = kc.kb
    g = _geo_of_attrs(kc.attrs)
    opad = int(kc.attrs["opad"])
    x, d, out = kc.inputs[0].ptr, kc.inputs[1].ptr, kc.out.ptr
    N = kc.inputs[0].dims[0]
    pl = _plan(g, kb)
    L, B, Tc = pl.L, pl.B, pl.Tc
    n_cc = -(-g.Cg // Tc)
    tail = g.Cg - (n_cc - 1) * Tc
    nfull = n_cc if tail == Tc else n_cc - 1
    nob = pl.NV // B
    ncols_max = Tc * max(len(r) for r in pl.ranges)
    S = kc.thread_scratch(B * ncols_max * L * kb.ft_bytes)
    # staging rows for streaming stores: L rows of a unit (L/gcd(L, KK) channels × KK taps) at most
    T = kc.thread_scratch(L * max(1, L // math.gcd(L, g.KK)) * g.KK * kb.ft_bytes) if L > 1 else None

    variants = []
    for taps in pl.ranges:
        def full(u, taps=taps):
            gi, ob, cc = _coords(kb, u, [g.G, nob, nfull])
            _Item(kb, g, pl, x, d, out, S, N, opad, gi, ob, kb.mul(cc, Tc), Tc, taps, T).emit()

        variants.append((g.G * nob * nfull, full))
        if nfull < n_cc:
            def last(u, taps=taps):
                gi, ob = _coords(kb, u, [g.G, nob])
                _Item(kb, g, pl, x, d, out, S, N, opad, gi, ob, nfull * Tc, tail, taps, T).emit()

            variants.append((g.G * nob, last))
    _run_items(kc, variants)


@dataclass
class _Tile:
    """A register tile: columns (channel offset from the tile's first channel, tap) of one class; `count` tiles
    `step` channels apart run in a loop (count 1: one tile)."""

    cls: tuple[int, int, int, int]
    cols: list[tuple[int, int]]
    first: int  # the first channel (relative to the item's)
    count: int = 1
    step: int = 0


class _Item:
    """One work item of ~gw_conv: output channels [o0, o0 + B·L) of group gi, input channels [c0, c0 + tc), the
    output taps `taps`. Its scratch holds [b][column][L], the columns in dW's memory order (channel-major)."""

    def __init__(self, kb: KB, g: _Geo, pl: _Plan, x, d, out, S, N, opad: int, gi: Index, ob: Index, c0: Index,
                 tc: int, taps: tuple[int, ...], T=None):
        self.kb, self.g, self.pl, self.x, self.d, self.out, self.S, self.N = kb, g, pl, x, d, out, S, N
        self.T = T  # staging rows for streaming stores
        self.opad, self.gi, self.c0, self.tc, self.taps = opad, gi, c0, tc, taps
        self.L, self.B = pl.L, pl.B
        self.o0 = kb.mul(ob, pl.B * pl.L)
        self.nt = len(taps)
        self.ncols = tc * self.nt
        self.vt = _vec(kb, self.L)

    def col(self, cl: Index, t: int) -> Index:
        return self.kb.add(self.kb.mul(cl, self.nt), self.taps.index(t))

    def slot(self, bb: int, k: Index) -> ir.Value:
        kb = self.kb
        return kb.b.bitcast(kb.ptr(self.S, kb.mul(kb.add(bb * self.ncols, k), self.L)), self.vt.as_pointer())

    def tiles(self) -> list[_Tile]:
        """Per class: single-tap classes as runs of equal tiles over the channels (loops), the others (several
        taps) as static tiles."""
        by: dict[tuple, list[int]] = {}
        for t in self.taps:
            by.setdefault(self.pl.classes[t], []).append(t)
        out = []
        for cls, ts in by.items():
            if cls[1] == cls[0]:  # no window reads these taps inside the input: zero columns
                continue
            if len(ts) == 1:
                sizes = _groups(self.tc, self.pl.tmax)
                first = 0
                for size in sorted(set(sizes), reverse=True):
                    count = sizes.count(size)
                    out.append(_Tile(cls, [(c, ts[0]) for c in range(size)], first, count, size))
                    first += count * size
                continue
            cols = [(cl, t) for cl in range(self.tc) for t in ts]
            start = 0
            for size in _groups(len(cols), self.pl.tmax):
                out.append(_Tile(cls, cols[start:start + size], 0))
                start += size
        return out

    def emit(self) -> None:
        kb = self.kb
        tiles = self.tiles()
        if self.pl.NB == 0:  # the whole batch at once, accumulators in registers
            self.run(tiles, 0, self.N, True)
        else:  # blocks of NB samples, each summed apart and added to the total in the scratch (see _block)
            nb = self.pl.NB
            _zero_fill(kb, self.S, 0, self.B * self.ncols * max(self.L, 1))
            with kb.loop(0, kb.div(kb.add(self.N, nb - 1), nb), name="nblk") as blk:
                n0 = kb.mul(blk, nb)
                self.run(tiles, n0, kb.imin(kb.add(n0, nb), self.N), False)
        self.store()

    def run(self, tiles: list[_Tile], n0: Index, n1: Index, first: bool) -> None:
        kb = self.kb
        for tile in tiles:
            with kb.loop(0, tile.count, name="tile") as k:
                c = kb.add(tile.first, kb.mul(k, tile.step))  # the tile's first channel within the item
                slots = [[self.slot(bb, self.col(kb.add(c, cl), t)) for cl, t in tile.cols] for bb in range(self.B)]
                accs = self.accumulate(tile, c, n0, n1, [_zero(kb, self.L)] * (self.B * len(tile.cols)))
                for a, p in zip(accs, [p for row in slots for p in row]):
                    kb.b.store(a if first else kb.fadd(kb.b.load(p), a), p)
                if not first:  # keep LLVM from promoting the accumulators of every tile to registers
                    _memory_barrier(kb)

    def accumulate(self, tile: _Tile, c: Index, n0: Index, n1: Index, inits: list[ir.Value]) -> list[ir.Value]:
        """The accumulators [b·T + t] from `inits`, plus Σ over n in [n0, n1) and the class's (p, q) of dy vector b
        times column t."""
        kb, g, L, B = self.kb, self.g, self.L, self.B
        p0, p1, q0, q1 = tile.cls
        T = len(tile.cols)
        HW = g.H * g.W
        offs = []
        for cl, t in tile.cols:
            i, j = _compute_tap(g, t)
            offs.append(cl * HW + (i * g.dh - g.pt) * g.W + j * g.dw - g.pl)
        lanes = L if L > 1 else None
        cfirst = kb.add(kb.mul(self.gi, g.Cg), self.c0, c)
        x, d, opad = self.x, self.d, self.opad

        def q_body(xrow: Index, drow: Index):
            def body(q, accs):
                xi = kb.add(xrow, kb.mul(q, g.sw))
                di = kb.add(drow, kb.mul(q, opad))
                dv = [kb.load_n(d, kb.add(di, bb * L), lanes) for bb in range(B)]
                accs = list(accs)
                for t in range(T):
                    xs = kb.load(x, kb.add(xi, offs[t]))
                    if lanes:
                        xs = kb.splat(xs, L)
                    for bb in range(B):
                        accs[bb * T + t] = kb.fma(dv[bb], xs, accs[bb * T + t])
                return accs
            return body

        def n_body(n, accs):
            xn = kb.mul(kb.add(kb.mul(n, g.C), cfirst), HW)
            dn = kb.add(kb.mul(kb.add(kb.mul(n, g.G), self.gi), g.P * opad), self.o0)

            def p_body(p, accs):
                xrow = kb.add(xn, kb.mul(p, g.sh * g.W))
                drow = kb.add(dn, kb.mul(p, g.OW * opad))
                return kb.carried_loop(q0, q1, accs, q_body(xrow, drow), name="q")

            return kb.carried_loop(p0, p1, accs, p_body, name="p")

        return kb.carried_loop(n0, n1, inits, n_body, name="n")

    def streaming(self) -> bool:
        """Write dW with non-temporal stores: when it is larger than L2 (its reader, the optimizer update, finds it
        in memory anyway; measured in a ResNet-18 training step, one thread: the 9.4 MB layer-4 gradients written in
        0.45 ms instead of 0.85, the 2.4 MB layer-3 ones in 0.69 instead of 0.80-0.93, the 1.2 MB one in 0.53
        instead of 0.57, the updates reading them no slower) and every whole-vector store of the item is aligned to
        the vector once dW's base is (checked at run time)."""
        g, L = self.g, self.L
        vb = L * self.kb.ft_bytes
        return (g.O * g.Cg * g.KK * self.kb.ft_bytes >= STREAM_OUTPUT and vb in (16, 32, 64) and self.nt == g.KK
                and (g.Cg * g.KK) % L == 0 and (self.pl.Tc * g.KK) % L == 0)

    def store(self) -> None:
        """dW rows from the scratch: for each output channel o of the item, its columns go to dW[g·Og + o, c0 + cl,
        tap], contiguous runs of the row, through L×L register transposes. With every tap, the item's columns are
        one run, stored in units of u = L/gcd(L, KK) channels (whole transposes, the same zero columns in each) in a
        loop; with a range of taps, one run per channel in a loop. Streaming (a large dW): each unit's rows are
        transposed into a second scratch, then copied out with non-temporal stores when dW is aligned (one copy
        loop of each kind, rather than the transposes twice)."""
        self.store_all(self.streaming())

    def store_all(self, stream: bool) -> None:
        self.store_runs(stream)
        if stream and "x86" in (self.kb.module.triple or ""):  # order the streaming stores before the barrier
            kb = self.kb
            fn = kb.module.globals.get("llvm.x86.sse.sfence") or ir.Function(
                kb.module, ir.FunctionType(ir.VoidType(), []), name="llvm.x86.sse.sfence")
            kb.b.call(fn, [])

    def store_runs(self, stream: bool) -> None:
        kb, KK, nt, tc = self.kb, self.g.KK, self.nt, self.tc
        zero = {t for t in self.taps if self.pl.classes[t][1] == self.pl.classes[t][0]}
        if nt == KK:
            u = self.L // math.gcd(self.L, KK) if self.L > 1 else 1
            units = tc // u if tc * KK > self.L else 0
            if units:
                with kb.loop(0, units, name="unit") as k:
                    first = kb.mul(k, u * KK)
                    self.store_run(first, first, u * KK, lambda m: m % KK in zero, stream)
            rest = tc - units * u
            if rest:
                first = units * u * KK
                self.store_run(first, first, rest * KK, lambda m: m % KK in zero, stream)
            return
        t0 = self.taps[0]
        with kb.loop(0, tc, name="cl") as cl:
            self.store_run(kb.mul(cl, nt), kb.add(kb.mul(cl, KK), t0), nt, lambda m: self.taps[m] in zero, False)

    def store_run(self, col0: Index, mem0: Index, n: int, is_zero: Callable[[int], bool], stream: bool) -> None:
        """Columns [col0, col0 + n) of the scratch to dW row positions [mem0, mem0 + n) (after c0·KK) of each output
        channel; is_zero(k): column col0 + k is known zero; `stream`: whole vectors with non-temporal stores."""
        kb, g, L = self.kb, self.g, self.L
        b_ = kb.b
        Cg, Og, KK = g.Cg, g.Og, g.KK
        part = Og % L
        for bb in range(self.B):
            ob = kb.add(self.o0, bb * L)  # the first output channel of vector bb (within the group)

            def row_base(lane: int) -> Index:
                o = kb.add(kb.mul(self.gi, Og), ob, lane)
                return kb.add(kb.mul(o, Cg * KK), kb.mul(self.c0, KK), mem0)

            def guarded(lane: int, store: Callable[[], None]) -> None:
                if part and lane >= part:
                    with kb.if_(kb.icmp("<", kb.add(ob, lane), Og)):
                        store()
                else:
                    store()

            if L == 1:
                for k in range(n):
                    v = kb.fconst(0.0) if is_zero(k) else b_.load(self.slot(bb, kb.add(col0, k)))
                    guarded(0, lambda v=v, k=k: kb.store(v, self.out, kb.add(row_base(0), k)))
                continue
            stream_rows = stream and n % L == 0  # whole vectors: staged in T, then copied out
            for blk in range(0, n, L):
                r = min(L, n - blk)
                rows = [_zero(kb, L) if is_zero(blk + k) else b_.load(self.slot(bb, kb.add(col0, blk + k)))
                        for k in range(r)]
                rows += [ir.Constant(self.vt, ir.Undefined)] * (L - r)
                outs = transpose_tile(kb, rows)
                for lane in range(L):
                    if stream_rows:
                        kb.vstore(outs[lane], self.T, lane * n + blk)
                    else:
                        guarded(lane, lambda lane=lane: _store_prefix(kb, outs[lane], self.out,
                                                                      kb.add(row_base(lane), blk), r))
            if stream_rows:
                self.copy_out(ob, n, lambda lane: row_base(lane))

    def copy_out(self, ob: Index, n: int, row_base: Callable[[Index], Index]) -> None:
        """The staged rows T[lane][0:n] (output channels ob + lane) to dW: whole vectors, non-temporal when dW's
        base is aligned to a vector (vector-aligned positions then), else ordinary stores."""
        kb, L, Og = self.kb, self.L, self.g.Og
        vb = L * kb.ft_bytes
        addr = kb.b.ptrtoint(self.out, ir.IntType(64))
        aligned = kb.b.icmp_unsigned("==", kb.b.and_(addr, ir.Constant(ir.IntType(64), vb - 1)), kb.i64(0))
        lanes = kb.imin(L, kb.sub(Og, ob))  # the output channels of this vector that exist
        with kb.loop(0, lanes, name="row") as lane:
            base = row_base(lane)
            src = kb.mul(lane, n)
            with kb.if_else(aligned) as (then, otherwise):
                with then:
                    with kb.loop(0, n // L, name="v") as v:
                        _stream_store(kb, kb.vload(self.T, kb.add(src, kb.mul(v, L)), L), self.out,
                                      kb.add(base, kb.mul(v, L)))
                with otherwise:
                    with kb.loop(0, n // L, name="v") as v:
                        kb.vstore(kb.vload(self.T, kb.add(src, kb.mul(v, L)), L), self.out, kb.add(base, kb.mul(v, L)))


def _stream_store(kb: KB, v: ir.Value, ptr: ir.Value, index: Index) -> None:
    """A non-temporal store of vector v to ptr[index...] (aligned to its size)."""
    p = kb.b.bitcast(kb.ptr(ptr, index), v.type.as_pointer())
    st = kb.b.store(v, p, align=v.type.count * kb.ft_bytes)
    st.set_metadata("nontemporal", kb.module.add_metadata([ir.Constant(I32, 1)]))


def _memory_barrier(kb: KB) -> None:
    """An empty asm statement that may read and write memory: LLVM cannot carry values held in memory across it
    in registers (emits no instruction)."""
    kb.b.asm(ir.FunctionType(ir.VoidType(), []), "", "~{memory}", [], True)


def _store_rows(kb: KB, g: _Geo, S, out, o0: Index, L: int, ncols: int) -> None:
    """For ~gw_dw: the scratch's `ncols` columns [column][L] (channels o0 .. o0 + L - 1 of dW [O, KK]) to the
    channels' rows, through L×L transposes."""
    b_ = kb.b
    vt = _vec(kb, L)
    part = g.O % L
    for blk in range(0, ncols, max(L, 1)):
        r = min(max(L, 1), ncols - blk)
        if L == 1:
            kb.store(kb.load(S, blk), out, kb.add(kb.mul(o0, g.KK), blk))
            continue
        rows = [b_.load(b_.bitcast(kb.ptr(S, (blk + k) * L), vt.as_pointer())) for k in range(r)]
        rows += [ir.Constant(vt, ir.Undefined)] * (L - r)
        outs = transpose_tile(kb, rows)
        for lane in range(L):
            def store(lane=lane):
                _store_prefix(kb, outs[lane], out, kb.add(kb.mul(kb.add(o0, lane), g.KK), blk), r)
            if part and lane >= part:
                with kb.if_(kb.icmp("<", kb.add(o0, lane), g.O)):
                    store()
            else:
                store()


# -- dense of [N, F] -------------------------------------------------------------------------------------------------

@kernel("~gw_dense")
def emit_gw_dense(kc: KernelContext) -> None:
    """dW [U, F] = Σ_n dy[n, u]·x[n, f]: tiles of Tu units (dy broadcast) × up to Bf pieces of f (vectors of x,
    then the narrower tail pieces), the sum over the batch in registers, stored straight to dW."""
    kb = kc.kb
    x, dy, out = kc.inputs[0], kc.inputs[1], kc.out
    N, F = x.dims[0], int(x.dims[1])
    U = int(dy.dims[1])
    vw = kb.vw
    regs = _regs(kb)
    nvec = F // vw
    Bf = min(4, max(1, nvec))
    Tu_max = max(1, (regs - Bf - 2) // Bf)
    n_ub = -(-U // Tu_max)
    Tu = -(-U // n_ub)
    u_tail = U - (n_ub - 1) * Tu
    u_full = n_ub if u_tail == Tu else n_ub - 1
    nfb = nvec // Bf  # blocks of Bf whole vectors
    rest = [(k * vw, vw) for k in range(nfb * Bf, nvec)] + [(o, ln or 1) for o, ln in kb.tail_chunks(nvec * vw, F)]
    tail_blocks = [rest[k:k + Bf] for k in range(0, len(rest), Bf)]

    def tile(u0: Index, tu: int, f0: Index, pieces: list[tuple[int, int]]) -> None:
        def body(n, accs):
            xb = kb.add(kb.mul(n, F), f0)
            xv = [kb.load_n(x.ptr, kb.add(xb, off), ln if ln > 1 else None) for off, ln in pieces]
            accs = list(accs)
            for t in range(tu):
                ds = kb.load(dy.ptr, kb.add(kb.mul(n, U), u0, t))
                for k, (off, ln) in enumerate(pieces):
                    s = kb.splat(ds, ln) if ln > 1 else ds
                    accs[t * len(pieces) + k] = kb.fma(xv[k], s, accs[t * len(pieces) + k])
            return accs

        inits = [_zero(kb, ln) for _ in range(tu) for _, ln in pieces]
        accs = kb.carried_loop(0, N, inits, body, name="n")
        for t in range(tu):
            for k, (off, ln) in enumerate(pieces):
                idx = kb.add(kb.mul(kb.add(u0, t), F), f0, off)
                kb.store_n(accs[t * len(pieces) + k], out.ptr, idx, ln if ln > 1 else None)

    full_pieces = [(k * vw, vw) for k in range(Bf)]
    variants = []
    for ucount, tu, ubase in ((u_full, Tu, 0), (1 if u_full < n_ub else 0, u_tail, u_full * Tu)):
        if not ucount:
            continue
        if nfb:
            def fv(u, ucount=ucount, tu=tu, ubase=ubase):
                ub, fb = _coords(kb, u, [ucount, nfb])
                tile(kb.add(ubase, kb.mul(ub, tu)), tu, kb.mul(fb, Bf * vw), full_pieces)

            variants.append((ucount * nfb, fv))
        for blk in tail_blocks:
            def tv(u, ucount=ucount, tu=tu, ubase=ubase, blk=blk):
                tile(kb.add(ubase, kb.mul(u, tu)), tu, 0, blk)

            variants.append((ucount, tv))
    _run_items(kc, variants)
