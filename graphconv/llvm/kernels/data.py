"""Data-movement kernels: layout conversions (to_blocked, from_blocked), concat, slice, pad, transpose, reshape,
flatten, upsample.

Every kernel here copies (or, for bilinear upsampling, interpolates) elements; none has an epilogue (their fusion
kind is injective) and none runs in place. The work is split between threads over the output.

The layout conversions and the transposes whose last axis moves are batches of 2-d transposes, done in square tiles
of L×L elements through L vectors of L lanes (`transpose_tile`: log2(L) stages of two-source shuffles, which x86
lowers to vpermt2ps and friends), partial tiles at the edges element by element.
"""

from __future__ import annotations

import math
from typing import Callable

from llvmlite import ir

from ..builder import I32, KB, Index
from ..kernel import KernelContext, Unsupported, kernel
from .elementwise import flat_loop, inner_loop as _inner_loop


# -- helpers -----------------------------------------------------------------------------------------------------

def transpose_tile(kb: KB, rows: list[ir.Value]) -> list[ir.Value]:
    """Transpose an L×L tile held as L vectors of L lanes (L a power of two): returns the L columns.

    Stage d (1, 2, 4, ...) swaps bit d of the row index with bit d of the lane index between rows i and i + d."""
    n = len(rows)
    rows = list(rows)
    mt = ir.VectorType(I32, n)
    d = 1
    while d < n:
        lo_mask = ir.Constant(mt, [c if not c & d else n + c - d for c in range(n)])
        hi_mask = ir.Constant(mt, [c + d if not c & d else n + c for c in range(n)])
        out = list(rows)
        for i in range(n):
            if i & d:
                continue
            a, c = rows[i], rows[i + d]
            out[i] = kb.b.shuffle_vector(a, c, lo_mask)
            out[i + d] = kb.b.shuffle_vector(a, c, hi_mask)
        rows = out
        d *= 2
    return rows


def copy_flat(kc: KernelContext, x, y) -> None:
    """y = x element for element (same size), vectorized and split between threads."""
    kb = kc.kb
    flat_loop(kc, y.numel(kb), lambda i, lanes: kb.store_n(kb.load_n(x.ptr, i, lanes), y.ptr, i, lanes))


