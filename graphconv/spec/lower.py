"""Evaluate a checked spec into an IR graph.

The network body runs like a small program: constants and arithmetic are computed, blocks are expanded with their
arguments, `if` takes one branch, `repeat` applies its steps in sequence, and every op call becomes a node whose
attributes are validated, whose parameters are created and whose output type is inferred by the op's definition.

Errors are collected, never raised one at a time: a failed expression evaluates to `POISON`, and anything computed
from a poisoned value is poisoned silently, so one mistake gives one error, not a cascade. Diagnostics inside a
block carry notes pointing at the call sites that led there.

Limits are checked before the work they guard: a `repeat` whose count would exceed the node budget is refused
before it runs, and tensor sizes are checked as shapes are inferred.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


from ..errors import Diagnostic, OpError, SourceLoc
from ..init import INITIALIZERS, check_shape
from ..ir.graph import Graph, Init, TensorType, Value
from ..ops import REGISTRY
from ..ops.build import emit, plan
from . import ast
from .names import NUMERIC_BUILTINS, TENSOR_BUILTINS, bare_words, op_for

# Limits that keep a hostile spec from exhausting time or memory.
MAX_NODES = 100_000  # nodes in the expanded graph
MAX_STEPS = 1_000_000  # layer and block applications while expanding
MAX_BLOCK_DEPTH = 64  # blocks called inside blocks
MAX_RANK = 8
MAX_DIM = 1 << 24  # any one dimension
MAX_TENSOR_ELEMENTS = 1 << 31  # one tensor, per sample
MAX_PARAM_ELEMENTS = 1 << 31  # one parameter
MAX_TOTAL_PARAM_ELEMENTS = 1 << 33
MAX_INT = 1 << 62  # integers computed in a spec
MAX_LIST = 1 << 20  # list length (tensor literals included, counted by elements)
MAX_STRING = 4096

DTYPES = {"f32": "float32", "f64": "float64"}


class _Poison:
    """The value of an expression that already reported an error."""

    def __repr__(self) -> str:
        return "POISON"


POISON = _Poison()


@dataclass(frozen=True)
class Tensor:
    value: Value

    @property
    def type(self) -> TensorType:
        return self.value.type


@dataclass(frozen=True)
class Multi:
    """The values returned by a block with `return a, b`."""

    items: tuple


class _Abort(Exception):
    """A limit was hit; evaluation stops (the diagnostic is already recorded)."""


class _Returned(Exception):
    def __init__(self, values: list):
        self.values = values


@dataclass
class Scope:
    vars: dict[str, Any]
    parent: "Scope | None" = None

    def lookup(self, name: str) -> tuple[bool, Any]:
        s: Scope | None = self
        while s is not None:
            if name in s.vars:
                return True, s.vars[name]
            s = s.parent
        return False, None


@dataclass
class Ctx:
    """Where layers created now are named: the hierarchical prefix, per-name counters for default names, the names
    already taken in this scope, and the chain of block call sites that led here."""

    prefix: str
    calls: tuple[tuple[SourceLoc, str], ...] = ()
    counters: dict[str, int] = field(default_factory=dict)
    taken: dict[str, SourceLoc] = field(default_factory=dict)
    repeat_depth: int = 0

    def full(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name


def _kind(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"a tensor {v.type}"
    if isinstance(v, Multi):
        return f"{len(v.items)} values returned by a block"
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, Init):
        return "an initializer"
    return type(v).__name__


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Lowerer:
    def __init__(self, blocks: dict[str, ast.Block], lets: list[ast.Let], diags: list[Diagnostic]):
        self.blocks = blocks
        self.lets = lets
        self.diags = diags
        self.graph: Graph | None = None
        self.steps = 0
        self.param_elements = 0
        self._reported: set[tuple[SourceLoc, str]] = set()
        self._error_locs = {d.loc for d in diags}

    # -- diagnostics ----------------------------------------------------------------------------------------
    def error(self, loc: SourceLoc | None, message: str, ctx: Ctx | None = None, hint: str | None = None) -> Any:
        if loc in self._error_locs and (loc, message) not in self._reported:
            return POISON  # something at this very place is already reported (by the static checks)
        if (loc, message) in self._reported:
            return POISON
        self._reported.add((loc, message))
        self._error_locs.add(loc)
        notes = []
        if ctx is not None:
            for site, name in reversed(ctx.calls[-3:]):
                notes.append((site, f"in block '{name}' called here"))
        self.diags.append(Diagnostic(loc, message, hint, notes=notes))
        return POISON

    # -- entry point ----------------------------------------------------------------------------------------
    def lower(self, net: ast.Block, overrides: dict[str, Any]) -> Graph | None:
        self.graph = Graph(net.name)
        globals_ = Scope({})
        root = Ctx("")
        try:
            for let in self.lets:
                globals_.vars[let.name] = self.eval(let.value, globals_, root)
            scope = Scope({}, globals_)
            names = [p.name for p in net.params]
            for key in overrides:
                if key not in names:
                    from ..errors import did_you_mean
                    self.error(net.loc, f"network '{net.name}' has no parameter '{key}' (given with --set)",
                               hint=did_you_mean(key, names) or f"its parameters: {', '.join(names) or 'none'}")
            for p in net.params:
                if p.name in overrides:
                    scope.vars[p.name] = self.check_value(overrides[p.name], p.loc, f"parameter '{p.name}'")
                elif p.default is not None:
                    scope.vars[p.name] = self.eval(p.default, scope, root)
                else:
                    scope.vars[p.name] = self.error(p.loc, f"network parameter '{p.name}' has no default and was "
                                                           "not given", hint=f"pass --set {p.name}=VALUE")
            self.graph.meta["params"] = {k: v for k, v in scope.vars.items() if _plain(v)}
            try:
                self.exec_body(net.body, scope, root)
            except _Returned:
                pass  # the checker reports 'return' in a network
            if not self.graph.outputs and not self.diags:
                self.error(net.loc, f"network '{net.name}' has no output with these parameters",
                           hint="every 'output' statement is in a branch that was not taken")
        except _Abort:
            return None
        return self.graph

    def check_value(self, v: Any, loc: SourceLoc, what: str) -> Any:
        """Values from outside the spec (--set) obey the same limits as computed ones."""
        if isinstance(v, list):
            if len(v) > MAX_LIST:
                return self.error(loc, f"{what}: list too long")
            return [self.check_value(x, loc, what) for x in v]
        if isinstance(v, bool) or isinstance(v, str):
            return v
        if isinstance(v, int) and abs(v) <= MAX_INT:
            return v
        if isinstance(v, float) and math.isfinite(v):
            return v
        return self.error(loc, f"{what}: unsupported or out-of-range value {v!r}")

    # -- statements -----------------------------------------------------------------------------------------
    def exec_body(self, body: list[ast.Stmt], scope: Scope, ctx: Ctx) -> None:
        for st in body:
            self.exec_stmt(st, scope, ctx)

    def exec_stmt(self, st: ast.Stmt, scope: Scope, ctx: Ctx) -> None:
        if isinstance(st, ast.Let):
            scope.vars[st.name] = self.eval(st.value, scope, ctx)
        elif isinstance(st, ast.Assign):
            v = self.eval(st.value, scope, ctx)
            if len(st.targets) == 1:
                if isinstance(v, Multi):
                    self.error(st.loc, f"this block returns {len(v.items)} values; assign them to "
                                       f"{len(v.items)} names", ctx)
                    v = POISON
                scope.vars[st.targets[0][0]] = v
            else:
                items: tuple = (POISON,) * len(st.targets)
                if isinstance(v, Multi) and len(v.items) == len(st.targets):
                    items = v.items
                elif v is not POISON:
                    got = len(v.items) if isinstance(v, Multi) else 1
                    self.error(st.loc, f"{len(st.targets)} names are assigned but the value has {got}", ctx)
                for (name, _), item in zip(st.targets, items):
                    scope.vars[name] = item
        elif isinstance(st, ast.InputDecl):
            scope.vars[st.name] = self.declare_input(st, scope, ctx)
        elif isinstance(st, ast.OutputDecl):
            for name, loc in st.names:
                found, v = scope.lookup(name)
                if not found or v is POISON:
                    continue
                if not isinstance(v, Tensor):
                    self.error(loc, f"output '{name}' must be a tensor, but it is {_kind(v)}", ctx)
                elif name in self.graph.outputs:
                    self.error(loc, f"output '{name}' is declared twice", ctx)
                else:
                    self.graph.set_output(name, v.value)
        elif isinstance(st, ast.Return):
            raise _Returned([self.eval(v, scope, ctx) for v in st.values])
        elif isinstance(st, ast.If):
            cond = self.eval(st.cond, scope, ctx)
            if cond is POISON:
                return
            if not isinstance(cond, bool):
                self.error(st.cond.loc, f"the condition of 'if' must be true or false, but it is {_kind(cond)}", ctx)
                return
            self.exec_body(st.then if cond else st.else_, scope, ctx)
        elif isinstance(st, ast.ExprStmt):
            self.eval(st.value, scope, ctx)

    def declare_input(self, st: ast.InputDecl, scope: Scope, ctx: Ctx) -> Any:
        dtype = DTYPES.get(st.dtype)
        if dtype is None:
            return self.error(st.dtype_loc, f"unknown dtype '{st.dtype}'", ctx, hint="use f32 or f64")
        if not 1 <= len(st.dims) <= MAX_RANK:
            return self.error(st.loc, f"an input has rank 1 to {MAX_RANK}, not {len(st.dims)}", ctx)
        shape: list[int | str] = []
        for i, d in enumerate(st.dims):
            if i == 0 and isinstance(d, ast.Name) and d.id == "N":
                found, _ = scope.lookup("N")
                if not found:
                    shape.append("N")
                    continue
            v = self.eval(d, scope, ctx)
            if v is POISON:
                return POISON
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_DIM:
                return self.error(d.loc, f"a dimension must be an integer from 1 to {MAX_DIM}, "
                                         f"got {v!r}" if _is_num(v) else
                                  f"a dimension must be an integer, but this is {_kind(v)}", ctx)
            shape.append(v)
        t = TensorType(tuple(shape), dtype)
        if t.numel() > MAX_TENSOR_ELEMENTS:
            return self.error(st.loc, f"input '{st.name}' {t} has more than {MAX_TENSOR_ELEMENTS} elements "
                                      "per sample", ctx)
        if st.name in self.graph.values:
            return self.error(st.loc, f"'{st.name}' is already the name of a layer", ctx)
        return Tensor(self.graph.add_input(st.name, t))

    # -- expressions ----------------------------------------------------------------------------------------
    def eval(self, e: ast.Expr, scope: Scope, ctx: Ctx) -> Any:
        if isinstance(e, ast.Literal):
            if isinstance(e.value, str) and len(e.value) > MAX_STRING:
                return self.error(e.loc, "string too long", ctx)
            return e.value
        if isinstance(e, ast.Name):
            found, v = scope.lookup(e.id)
            if found:
                return v
            if e.id in bare_words():
                return e.id
            return POISON  # reported by the static checks
        if isinstance(e, ast.ListExpr):
            items = [self.eval(i, scope, ctx) for i in e.items]
            if any(i is POISON for i in items):
                return POISON
            if sum(_list_size(i) for i in items) > MAX_LIST:
                return self.error(e.loc, f"list too large (more than {MAX_LIST} elements)", ctx)
            return items
        if isinstance(e, ast.BinOp):
            return self.binop(e, self.eval(e.left, scope, ctx), self.eval(e.right, scope, ctx), ctx)
        if isinstance(e, ast.UnaryOp):
            v = self.eval(e.operand, scope, ctx)
            if v is POISON:
                return POISON
            if e.op == "-":
                if not _is_num(v):
                    return self.error(e.loc, f"cannot negate {_kind(v)}", ctx)
                return -v
            if not isinstance(v, bool):
                return self.error(e.loc, f"'not' needs true or false, got {_kind(v)}", ctx)
            return not v
        if isinstance(e, ast.Chain):
            v = self.eval(e.head, scope, ctx)
            for s in e.steps:
                v = self.apply_step(s, v, scope, ctx)
            return v
        if isinstance(e, ast.Call):
            return self.call(e, None, scope, ctx)
        if isinstance(e, ast.Repeat):
            return POISON  # reported by the static checks
        raise TypeError(f"unknown expression {type(e).__name__}")

    def binop(self, e: ast.BinOp, a: Any, b: Any, ctx: Ctx) -> Any:
        if a is POISON or b is POISON:
            return POISON
        op = e.op
        if op in ("and", "or"):
            if not isinstance(a, bool) or not isinstance(b, bool):
                return self.error(e.loc, f"'{op}' needs true or false on both sides, got {_kind(a)} and "
                                         f"{_kind(b)}", ctx)
            return (a and b) if op == "and" else (a or b)
        if op in ("==", "!="):
            same = a == b if type(a) is type(b) or (_is_num(a) and _is_num(b)) else False
            if isinstance(a, Tensor) or isinstance(b, Tensor):
                return self.error(e.loc, "tensors cannot be compared; compare their shapes, e.g. channels(x)",
                                  ctx)
            return same if op == "==" else not same
        if op in ("<", "<=", ">", ">="):
            if not (_is_num(a) and _is_num(b)):
                return self.error(e.loc, f"'{op}' compares numbers, got {_kind(a)} and {_kind(b)}", ctx)
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        if op == "+" and isinstance(a, list) and isinstance(b, list):
            if len(a) + len(b) > MAX_LIST:
                return self.error(e.loc, "list too long", ctx)
            return a + b
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            if len(a) + len(b) > MAX_STRING:
                return self.error(e.loc, "string too long", ctx)
            return a + b
        if not (_is_num(a) and _is_num(b)):
            hint = "to add tensors use add(a, b)" if isinstance(a, Tensor) or isinstance(b, Tensor) else None
            return self.error(e.loc, f"cannot apply '{op}' to {_kind(a)} and {_kind(b)}", ctx, hint=hint)
        try:
            if op == "+":
                r = a + b
            elif op == "-":
                r = a - b
            elif op == "*":
                r = a * b
            elif op == "/":
                r = a / b
            elif op == "//":
                r = a // b
            else:
                r = a % b
        except ZeroDivisionError:
            return self.error(e.loc, "division by zero", ctx)
        except OverflowError:
            return self.error(e.loc, "number too large", ctx)
        if isinstance(r, int) and abs(r) > MAX_INT:
            return self.error(e.loc, f"integer too large (limit 2**62): {_short(r)}", ctx)
        if isinstance(r, float) and not math.isfinite(r):
            return self.error(e.loc, "number too large", ctx)
        return r

    # -- calls ----------------------------------------------------------------------------------------------
    def apply_step(self, step: ast.Expr, v: Any, scope: Scope, ctx: Ctx) -> Any:
        if isinstance(step, ast.Repeat):
            return self.repeat(step, v, scope, ctx)
        return self.call(step, v, scope, ctx, is_piped=True)

    def repeat(self, r: ast.Repeat, v: Any, scope: Scope, ctx: Ctx) -> Any:
        count = self.eval(r.count, scope, ctx)
        if count is POISON:
            return POISON
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return self.error(r.count.loc, f"repeat count must be an integer >= 0, got "
                                           f"{count!r}" if _is_num(count) else
                              f"repeat count must be an integer, but it is {_kind(count)}", ctx)
        work = count * _count_steps(r.steps)
        if self.steps + work > MAX_STEPS or len(self.graph.nodes) + work > MAX_NODES:
            self.error(r.count.loc, f"repeat {_short(count)} would expand the network beyond the limit of "
                                    f"{MAX_NODES} layers", ctx)
            raise _Abort()
        inner = Ctx(ctx.prefix, ctx.calls, ctx.counters, ctx.taken, ctx.repeat_depth + 1)
        for _ in range(count):
            self.steps += 1
            if self.steps > MAX_STEPS:
                self.error(r.loc, f"expanding the network takes more than {MAX_STEPS} steps", ctx)
                raise _Abort()
            for s in r.steps:
                v = self.apply_step(s, v, scope, inner)
                if v is POISON:
                    return POISON
        return v

    def call(self, c: ast.Call, piped: Any, scope: Scope, ctx: Ctx, *, is_piped: bool = False) -> Any:
        """A call, or a chain step (`is_piped`) whose first argument is the value flowing down the chain."""
        piped_given = is_piped
        args = [(a, self.eval(a.value, scope, ctx)) for a in c.args]
        if piped_given and isinstance(piped, Multi):
            return self.error(c.loc, f"{len(piped.items)} values cannot be piped into '{c.func}'; assign them "
                                     "to names first", ctx)
        name = c.func
        resolved = op_for(name)
        if resolved is not None:
            return self.op_call(c, resolved, piped if piped_given else None, piped_given, args, ctx)
        if name in self.blocks:
            return self.block_call(c, self.blocks[name], piped, piped_given, args, scope, ctx)
        if name in TENSOR_BUILTINS:
            return self.tensor_builtin(c, piped, piped_given, args, ctx)
        if name in NUMERIC_BUILTINS:
            return self.numeric_builtin(c, args, ctx)
        if name in INITIALIZERS:
            return self.initializer(c, args, ctx)
        return POISON  # unknown name: reported by the static checks

    def op_call(self, c: ast.Call, resolved, piped: Any, piped_given: bool, args, ctx: Ctx) -> Any:
        opname, preset = resolved
        op = REGISTRY[opname]
        positional: list[tuple[SourceLoc, Any]] = [(c.loc, piped)] if piped_given else []
        positional += [(a.loc, v) for a, v in args if a.name is None]
        keywords = {a.name: (a.loc, v) for a, v in args if a.name is not None}
        if any(v is POISON for _, v in positional) or any(v is POISON for _, v in keywords.values()):
            return POISON
        tensors: list[tuple[SourceLoc, Tensor]] = []
        i = 0
        while i < len(positional) and isinstance(positional[i][1], Tensor):
            tensors.append(positional[i])  # type: ignore[arg-type]
            i += 1
        rest = positional[i:]
        attr_names = [a.name for a in op.attrs if a.name not in preset]
        attrs: dict[str, Any] = dict(preset)
        locs: dict[str, SourceLoc] = {}
        for j, (loc, v) in enumerate(rest):
            if isinstance(v, (Tensor, Multi)):
                return self.error(loc, f"tensor arguments of '{name_of(c)}' come before its attributes", ctx)
            if not attr_names:
                return self.error(loc, f"'{name_of(c)}' takes no attributes", ctx)
            if j >= len(attr_names):
                return self.error(loc, f"'{name_of(c)}' takes at most {len(attr_names)} positional attribute"
                                       f"{'s' if len(attr_names) != 1 else ''} ({', '.join(attr_names)})", ctx)
            attrs[attr_names[j]] = v
            locs[attr_names[j]] = loc
        for k, (loc, v) in keywords.items():
            if k in locs:
                return self.error(loc, f"attribute '{k}' is given both by position and by keyword", ctx)
            if isinstance(v, (Tensor, Multi)):
                return self.error(loc, f"attribute '{k}' of '{name_of(c)}' cannot be a tensor", ctx)
            attrs[k] = v
            locs[k] = loc
        n_in = len(tensors)
        if op.variadic:
            if n_in < op.min_inputs:
                return self.error(c.loc, f"'{name_of(c)}' needs at least {op.min_inputs} tensor inputs, got {n_in}",
                                  ctx, hint="pipe one in with '->' and pass the others as arguments"
                                  if n_in else None)
        elif n_in != len(op.inputs):
            what = f"{len(op.inputs)} tensor input{'s' if len(op.inputs) != 1 else ''}"
            if n_in == 0:
                return self.error(c.loc, f"'{name_of(c)}' takes {what} but got none", ctx,
                                  hint=f"write 'x -> {c.func}' or '{c.func}(x, ...)'")
            return self.error(tensors[len(op.inputs)][0] if n_in > len(op.inputs) else c.loc,
                              f"'{name_of(c)}' takes {what}, got {n_in}", ctx)
        in_types = [t.type for _, t in tensors]

        def fail(err: OpError) -> Any:
            for e in [err, *err.others]:  # every problem of the call, each at its argument
                loc = c.loc.span_to(c.end)
                if e.attr is not None and e.attr in locs:
                    loc = locs[e.attr]
                elif e.arg is not None and e.arg < len(tensors) and not (piped_given and e.arg == 0):
                    loc = tensors[e.arg][0]
                result = self.error(loc, e.message, ctx, hint=e.hint)
            return result

        try:
            planned = plan(opname, attrs, in_types)
        except OpError as err:
            return fail(err)
        specs, out_type = planned.params, planned.out_type
        # limits on what this node would allocate, before it exists
        if out_type.rank > MAX_RANK or any(isinstance(d, int) and d > MAX_DIM for d in out_type.shape) \
                or out_type.numel() > MAX_TENSOR_ELEMENTS:
            return self.error(c.loc, f"'{name_of(c)}' would produce {out_type}, beyond the size limits "
                                     f"(rank {MAX_RANK}, dimension {MAX_DIM}, {MAX_TENSOR_ELEMENTS} elements)", ctx)
        for s in specs:
            if s.data is None:
                try:
                    check_shape(s.init, s.shape)
                except OpError as err:
                    attr = "init" if s.name == "weight" else f"{s.name}_init"
                    return self.error(locs.get(attr, c.loc), f"'{name_of(c)}' {s.name}: {err.message}", ctx)
            n = math.prod(s.shape)
            if n > MAX_PARAM_ELEMENTS or self.param_elements + n > MAX_TOTAL_PARAM_ELEMENTS:
                return self.error(c.loc, f"'{name_of(c)}' would need a {s.name} of shape {list(s.shape)}, beyond "
                                         f"the parameter size limit", ctx)
        self.steps += 1
        if len(self.graph.nodes) >= MAX_NODES or self.steps > MAX_STEPS:
            self.error(c.loc, f"the network has more than {MAX_NODES} layers", ctx)
            raise _Abort()
        node_name = self.claim_name(c, c.func, ctx)
        if node_name is None:
            return POISON
        self.param_elements += sum(math.prod(s.shape) for s in specs)
        node = emit(self.graph, node_name, planned, [t.value for _, t in tensors], c.loc)
        return Tensor(node.output)

    def claim_name(self, c: ast.Call, default: str, ctx: Ctx) -> str | None:
        if c.alias is not None:
            name = c.alias
            if name in ctx.taken:
                hint = ("inside 'repeat' every application needs its own name: put the layers in a block, or "
                        "drop 'as'") if ctx.repeat_depth else "layer names are unique within a block"
                self.error(c.alias_loc, f"layer name '{name}' is already used", ctx, hint=hint)
                return None
        else:
            # relu0, bottleneck1; an underscore where the name ends in a digit (relu6_0, not relu60)
            stem = f"{default}_" if default[-1].isdigit() else default
            k = ctx.counters.get(default, 0)
            name = f"{stem}{k}"
            while name in ctx.taken or ctx.full(name) in self.graph.values:
                k += 1
                name = f"{stem}{k}"
            ctx.counters[default] = k + 1
        full = ctx.full(name)
        if full in self.graph.values:
            self.error(c.alias_loc or c.loc, f"layer name '{full}' clashes with an input of the same name", ctx)
            return None
        ctx.taken[name] = c.alias_loc or c.loc
        return full

    def block_call(self, c: ast.Call, block: ast.Block, piped: Any, piped_given: bool, args, scope: Scope,
                   ctx: Ctx) -> Any:
        if block.is_network:
            return POISON  # reported by the static checks
        if len(ctx.calls) >= MAX_BLOCK_DEPTH:
            self.error(c.loc, f"blocks are nested more than {MAX_BLOCK_DEPTH} deep", ctx)
            raise _Abort()
        values: list[Any] = [piped] if piped_given else []
        values += [v for a, v in args if a.name is None]
        keywords = {a.name: v for a, v in args if a.name is not None}
        if any(v is POISON for v in values) or any(v is POISON for v in keywords.values()):
            return POISON
        params = block.params
        if len(values) > len(params) or any(k not in {p.name for p in params} for k in keywords):
            return POISON  # reported by the static checks
        self.steps += 1
        if self.steps > MAX_STEPS:
            self.error(c.loc, f"expanding the network takes more than {MAX_STEPS} steps", ctx)
            raise _Abort()
        local = Scope({}, _root(scope))
        for p, v in zip(params, values):
            local.vars[p.name] = v
        name = self.claim_name(c, block.name, ctx)
        if name is None:
            return POISON
        inner = Ctx(name, ctx.calls + ((c.loc, block.name),))
        for p in params[len(values):]:
            if p.name in keywords:
                local.vars[p.name] = keywords[p.name]
            elif p.default is not None:
                local.vars[p.name] = self.eval(p.default, local, inner)
            else:
                return POISON  # reported by the static checks
        try:
            self.exec_body(block.body, local, inner)
        except _Returned as r:
            if any(v is POISON for v in r.values):
                return POISON
            return r.values[0] if len(r.values) == 1 else Multi(tuple(r.values))
        return self.error(block.loc, f"block '{block.name}' ended without reaching 'return'", inner)

    def tensor_builtin(self, c: ast.Call, piped: Any, piped_given: bool, args, ctx: Ctx) -> Any:
        values = ([piped] if piped_given else []) + [v for _, v in args]
        if any(v is POISON for v in values):
            return POISON
        if len(values) != 1 or not isinstance(values[0], Tensor) or any(a.name for a, _ in args):
            return self.error(c.loc, f"'{c.func}' takes one tensor, e.g. {c.func}(x)", ctx)
        t = values[0].type
        axis = TENSOR_BUILTINS[c.func]
        if c.func == "rank":
            return t.rank
        if c.func == "shape":
            return list(t.shape)
        if t.rank <= axis:
            return self.error(c.loc, f"'{c.func}' needs a tensor of rank {axis + 1} or more, got {t}", ctx)
        d = t.shape[axis]
        return d

    def numeric_builtin(self, c: ast.Call, args, ctx: Ctx) -> Any:
        fn, lo, hi, what = NUMERIC_BUILTINS[c.func]
        values = [v for _, v in args]
        if any(v is POISON for v in values):
            return POISON
        if any(a.name for a, _ in args) or len(values) < lo or (hi is not None and len(values) > hi):
            return self.error(c.loc, f"'{c.func}' takes {what}", ctx)
        ok = all(isinstance(v, list) for v in values) if c.func == "len" else all(_is_num(v) for v in values)
        if c.func in ("min", "max") and len(values) == 1 and isinstance(values[0], list):
            if not values[0]:
                return self.error(c.loc, f"'{c.func}' of an empty list", ctx)
            values = values[0]
            ok = all(_is_num(v) for v in values)
        if not ok:
            return self.error(c.loc, f"'{c.func}' takes {what}, got {', '.join(_kind(v) for v in values)}", ctx)
        if c.func in ("min", "max") and len(values) == 1:
            return values[0]  # of one number: that number (Python's min and max want an iterable then)
        try:
            r = fn(*values)
        except ZeroDivisionError:
            return self.error(c.loc, f"'{c.func}': division by zero", ctx)
        except (ValueError, OverflowError) as err:
            return self.error(c.loc, f"'{c.func}': {err}", ctx)
        if isinstance(r, int) and abs(r) > MAX_INT:
            return self.error(c.loc, "integer too large", ctx)
        return r

    def initializer(self, c: ast.Call, args, ctx: Ctx) -> Any:
        if any(v is POISON for _, v in args):
            return POISON
        spec_args = list(INITIALIZERS[c.func].args)
        named: dict[str, Any] = {}
        for i, (a, v) in enumerate(args):
            key = a.name if a.name is not None else (spec_args[i] if i < len(spec_args) else None)
            if key is None:
                return self.error(a.loc, f"initializer '{c.func}' takes at most {len(spec_args)} arguments", ctx)
            named[key] = v
        init = Init(c.func, tuple(named.items()))
        from ..init import make_init
        try:
            make_init(init)
        except OpError as err:
            return self.error(c.loc, err.message, ctx, hint=err.hint)
        return init


def name_of(c: ast.Call) -> str:
    return c.func


def _root(scope: Scope) -> Scope:
    """Blocks see the file-level constants, not their caller's variables."""
    while scope.parent is not None:
        scope = scope.parent
    return scope


def _count_steps(steps: list[ast.Expr]) -> int:
    n = 0
    for s in steps:
        n += 1 if isinstance(s, ast.Call) else 0
        if isinstance(s, ast.Repeat) and isinstance(s.count, ast.Literal) and isinstance(s.count.value, int):
            n += s.count.value * _count_steps(s.steps)
    return max(n, 1)


def _list_size(v: Any) -> int:
    return sum(_list_size(i) for i in v) if isinstance(v, list) else 1


def _short(n: int) -> str:
    s = str(n) if abs(n) < 10 ** 30 else f"about 10**{len(str(abs(n))) - 1}"
    return s


def _plain(v: Any) -> bool:
    return isinstance(v, (int, float, bool, str)) or (isinstance(v, list) and all(_plain(i) for i in v))
