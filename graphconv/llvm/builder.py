"""Structured helpers over llvmlite's IRBuilder, so kernel code reads like the loops it generates.

`KB` wraps an `ir.IRBuilder` for one element type (float or double) and one vector width:

    with kb.loop(0, n, name="i") as i:          # for (i = 0; i < n; i++)
        x = kb.vload(src, kb.mul(i, kb.vw))       # <vw x float> at src + i*vw
        kb.vstore(kb.max(x, kb.splat(0.0)), dst, kb.mul(i, kb.vw))

Index arithmetic (`add`, `mul`, ...) accepts Python ints and i64 values and folds constants in Python, so a kernel
written for static shapes produces the constants LLVM would otherwise have to propagate, and the dumped IR stays
short. Every value an op works on is either a scalar of the element type or a vector of it; the math helpers
(`exp`, `max`, `select`, ...) accept both.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from llvmlite import ir

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
VOID = ir.VoidType()
I8P = I8.as_pointer()

Index = int | ir.Value

FLOAT_TYPES = {"float32": ir.FloatType(), "float64": ir.DoubleType()}


def _suffix(ty: ir.Type) -> str:
    """LLVM's intrinsic name suffix for a type: f32, f64, v16f32, ..."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{_suffix(ty.element)}"
    if isinstance(ty, ir.FloatType):
        return "f32"
    if isinstance(ty, ir.DoubleType):
        return "f64"
    if isinstance(ty, ir.IntType):
        return f"i{ty.width}"
    raise TypeError(f"no intrinsic suffix for {ty}")