def _tile_lanes(kb: KB, A: int, B: int) -> int:
    """The tile size for transposing A×B matrices: a power of two from 2 to the vector width (and at most A and B)
    with the least estimated work, an element of an L×L tile costing (2 + log2 L)/L instructions (L loads, L·log2 L
    shuffles, L stores) and one of a partial tile about 3; 1 means element by element."""
    best, best_cost = 1, 3.0 * A * B
    lanes = 2
    while lanes <= min(kb.vw, A, B):
        full = (A // lanes) * (B // lanes) * lanes * lanes
        cost = full * (2 + math.log2(lanes)) / lanes + 3.0 * (A * B - full)
        if cost < best_cost:
            best, best_cost = lanes, cost
        lanes *= 2
    return best


def batched_transpose(kc: KernelContext, src: ir.Value, dst: ir.Value, R: Index, A: int, B: int, *,
                      src_base: Callable[[Index], Index] | None = None,
                      dst_base: Callable[[Index], Index] | None = None,
                      src_row: Index | None = None, dst_row: Index | None = None) -> None:
    """dst[r][b][a] = src[r][a][b] for r < R, a < A, b < B, split between threads by tiles.

    Matrix r of src starts at src_base(r) (default r·A·B) and its rows are src_row apart (default B); matrix r of
    dst starts at dst_base(r) (default r·A·B), its rows dst_row apart (default A)."""
    kb = kc.kb
    src_base = src_base or (lambda r: kb.mul(r, A * B))
    dst_base = dst_base or (lambda r: kb.mul(r, A * B))
    src_row = B if src_row is None else src_row
    dst_row = A if dst_row is None else dst_row
    L = _tile_lanes(kb, A, B)
    if L == 1:  # a row or a column per matrix: a plain loop over (r, a, b) split by r
        lo, hi = kc.split(R)
        with kb.loop(lo, hi, name="r") as r:
            sb, db = src_base(r), dst_base(r)
            with kb.loop(0, A, name="a") as a:
                with kb.loop(0, B, name="b") as b_:
                    v = kb.load(src, kb.add(sb, kb.mul(a, src_row), b_))
                    kb.store(v, dst, kb.add(db, kb.mul(b_, dst_row), a))
        return
    ua, ub = -(-A // L), -(-B // L)
    fa, fb = A // L, B // L  # full tiles along each axis
    lo, hi = kc.split(kb.mul(R, ua * ub))
    with kb.loop(lo, hi, name="u") as u:
        r = kb.div(u, ua * ub)
        t = kb.rem(u, ua * ub)
        ta, tb = kb.div(t, ub), kb.rem(t, ub)
        a0, b0 = kb.mul(ta, L), kb.mul(tb, L)
        sb = kb.add(src_base(r), kb.mul(a0, src_row), b0)
        db = kb.add(dst_base(r), kb.mul(b0, dst_row), a0)
        full = kb.land(kb.icmp("<", ta, fa), kb.icmp("<", tb, fb))
        with kb.if_else(full) as (then, otherwise):
            with then:
                rows = [kb.vload(src, kb.add(sb, kb.mul(i, src_row)), L) for i in range(L)]
                for j, col in enumerate(transpose_tile(kb, rows)):
                    kb.vstore(col, dst, kb.add(db, kb.mul(j, dst_row)))
            with otherwise:  # a partial tile at the edge
                na = kb.imin(L, kb.sub(A, a0))
                nb = kb.imin(L, kb.sub(B, b0))
                with kb.loop(0, na, name="pa") as a:
                    with kb.loop(0, nb, name="pb") as b_:
                        v = kb.load(src, kb.add(sb, kb.mul(a, src_row), b_))
                        kb.store(v, dst, kb.add(db, kb.mul(b_, dst_row), a))


def _copy(kb: KB, src: ir.Value, s0: Index, dst: ir.Value, d0: Index, n: Index) -> None:
    """dst[d0:d0+n] = src[s0:s0+n] in vectors (this thread only; the two ranges must not overlap). A tail shorter
    than a vector is one more vector ending at n (overlapping the last full one, rewriting the same values) when n
    is at least a vector, else single elements."""
    vw = kb.vw
    if isinstance(n, int):
        nvec, tail = divmod(n, vw)
        with kb.loop(0, nvec, name="cv") as v:
            off = kb.mul(v, vw)
            kb.vstore(kb.vload(src, kb.add(s0, off)), dst, kb.add(d0, off))
        if tail and nvec:
            kb.vstore(kb.vload(src, kb.add(s0, n - vw)), dst, kb.add(d0, n - vw))
        elif tail:
            for k in range(n):
                kb.store(kb.load(src, kb.add(s0, k)), dst, kb.add(d0, k))
        return
    nvec = kb.div(n, vw)
    with kb.loop(0, nvec, name="cv") as v:
        off = kb.mul(v, vw)
        kb.vstore(kb.vload(src, kb.add(s0, off)), dst, kb.add(d0, off))
    tail = kb.sub(n, kb.mul(nvec, vw))
    with kb.if_(kb.icmp(">", tail, 0)):
        with kb.if_else(kb.icmp(">", nvec, 0)) as (then, otherwise):
            with then:
                off = kb.sub(n, vw)
                kb.vstore(kb.vload(src, kb.add(s0, off)), dst, kb.add(d0, off))
            with otherwise:
                with kb.loop(0, n, name="ct") as t:
                    kb.store(kb.load(src, kb.add(s0, t)), dst, kb.add(d0, t))


# -- layout conversions ------------------------------------------------------------------------------------------

@kernel("to_blocked")
def emit_to_blocked(kc: KernelContext) -> None:
    """[N, C, H, W] -> [N, C/b, H, W, b]: for each of the N·C/b channel groups, the b×HW matrix transposed."""
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    b = kc.attrs["block"]
    n, c, h, w = x.dims
    batched_transpose(kc, x.ptr, y.ptr, kb.mul(n, c // b), b, h * w)


@kernel("from_blocked")
def emit_from_blocked(kc: KernelContext) -> None:
    """[N, C/b, H, W, b] -> [N, C, H, W]: for each channel group, the HW×b matrix transposed."""
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    n, cb, h, w, b = x.dims
    batched_transpose(kc, x.ptr, y.ptr, kb.mul(n, cb), h * w, b)


# -- copies ------------------------------------------------------------------------------------------------------

def _fill(kb: KB, value: float, dst: ir.Value, d0: Index, n: Index) -> None:
    """dst[d0:d0+n] = value (this thread only)."""
    vw = kb.vw
    if isinstance(n, int) and n < vw:
        for k in range(n):
            kb.store(kb.fconst(value), dst, kb.add(d0, k))
        return
    vec = kb.fconst(value, vw)
    nvec = kb.div(n, vw)
    with kb.loop(0, nvec, name="fv") as v:
        kb.vstore(vec, dst, kb.add(d0, kb.mul(v, vw)))
    if not (isinstance(n, int) and n % vw == 0):
        with kb.loop(kb.mul(nvec, vw), n, name="ft") as t:
            kb.store(kb.fconst(value), dst, kb.add(d0, t))


def copy_rows(kc: KernelContext, rows: Index, inner: int, src: ir.Value, src_off: Callable[[Index], Index],
              dst: ir.Value, dst_off: Callable[[Index], Index]) -> None:
    """Copy `rows` runs of `inner` contiguous elements, run r from src[src_off(r):] to dst[dst_off(r):]; the
    threads split the elements evenly (a run may be shared by two threads)."""
    kb = kc.kb
    lo, hi = kc.split(kb.mul(rows, inner))
    r0 = kb.div(lo, inner)
    r1 = kb.div(kb.add(hi, inner - 1), inner)
    with kb.loop(r0, r1, name="row") as r:
        rb = kb.mul(r, inner)
        a = kb.sub(kb.imax(lo, rb), rb)
        e = kb.sub(kb.imin(hi, kb.add(rb, inner)), rb)
        _copy(kb, src, kb.add(src_off(r), a), dst, kb.add(dst_off(r), a), kb.sub(e, a))


def _coords(kb: KB, index: Index, dims: list[Index]) -> list[Index]:
    """The C-order coordinates of flat `index` in `dims`."""
    out: list[Index] = []
    rest = index
    for k in range(len(dims) - 1, 0, -1):
        out.append(kb.rem(rest, dims[k]))
        rest = kb.div(rest, dims[k])
    out.append(rest)
    return out[::-1]


def _c_strides(dims: list[Index], kb: KB) -> list[Index]:
    out: list[Index] = [1] * len(dims)
    for k in range(len(dims) - 2, -1, -1):
        out[k] = kb.mul(out[k + 1], dims[k + 1])
    return out


def _no_block(kc: KernelContext) -> None:
    if kc.block:
        raise Unsupported(f"{kc.node.op} in the blocked layout")


@kernel("flatten", "reshape")
def emit_flat_copy(kc: KernelContext) -> None:
    """A copy of the data in C order (the memory planner gives views their own buffer)."""
    _no_block(kc)
    copy_flat(kc, kc.inputs[0], kc.out)


# -- concat, slice, pad ------------------------------------------------------------------------------------------

@kernel("concat")
def emit_concat(kc: KernelContext) -> None:
    """Each input copied into its part of the output: [outer, size_i·inner] runs. In the blocked layout the axis is
    1 of [N, C/b, H, W, b]: whole blocks of channels follow each other, the same copy on the rank-5 shapes. Inputs
    the code generator had written in place (attrs["placed"], graphconv/llvm/codegen.py) are not copied."""
    kb, y = kc.kb, kc.out
    axis = kc.attrs["axis"] % y.rank
    if kc.block and axis != 1:
        raise Unsupported(f"blocked concat along axis {axis}")
    outer = kb.mul(*y.dims[:axis]) if axis else 1
    rest = math.prod(int(d) for d in y.dims[axis + 1:])
    out_inner = int(y.dims[axis]) * rest
    placed = kc.attrs.get("placed") or (False,) * len(kc.inputs)  # inputs their producers wrote in place
    off = 0
    for t, done in zip(kc.inputs, placed):
        inner = int(t.dims[axis]) * rest
        if not done:
            copy_rows(kc, outer, inner, t.ptr, lambda r, inner=inner: kb.mul(r, inner),
                      y.ptr, lambda r, off=off: kb.add(kb.mul(r, out_inner), off))
        off += inner


@kernel("slice")
def emit_slice(kc: KernelContext) -> None:
    """Runs of the elements after the axis: one run per outer index for step 1, one per taken index otherwise."""
    _no_block(kc)
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    a = kc.attrs
    axis = a["axis"] % x.rank
    size = int(x.dims[axis])
    step = a["step"]
    length = int(y.dims[axis])
    start = slice(a["start"], a["end"], step).indices(size)[0]  # resolved attributes resolve to themselves
    outer = kb.mul(*x.dims[:axis])
    inner = math.prod(int(d) for d in x.dims[axis + 1:])
    if step == 1:
        copy_rows(kc, outer, length * inner, x.ptr, lambda r: kb.add(kb.mul(r, size * inner), start * inner),
                  y.ptr, lambda r: kb.mul(r, length * inner))
        return
    if inner > 1:
        def src_off(q):
            o, k = kb.div(q, length), kb.rem(q, length)
            return kb.mul(kb.add(kb.mul(o, size), start, kb.mul(k, step)), inner)

        copy_rows(kc, kb.mul(outer, length), inner, x.ptr, src_off, y.ptr, lambda q: kb.mul(q, inner))
        return
    # single elements with a stride: a loop per outer index
    lo, hi = kc.split(outer)
    with kb.loop(lo, hi, name="o") as o:
        sb, db = kb.add(kb.mul(o, size), start), kb.mul(o, length)
        with kb.loop(0, length, name="k") as k:
            kb.store(kb.load(x.ptr, kb.add(sb, kb.mul(k, step))), y.ptr, kb.add(db, k))


def _source_index(kb: KB, i: Index, n: int, mode: str) -> Index:
    """The input index an out-of-range index i of an axis of size n reads: reflect mirrors without repeating the
    edge (|i| below, 2(n-1) - i above; pads are below n), edge clamps."""
    if mode == "edge":
        return kb.imin(kb.imax(i, 0), n - 1)
    if isinstance(i, int):
        j = abs(i)
        return min(j, 2 * (n - 1) - j)
    j = kb.b.select(kb.icmp("<", i, 0), kb.b.neg(i), i)
    return kb.imin(j, kb.sub(2 * (n - 1), j))


@kernel("pad")
def emit_pad(kc: KernelContext) -> None:
    """One output row at a time (split between threads): the left border, the input row, the right border; the
    rows above and below are the fill value (constant) or a mirrored / edge input row."""
    _no_block(kc)
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    a = kc.attrs
    top, left, bottom, right = a["pads"]
    mode = a["mode"]
    n, c, h, w = x.dims
    oh, ow = int(y.dims[2]), int(y.dims[3])
    rows = kb.mul(n, c, oh)
    lo, hi = kc.split(rows)
    with kb.loop(lo, hi, name="r") as r:
        nc, orow = kb.div(r, oh), kb.rem(r, oh)
        ybase = kb.mul(r, ow)
        ih = kb.sub(orow, top)
        if mode == "constant":
            value = float(a["value"])
            inside = kb.land(kb.icmp(">=", ih, 0), kb.icmp("<", ih, h))
            with kb.if_else(inside) as (then, otherwise):
                with then:
                    xbase = kb.mul(kb.add(kb.mul(nc, h), ih), w)
                    _fill(kb, value, y.ptr, ybase, left)
                    _copy(kb, x.ptr, xbase, y.ptr, kb.add(ybase, left), w)
                    _fill(kb, value, y.ptr, kb.add(ybase, left + w), right)
                with otherwise:
                    _fill(kb, value, y.ptr, ybase, ow)
        else:
            xbase = kb.mul(kb.add(kb.mul(nc, h), _source_index(kb, ih, h, mode)), w)
            if left:
                with kb.loop(0, left, name="pl") as k:
                    iw = _source_index(kb, kb.sub(k, left), w, mode)
                    kb.store(kb.load(x.ptr, kb.add(xbase, iw)), y.ptr, kb.add(ybase, k))
            _copy(kb, x.ptr, xbase, y.ptr, kb.add(ybase, left), w)
            if right:
                with kb.loop(0, right, name="pr") as k:
                    iw = _source_index(kb, kb.add(k, w), w, mode)
                    kb.store(kb.load(x.ptr, kb.add(xbase, iw)), y.ptr, kb.add(ybase, left + w, k))


# -- transpose ---------------------------------------------------------------------------------------------------

def _simplify_perm(dims: list[Index], perm: list[int]) -> tuple[list[Index], list[int]]:
    """The same permutation over fewer axes: axes of size 1 dropped, runs of input axes that stay adjacent (in
    order) merged. Returns the merged input dims and the permutation of them (dims are Python ints here)."""
    keep = [k for k in range(len(dims)) if not (isinstance(dims[k], int) and dims[k] == 1)]
    if not keep:
        return [1], [0]
    renum = {k: j for j, k in enumerate(keep)}
    kdims = [dims[k] for k in keep]
    kperm = [renum[p] for p in perm if p in renum]
    groups: list[list[int]] = []
    for p in kperm:
        if groups and groups[-1][-1] + 1 == p:
            groups[-1].append(p)
        else:
            groups.append([p])
    order = sorted(range(len(groups)), key=lambda g: groups[g][0])  # merged input axes in input order
    mdims: list[Index] = [math.prod(int(kdims[k]) for k in groups[g]) for g in order]
    mperm = [order.index(g) for g in range(len(groups))]
    return mdims, mperm


@kernel("transpose")
def emit_transpose(kc: KernelContext) -> None:
    """After dropping unit axes and merging axes that stay adjacent: a copy of contiguous runs when the last axis
    stays last, else a batch of 2-d transposes (the input's last axis against the output's last axis) in tiles."""
    _no_block(kc)
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    perm = list(kc.attrs["perm"])
    dims = list(x.dims)
    # the batch axis is first in both and never merges with another unless the permutation keeps it in place, so
    # merging runtime dims only happens for the leading run of axes: do it symbolically
    lead = 1
    while lead < len(perm) and perm[lead] == lead:
        lead += 1
    n_lead = kb.mul(*dims[:lead])
    # the runtime size of the leading axes stands as 2 (a size > 1 that is not dropped) while simplifying
    sdims: list[Index] = [n_lead if isinstance(n_lead, int) else 2] + [int(d) for d in dims[lead:]]
    sperm = [0] + [p - lead + 1 for p in perm[lead:]]
    mdims, mperm = _simplify_perm(sdims, sperm)
    # put the runtime size back in the merged axis that holds the placeholder (always the first one)
    if not isinstance(n_lead, int):
        mdims[0] = n_lead if mdims[0] == 2 else kb.mul(n_lead, mdims[0] // 2)
    m = len(mdims)
    if m == 1 or mperm == list(range(m)):
        copy_flat(kc, x, y)
        return
    in_strides = _c_strides(mdims, kb)
    out_dims = [mdims[p] for p in mperm]
    out_strides = _c_strides(out_dims, kb)
    if mperm[-1] == m - 1:  # the last axis stays last: runs of it
        inner = int(mdims[-1])
        rdims = out_dims[:-1]

        def src_off(r):
            cs = _coords(kb, r, rdims)
            return kb.add(*[kb.mul(cc, in_strides[mperm[i]]) for i, cc in enumerate(cs)])

        copy_rows(kc, kb.mul(*rdims), inner, x.ptr, src_off, y.ptr, lambda r: kb.mul(r, inner))
        return
    p = mperm[-1]  # the input axis that becomes the output's last
    q = mperm.index(m - 1)  # where the input's last axis goes
    A, B = mdims[p], mdims[m - 1]
    if not (isinstance(A, int) and isinstance(B, int)):
        raise Unsupported(f"transpose {perm} of {x.type}")
    others = [i for i in range(m) if i not in (q, m - 1)]  # output axes of the batch of matrices
    rdims = [out_dims[i] for i in others]

    def bases(r):
        cs = _coords(kb, r, rdims) if rdims else []
        return (kb.add(0, *[kb.mul(cc, in_strides[mperm[i]]) for i, cc in zip(others, cs)]),
                kb.add(0, *[kb.mul(cc, out_strides[i]) for i, cc in zip(others, cs)]))

    batched_transpose(kc, x.ptr, y.ptr, kb.mul(*rdims) if rdims else 1, A, B,
                      src_base=lambda r: bases(r)[0], dst_base=lambda r: bases(r)[1],
                      src_row=in_strides[p], dst_row=out_strides[q])


# -- upsample ----------------------------------------------------------------------------------------------------

def const_table(kb: KB, name: str, ty: ir.Type, values) -> ir.Value:
    """A constant global array in the kernel's module (named after the kernel, so linked modules never clash);
    returns a pointer to its first element."""
    values = list(values)
    aty = ir.ArrayType(ty, len(values))
    g = ir.GlobalVariable(kb.module, aty, name=f"{kb.function.name}.{name}")
    g.linkage = "internal"
    g.global_constant = True
    g.initializer = ir.Constant(aty, [ir.Constant(ty, int(v) if isinstance(ty, ir.IntType) else float(v))
                                      for v in values])
    return kb.b.gep(g, [ir.Constant(I32, 0), ir.Constant(I32, 0)], inbounds=True)


def _load_index(kb: KB, table: ir.Value, i: Index) -> ir.Value:
    return kb.b.sext(kb.load(table, i), ir.IntType(64))


def _nearest_row(kb: KB, x: ir.Value, xb: Index, w: int, y: ir.Value, yb: Index, ow: int,
                 cols: ir.Value | None) -> None:
    """One output row of nearest upsampling from the input row at xb: an integer factor by shuffles, any other
    ratio through the column table."""
    vw = kb.vw
    if ow % w == 0:
        sw = ow // w
        if sw == 1:
            _copy(kb, x, xb, y, yb, w)
            return
        if sw <= vw and vw % sw == 0:  # vw/sw inputs -> one vector of vw outputs
            k = vw // sw
            mask = ir.Constant(ir.VectorType(I32, vw), [i // sw for i in range(vw)])
            nvec = w // k
            with kb.loop(0, nvec, name="uv") as v:
                src = kb.vload(x, kb.add(xb, kb.mul(v, k)), k)
                kb.vstore(kb.b.shuffle_vector(src, src, mask), y, kb.add(yb, kb.mul(v, vw)))
            start = nvec * k
        else:
            start = 0
        with kb.loop(start, w, name="ue") as iw:
            kb.vstore(kb.splat(kb.load(x, kb.add(xb, iw)), sw), y, kb.add(yb, kb.mul(iw, sw)))
        return
    with kb.loop(0, ow, name="uo") as o:
        kb.store(kb.load(x, kb.add(xb, _load_index(kb, cols, o))), y, kb.add(yb, o))


@kernel("upsample")
def emit_upsample(kc: KernelContext) -> None:
    """nearest: out[i, j] = x[i·H/OH, j·W/OW] (floors); whole output rows, the rows of an integer factor copied
    from the first. bilinear: per output row, the two input rows blended into a workspace row (vectorized), then
    each output pixel from two of its pixels; indices and weights are tables computed as the reference does."""
    from ...ops.resize import _linear, _nearest

    _no_block(kc)
    kb, x, y = kc.kb, kc.inputs[0], kc.out
    a = kc.attrs
    n, c, h, w = x.dims
    oh, ow = int(y.dims[2]), int(y.dims[3])
    i32 = I32
    if a["mode"] == "nearest":
        cols = None if ow % w == 0 else const_table(kb, "cols", i32, _nearest(w, ow))
        if oh % h == 0:  # each input row makes sh output rows: compute the first, copy it to the others
            sh = oh // h
            lo, hi = kc.split(kb.mul(n, c, h))
            with kb.loop(lo, hi, name="r") as r:
                yb = kb.mul(r, sh * ow)
                _nearest_row(kb, x.ptr, kb.mul(r, w), w, y.ptr, yb, ow, cols)
                for k in range(1, sh):
                    _copy(kb, y.ptr, yb, y.ptr, kb.add(yb, k * ow), ow)
            return
        rows = const_table(kb, "rows", i32, _nearest(h, oh))
        lo, hi = kc.split(kb.mul(n, c, oh))
        with kb.loop(lo, hi, name="r") as r:
            nc, o = kb.div(r, oh), kb.rem(r, oh)
            xb = kb.mul(kb.add(kb.mul(nc, h), _load_index(kb, rows, o)), w)
            _nearest_row(kb, x.ptr, xb, w, y.ptr, kb.mul(r, ow), ow, cols)
        return
    if a["mode"] != "bilinear":
        raise Unsupported(f"upsample mode {a['mode']!r}")
    r0, r1, fr = _linear(h, oh, a["align_corners"])
    c0, c1, fc = _linear(w, ow, a["align_corners"])
    t_r0, t_r1 = const_table(kb, "r0", i32, r0), const_table(kb, "r1", i32, r1)
    t_fr, t_gr = const_table(kb, "fr", kb.ft, fr), const_table(kb, "gr", kb.ft, 1 - fr)
    t_c0, t_c1 = const_table(kb, "c0", i32, c0), const_table(kb, "c1", i32, c1)
    t_fc, t_gc = const_table(kb, "fc", kb.ft, fc), const_table(kb, "gc", kb.ft, 1 - fc)
    tmp = kc.thread_scratch(w * kb.ft_bytes)
    lo, hi = kc.split(kb.mul(n, c, oh))
    with kb.loop(lo, hi, name="r") as r:
        nc, o = kb.div(r, oh), kb.rem(r, oh)
        plane = kb.mul(nc, h * w)
        xa = kb.add(plane, kb.mul(_load_index(kb, t_r0, o), w))
        xc = kb.add(plane, kb.mul(_load_index(kb, t_r1, o), w))
        fa, fb = kb.load(t_gr, o), kb.load(t_fr, o)  # weights of row r0 (1 - fr) and of row r1 (fr)
        va, vb = kb.splat(fa), kb.splat(fb)

        def blend(i, lanes):
            if lanes:
                v = kb.fadd(kb.fmul(kb.vload(x.ptr, kb.add(xa, i), lanes), va),
                            kb.fmul(kb.vload(x.ptr, kb.add(xc, i), lanes), vb))
                kb.vstore(v, tmp, i)
            else:
                v = kb.fadd(kb.fmul(kb.load(x.ptr, kb.add(xa, i)), fa), kb.fmul(kb.load(x.ptr, kb.add(xc, i)), fb))
                kb.store(v, tmp, i)

        _inner_loop(kb, w, blend)
        yb = kb.mul(r, ow)
        with kb.loop(0, ow, name="j") as j:
            left = kb.load(tmp, _load_index(kb, t_c0, j))
            rgt = kb.load(tmp, _load_index(kb, t_c1, j))
            v = kb.fadd(kb.fmul(left, kb.load(t_gc, j)), kb.fmul(rgt, kb.load(t_fc, j)))
            kb.store(v, y.ptr, kb.add(yb, j))
