"""Dense (fully connected) layers: y[N, units] = x[N, F]·weightᵀ + bias.

At batch 1 a dense layer is a matrix-vector product bound by memory bandwidth (VGG's fc6 streams 411 MB of weights
for 205 MB of multiply-adds), so the kernel reads each weight row once, front to back, as vectors: a block of
`ROWS` rows at a time (several independent streams for the prefetchers, and several FMA chains), each row's dot
products accumulating in vector registers and reduced with one horizontal sum at the end. For a batch, the samples
go in groups of up to `GROUP`: one pass over a block of weight rows serves the whole group (rows × samples
accumulators), so weights come from memory once per group instead of once per sample (the next group finds the
block in L2). Threads take contiguous ranges of row blocks. The weight stays as stored ([units, F], row-major): rows
are already the order the kernel reads. (Measured and dropped on znver4: software prefetching of the weight rows, and
splitting F into chunks so a batch's inputs stay in L1/L2 across many rows, which breaks the weight stream into
short segments and ran slower at every chunk size tried, 512 to 8192.)

F need not be a multiple of the vector width: the last F mod vw elements are summed with narrower vectors (8, 4, 2
lanes) and a final scalar, all with static sizes.
"""

from __future__ import annotations

from llvmlite import ir

from ..builder import Index
from ..kernel import KernelContext, kernel

ROWS = 4  # weight rows per block
GROUP = 4  # samples sharing one pass over a block of weight rows
MAX_ACC = 16  # vector accumulators per block (of the 32 AVX-512 registers, leaving room for the loads)


def _dot_block(kc: KernelContext, xs: list[ir.Value], ws: list[ir.Value], F: int) -> list[list[ir.Value]]:
    """sums[r][s] = Σ_f ws[r][f]·xs[s][f] for the row pointers `ws` and sample pointers `xs` (scalars)."""
    kb = kc.kb
    vw = kb.vw
    R, S = len(ws), len(xs)
    uf = max(1, min(4, MAX_ACC // (R * S)))  # vectors per row and sample in flight
    nvec = F // vw
    niter = nvec // uf
    zero = kb.fconst(0.0, vw)

    def step(off: Index, accs: list[ir.Value], u: int) -> None:
        wv = [kb.vload(w, off) for w in ws]
        xv = [kb.vload(x, off) for x in xs]
        for r in range(R):
            for s in range(S):
                k = (r * S + s) * uf + u
                accs[k] = kb.fma(wv[r], xv[s], accs[k])

    def body(i, accs):
        base = kb.mul(i, uf * vw)
        for u in range(uf):
            step(kb.add(base, u * vw), accs, u)
        return accs

    accs = kb.carried_loop(0, niter, [zero] * (R * S * uf), body, name="f")
    for j, v in enumerate(range(niter * uf, nvec)):  # whole vectors left over
        step(v * vw, accs, j % uf)
    sums = []
    for r in range(R):
        row = []
        for s in range(S):
            k = (r * S + s) * uf
            acc = accs[k]
            for u in range(1, uf):
                acc = kb.fadd(acc, accs[k + u])
            row.append(kb.hsum(acc) if nvec else kb.fconst(0.0))
        sums.append(row)
    # the tail: narrower vectors, then a scalar
    for off, lanes in kb.tail_chunks(nvec * vw, F):
        wv = [kb.load_n(w, off, lanes) for w in ws]
        xv = [kb.load_n(x, off, lanes) for x in xs]
        part = [[kb.fmul(wv[r], xv[s]) for s in range(S)] for r in range(R)]
        if lanes:
            part = [[kb.hsum(p) for p in row] for row in part]
        sums = [[kb.fadd(sums[r][s], part[r][s]) for s in range(S)] for r in range(R)]
    return sums


@kernel("dense")
def emit_dense(kc: KernelContext) -> None:
    kb, b = kc.kb, kc.kb.b
    x, y = kc.inputs[0], kc.out
    n = x.dims[0]
    F, U = int(x.dims[1]), int(y.dims[1])
    w = kc.params["weight"].ptr
    bias = kc.params["bias"].ptr if "bias" in kc.params else None

    def block(row0: Index, nrows: int, s0: Index, nsamples: int) -> None:
        """Rows [row0, row0 + nrows) for samples [s0, s0 + nsamples)."""
        ws = [kb.ptr(w, kb.mul(kb.add(row0, r), F)) for r in range(nrows)]
        xs = [kb.ptr(x.ptr, kb.mul(kb.add(s0, s), F)) for s in range(nsamples)]
        sums = _dot_block(kc, xs, ws, F)
        for r in range(nrows):
            bv = kb.load(bias, kb.add(row0, r)) if bias is not None else None
            for s in range(nsamples):
                v = sums[r][s] if bv is None else kb.fadd(sums[r][s], bv)
                idx = kb.add(kb.mul(kb.add(s0, s), U), row0, r)
                kb.store(kc.epilogue(v, idx), y.ptr, idx)

    def rows(row0: Index, nrows: int) -> None:
        """A block of rows for every sample: whole groups, then a pair and a single sample as needed."""
        groups = kb.div(n, GROUP)
        with kb.loop(0, groups, name="g") as g:
            block(row0, nrows, kb.mul(g, GROUP), GROUP)
        done = kb.mul(groups, GROUP)
        left = kb.sub(n, done)
        if isinstance(left, int):  # a static batch
            if left >= 2:
                block(row0, nrows, done, 2)
            if left % 2:
                block(row0, nrows, kb.sub(n, 1), 1)
            return
        with kb.if_(kb.icmp(">=", left, 2)):
            block(row0, nrows, done, 2)
        with kb.if_(b.trunc(left, ir.IntType(1))):  # an odd count left: the last sample
            block(row0, nrows, kb.sub(n, 1), 1)

    full, part = divmod(U, ROWS)
    if full:
        lo, hi = kc.split(full)
        with kb.loop(lo, hi, name="blk") as blk:
            rows(kb.mul(blk, ROWS), ROWS)
    if part:
        # the rows after the last whole block: thread 0, which has the fewest whole blocks (split rounds down)
        with kb.if_(b.icmp_signed("==", kc.tid, kb.i64(0))):
            rows(full * ROWS, part)