class KB:
    """An IRBuilder for kernels of element type `ft` with `vw` lanes per vector."""

    def __init__(self, builder: ir.IRBuilder, ft: ir.Type, vw: int):
        self.b = builder
        self.ft = ft
        self.vw = vw
        self.vt = ir.VectorType(ft, vw)

    @property
    def module(self) -> ir.Module:
        return self.b.module

    @property
    def function(self) -> ir.Function:
        return self.b.function

    # -- constants and types --------------------------------------------------------------------------------
    def i64(self, v: Index) -> ir.Value:
        return ir.Constant(I64, int(v)) if isinstance(v, int) else v

    def fconst(self, x: float, lanes: int | None = None) -> ir.Constant:
        """A float constant: scalar, or a splat of `lanes` lanes."""
        c = ir.Constant(self.ft, float(x))
        if lanes is None:
            return c
        return ir.Constant(ir.VectorType(self.ft, lanes), [c] * lanes)

    def vtype(self, lanes: int | None = None) -> ir.Type:
        return self.vt if lanes is None or lanes == self.vw else ir.VectorType(self.ft, lanes)

    def like(self, x: float, ref: ir.Value) -> ir.Value:
        """The constant `x` shaped like `ref` (scalar or vector)."""
        return self.fconst(x, ref.type.count if isinstance(ref.type, ir.VectorType) else None)

    def splat(self, x: ir.Value | float, lanes: int | None = None) -> ir.Value:
        """A vector with every lane `x` (a scalar value or a Python number)."""
        lanes = lanes or self.vw
        if not isinstance(x, ir.Value):
            return self.fconst(x, lanes)
        vt = ir.VectorType(x.type, lanes)
        v = self.b.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(I32, 0))
        return self.b.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(I32, lanes),
                                                                                      [0] * lanes))

    # -- index arithmetic (i64, folded when constant) ------------------------------------------------------------
    def add(self, *xs: Index) -> Index:
        const = sum(x for x in xs if isinstance(x, int))
        vals = [x for x in xs if not isinstance(x, int)]
        if not vals:
            return const
        out = vals[0]
        for v in vals[1:]:
            out = self.b.add(out, v)
        return self.b.add(out, self.i64(const)) if const else out

    def sub(self, a: Index, c: Index) -> Index:
        if isinstance(a, int) and isinstance(c, int):
            return a - c
        if isinstance(c, int) and c == 0:
            return a
        return self.b.sub(self.i64(a), self.i64(c))

    def mul(self, *xs: Index) -> Index:
        const = 1
        vals = []
        for x in xs:
            if isinstance(x, int):
                const *= x
            else:
                vals.append(x)
        if const == 0 or not vals:
            return const
        out = vals[0]
        for v in vals[1:]:
            out = self.b.mul(out, v)
        return self.b.mul(out, self.i64(const)) if const != 1 else out

    def div(self, a: Index, c: Index) -> Index:
        """Signed division rounding toward zero (indices here are never negative when divided)."""
        if isinstance(a, int) and isinstance(c, int):
            return int(a / c)
        if isinstance(c, int) and c == 1:
            return a
        return self.b.sdiv(self.i64(a), self.i64(c))

    def rem(self, a: Index, c: Index) -> Index:
        if isinstance(a, int) and isinstance(c, int):
            return a % c
        if isinstance(c, int) and c == 1:
            return 0
        return self.b.srem(self.i64(a), self.i64(c))

    def imin(self, a: Index, c: Index) -> Index:
        if isinstance(a, int) and isinstance(c, int):
            return min(a, c)
        a, c = self.i64(a), self.i64(c)
        return self.b.select(self.b.icmp_signed("<", a, c), a, c)

    def imax(self, a: Index, c: Index) -> Index:
        if isinstance(a, int) and isinstance(c, int):
            return max(a, c)
        a, c = self.i64(a), self.i64(c)
        return self.b.select(self.b.icmp_signed(">", a, c), a, c)

    def icmp(self, op: str, a: Index, c: Index) -> ir.Value:
        if isinstance(a, int) and isinstance(c, int):
            return ir.Constant(I1, int(eval(f"{a} {op} {c}")))  # noqa: S307 - ints and a fixed operator only
        return self.b.icmp_signed(op, self.i64(a), self.i64(c))

    def land(self, *conds: ir.Value) -> ir.Value:
        out = conds[0]
        for c in conds[1:]:
            out = self.b.and_(out, c)
        return out

    # -- control flow ------------------------------------------------------------------------------------------
    def _loop_head(self, start: Index, stop: Index, inits: Sequence[ir.Value], name: str):
        """The blocks of `for (i = start; i < stop; i++)` carrying `inits`; leaves the builder in the body."""
        b = self.b
        pre = b.block
        head = b.append_basic_block(f"{name}.head")
        body = b.append_basic_block(f"{name}.body")
        done = b.append_basic_block(f"{name}.end")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name=name)
        i.add_incoming(self.i64(start), pre)
        phis = []
        for k, v in enumerate(inits):
            p = b.phi(v.type, name=f"{name}.c{k}")
            p.add_incoming(v, pre)
            phis.append(p)
        b.cbranch(b.icmp_signed("<", i, self.i64(stop)), body, done)
        b.position_at_end(body)
        return i, phis, head, done

    def _loop_back(self, i, step: int, phis, values, head, done, name: str) -> None:
        b = self.b
        end = b.block
        i.add_incoming(b.add(i, self.i64(step), name=f"{name}.next"), end)
        for p, v in zip(phis, values):
            p.add_incoming(v, end)
        b.branch(head)
        b.position_at_end(done)

    @contextmanager
    def loop(self, start: Index, stop: Index, step: int = 1, name: str = "i") -> Iterator[Index]:
        """for (i = start; i < stop; i += step). A loop of exactly one iteration known in Python yields the
        constant start and emits no loop."""
        if isinstance(start, int) and isinstance(stop, int) and stop - start <= step and stop > start:
            yield start
            return
        i, _, head, done = self._loop_head(start, stop, (), name)
        yield i
        self._loop_back(i, step, (), (), head, done, name)

    def carried_loop(self, start: Index, stop: Index, inits: Sequence[ir.Value],
                     body: Callable[[Index, list[ir.Value]], list[ir.Value]], name: str = "i") -> list[ir.Value]:
        """for (i = start; i < stop; i++) vals = body(i, vals), the values carried in registers (phis); returns
        the values after the loop. A loop Python knows runs at most once is unrolled or skipped."""
        if isinstance(start, int) and isinstance(stop, int):
            if stop <= start:
                return list(inits)
            if stop - start == 1:
                return list(body(start, list(inits)))
        i, phis, head, done = self._loop_head(start, stop, inits, name)
        out = list(body(i, list(phis)))
        self._loop_back(i, 1, phis, out, head, done, name)
        return list(phis)

    def unrolled(self, start: int, stop: int, step: int = 1) -> range:
        """A loop unrolled in Python (static bounds): the body is emitted once per iteration."""
        return range(start, stop, step)

    @contextmanager
    def if_(self, cond: ir.Value) -> Iterator[None]:
        with self.b.if_then(cond):
            yield

    def if_else(self, cond: ir.Value):
        return self.b.if_else(cond)

    # -- memory ------------------------------------------------------------------------------------------------
    def ptr(self, base: ir.Value, index: Index) -> ir.Value:
        """&base[index]."""
        if isinstance(index, int) and index == 0:
            return base
        return self.b.gep(base, [self.i64(index)], inbounds=True)

    def load(self, base: ir.Value, index: Index = 0) -> ir.Value:
        return self.b.load(self.ptr(base, index))

    def store(self, value: ir.Value, base: ir.Value, index: Index = 0) -> None:
        self.b.store(value, self.ptr(base, index))

    def vload(self, base: ir.Value, index: Index = 0, lanes: int | None = None) -> ir.Value:
        """`lanes` consecutive elements from base[index] (unaligned)."""
        vt = self.vtype(lanes)
        p = self.b.bitcast(self.ptr(base, index), vt.as_pointer())
        return self.b.load(p, align=self.ft_bytes)

    def tail_chunks(self, start: int, stop: int) -> list[tuple[int, int | None]]:
        """Cover the static range [start, stop) left after whole vectors: (offset, lanes) pieces of half a vector,
        then narrower ones, each as wide as still fits, ending with scalars (lanes None)."""
        out: list[tuple[int, int | None]] = []
        lanes = self.vw // 2
        off = start
        while off < stop:
            while lanes > 1 and stop - off < lanes:
                lanes //= 2
            out.append((off, lanes if lanes > 1 else None))
            off += max(lanes, 1)
        return out

    def load_n(self, base: ir.Value, index: Index, lanes: int | None) -> ir.Value:
        """`lanes` elements as a vector, or one scalar when lanes is None."""
        return self.vload(base, index, lanes) if lanes else self.load(base, index)

    def store_n(self, value: ir.Value, base: ir.Value, index: Index, lanes: int | None) -> None:
        """Store what load_n loaded: a vector of `lanes`, or a scalar when lanes is None."""
        if lanes:
            self.vstore(value, base, index)
        else:
            self.store(value, base, index)

    def vstore(self, value: ir.Value, base: ir.Value, index: Index = 0) -> None:
        p = self.b.bitcast(self.ptr(base, index), value.type.as_pointer())
        self.b.store(value, p, align=self.ft_bytes)

    @property
    def ft_bytes(self) -> int:
        return 4 if isinstance(self.ft, ir.FloatType) else 8

    def alloca_vectors(self, count: int, lanes: int | None = None, name: str = "acc") -> ir.Value:
        """Stack space for `count` vectors, allocated in the function's entry block (so LLVM promotes it to
        registers)."""
        b = self.b
        with b.goto_entry_block():
            return b.alloca(self.vtype(lanes), size=count, name=name)

    def alloca(self, ty: ir.Type, name: str = "tmp") -> ir.Value:
        with self.b.goto_entry_block():
            return self.b.alloca(ty, name=name)

    # -- float math (scalar or vector) -------------------------------------------------------------------------
    def intrinsic(self, name: str, args: Sequence[ir.Value], ret: ir.Type | None = None) -> ir.Value:
        """Call llvm.<name>.<suffix of the first argument's type>."""
        ty = args[0].type
        full = f"llvm.{name}.{_suffix(ty)}"
        fn = self.module.globals.get(full)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret or ty, [a.type for a in args]), name=full)
        return self.b.call(fn, list(args))

    def fma(self, a: ir.Value, x: ir.Value, c: ir.Value) -> ir.Value:
        """a·x + c, fused."""
        return self.intrinsic("fma", [a, x, c])

    def fadd(self, a, c):
        return self.b.fadd(a, c)

    def fsub(self, a, c):
        return self.b.fsub(a, c)

    def fmul(self, a, c):
        return self.b.fmul(a, c)

    def fdiv(self, a, c):
        return self.b.fdiv(a, c)

    def fneg(self, a):
        return self.b.fneg(a)

    def max(self, a: ir.Value, c: ir.Value) -> ir.Value:
        """max(a, c), NaN in either operand propagating as in numpy.maximum: a running maximum (pooling, global
        max, a reduction's lanes) must not drop a NaN it meets (LLVM's maxnum would)."""
        return self.b.select(self.b.or_(self.b.fcmp_ordered("<", a, c), self.b.fcmp_unordered("uno", c, c)), c, a)

    def min(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.select(self.b.fcmp_ordered(">", a, c), c, a)

    def select(self, cond, a, c):
        return self.b.select(cond, a, c)

    def fcmp(self, op: str, a, c):
        return self.b.fcmp_ordered(op, a, c)

    def abs(self, x):
        return self.intrinsic("fabs", [x])

    def sqrt(self, x):
        return self.intrinsic("sqrt", [x])

    def exp(self, x):
        """e^x. In float32, inline code (a vector of libm calls would be scalar): x = n·ln2 + r with |r| <= ln2/2,
        e^r by its degree-6 Taylor polynomial (error below 2 ulp), 2^n put into the exponent bits; inputs are clamped
        to [-87.3, 88.7], where e^x is a normal float. float64 calls libm (it is for checking, not speed)."""
        if not isinstance(self.ft, ir.FloatType):
            return self.intrinsic("exp", [x])
        b = self.b
        lanes = x.type.count if isinstance(x.type, ir.VectorType) else None
        c = lambda v: self.fconst(v, lanes)  # noqa: E731
        ity = ir.VectorType(I32, lanes) if lanes else I32
        x = self.min(self.max(x, c(-87.3)), c(88.7))
        n = self.intrinsic("rint", [self.fmul(x, c(1.4426950408889634))])
        r = self.fma(n, c(-0.693145751953125), x)  # ln2 in two parts: the first is exact times small n
        r = self.fma(n, c(-1.428606765330187e-06), r)
        p = c(1.0 / 720)
        for k in (120, 24, 6, 2, 1, 1):
            p = self.fma(p, r, c(1.0 / k))
        bits = b.shl(b.add(b.fptosi(n, ity), ir.Constant(ity, [ir.Constant(I32, 127)] * lanes) if lanes
                           else ir.Constant(I32, 127)),
                     ir.Constant(ity, [ir.Constant(I32, 23)] * lanes) if lanes else ir.Constant(I32, 23))
        return self.fmul(p, b.bitcast(bits, x.type))

    def log(self, x):
        return self.intrinsic("log", [x])

    def pow(self, x, y):
        return self.intrinsic("pow", [x, y])

    def expm1(self, x):
        """e^x - 1, accurate near 0 too (a Taylor polynomial below |x| = 1/16, where subtracting 1 would cancel)."""
        import math

        degree = 5 if isinstance(self.ft, ir.FloatType) else 10  # the first neglected term is below an ulp
        p = self.like(1.0 / math.factorial(degree), x)
        for k in range(degree - 1, 0, -1):
            p = self.fma(p, x, self.like(1.0 / math.factorial(k), x))
        small = self.fmul(p, x)
        big = self.fsub(self.exp(x), self.like(1.0, x))
        return self.select(self.fcmp("<", self.abs(x), self.like(0.0625, x)), small, big)

    def tanh(self, x):
        """tanh(x) = sign(x)·(1 - 2/(e^{2|x|} + 1)) in float32 (absolute error ~1e-7; exact 0 at 0), libm in
        float64."""
        if not isinstance(self.ft, ir.FloatType):
            return self.intrinsic("tanh", [x])
        one = self.like(1.0, x)
        a = self.abs(x)
        t = self.fsub(one, self.fdiv(self.like(2.0, x), self.fadd(self.exp(self.fadd(a, a)), one)))
        x2 = self.fmul(x, x)  # below 1/16: x - x³/3 + 2x⁵/15 - 17x⁷/315, no cancellation
        p = self.fma(x2, self.like(-17.0 / 315, x), self.like(2.0 / 15, x))
        p = self.fma(p, x2, self.like(-1.0 / 3, x))
        small = self.fma(self.fmul(p, x2), x, x)
        big = self.intrinsic("copysign", [t, x])
        return self.select(self.fcmp("<", a, self.like(0.0625, x)), small, big)

    def floor(self, x):
        return self.intrinsic("floor", [x])

    def to_float(self, i: Index) -> ir.Value:
        """An i64 index as the element type."""
        if isinstance(i, int):
            return self.fconst(float(i))
        return self.b.sitofp(i, self.ft)

    def _reduce_lanes(self, v: ir.Value, combine) -> ir.Value:
        """Fold a vector's lanes pairwise (halves combined until one lane is left)."""
        n = v.type.count
        while n > 1:
            half = n // 2
            lo = self.b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, half), list(range(half))))
            hi = self.b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, half), list(range(half, n))))
            v = combine(lo, hi)
            n = half
        return self.b.extract_element(v, ir.Constant(I32, 0))

    def hsum(self, v: ir.Value) -> ir.Value:
        """The sum of a vector's lanes (reassociated: pairwise)."""
        return self._reduce_lanes(v, self.b.fadd)

    def hmax(self, v: ir.Value) -> ir.Value:
        """The largest lane."""
        return self._reduce_lanes(v, self.max)

    def lane(self, v: ir.Value, k: int) -> ir.Value:
        return self.b.extract_element(v, ir.Constant(I32, k))
