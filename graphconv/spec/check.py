"""Static checks of a parsed spec, before anything is evaluated.

These need no values, so they cover every branch of every `if` and every block, called or not: undefined and
duplicate names, unknown ops, blocks and attributes, argument counts of block calls, statements in the wrong place,
blocks without `return`, networks without inputs or outputs, and recursion between blocks. Type, value and shape
errors need evaluation and are found by lower.py.
"""

from __future__ import annotations

import networkx as nx

from ..errors import Diagnostic, SourceLoc, did_you_mean
from ..init import INITIALIZERS
from ..ops import REGISTRY
from . import ast
from .names import NUMERIC_BUILTINS, TENSOR_BUILTINS, bare_words, callable_names, op_for, spec_ops


class Checker:
    def __init__(self, blocks: dict[str, ast.Block], global_names: dict[str, SourceLoc], diags: list[Diagnostic]):
        self.blocks = blocks
        self.globals = global_names
        self.diags = diags
        self.calls = nx.DiGraph()  # block -> blocks it calls, edge attribute: first call site
        self.current: ast.Block | None = None
        self.maybe: dict[str, SourceLoc] = {}  # names assigned in only one branch of an if

    def error(self, loc: SourceLoc, message: str, hint: str | None = None,
              notes: list[tuple[SourceLoc, str]] | None = None) -> None:
        self.diags.append(Diagnostic(loc, message, hint, notes=notes or []))

    # -- definitions ----------------------------------------------------------------------------------------
    def check_definition(self, block: ast.Block) -> None:
        self.current = block
        self.maybe = {}
        self.calls.add_node(block.name)
        defined: dict[str, SourceLoc] = {}
        seen_default = False
        for p in block.params:
            if p.name in defined:
                self.error(p.loc, f"duplicate parameter '{p.name}'", notes=[(defined[p.name], "first declared here")])
            if p.default is not None:
                self.check_expr(p.default, defined)
                seen_default = True
            elif seen_default:
                self.error(p.loc, f"parameter '{p.name}' without a default follows one with a default",
                           hint="put parameters with defaults last")
            defined[p.name] = p.loc
        state = {"inputs": 0, "outputs": [], "returns": 0}
        self.check_body(block.body, defined, state)
        if block.is_network:
            if state["inputs"] == 0:
                self.error(block.loc, f"network '{block.name}' declares no input",
                           hint="add e.g. 'input x: f32[N, 3, 224, 224]'")
            if not state["outputs"]:
                self.error(block.loc, f"network '{block.name}' declares no output", hint="add 'output NAME'")
        elif state["returns"] == 0:
            self.error(block.loc, f"block '{block.name}' has no return statement",
                       hint="end the block with 'return VALUE'")

    def check_body(self, body: list[ast.Stmt], defined: dict[str, SourceLoc], state: dict) -> dict[str, SourceLoc]:
        defined = dict(defined)
        net = self.current.is_network
        for st in body:
            if isinstance(st, ast.Let):
                self.check_expr(st.value, defined)
                self.define(st.name, st.loc, defined)
            elif isinstance(st, ast.Assign):
                self.check_expr(st.value, defined)
                for name, loc in st.targets:
                    self.define(name, loc, defined)
            elif isinstance(st, ast.InputDecl):
                if not net:
                    self.error(st.loc, "inputs are declared in a network, not in a block",
                               hint="a block receives tensors as parameters")
                state["inputs"] += 1
                for i, d in enumerate(st.dims):
                    if isinstance(d, ast.Name) and d.id == "N" and "N" not in defined and "N" not in self.globals:
                        if i > 0:
                            self.error(d.loc, "only the first (batch) dimension can be the symbol N")
                        continue
                    self.check_expr(d, defined)
                self.define(st.name, st.loc, defined)
            elif isinstance(st, ast.OutputDecl):
                if not net:
                    self.error(st.loc, "outputs are declared in a network; a block uses 'return'")
                state["outputs"].extend(st.names)
                for name, loc in st.names:
                    if name not in defined:
                        self.undefined(name, loc, defined)
            elif isinstance(st, ast.Return):
                if net:
                    self.error(st.loc, "'return' is for blocks; a network declares 'output NAME'")
                state["returns"] += 1
                for v in st.values:
                    self.check_expr(v, defined)
            elif isinstance(st, ast.If):
                self.check_expr(st.cond, defined)
                then = self.check_body(st.then, defined, state)
                other = self.check_body(st.else_, defined, state)
                for name in set(then) & set(other):
                    defined.setdefault(name, then[name])
                for name in set(then) ^ set(other):
                    if name not in defined:
                        self.maybe[name] = (then.get(name) or other.get(name))
            elif isinstance(st, ast.ExprStmt):
                self.check_expr(st.value, defined)
                self.error(st.loc, "the value of this expression is not used",
                           hint="assign it to a name (y = ...) or declare it as an output")
        return defined

    def define(self, name: str, loc: SourceLoc, defined: dict[str, SourceLoc]) -> None:
        first = defined.get(name) or self.maybe.get(name)
        if first is not None:
            self.error(loc, f"'{name}' is already defined", notes=[(first, "first defined here")],
                       hint="names are bound once; choose a new name")
        elif name in spec_ops() or name in self.blocks:
            self.error(loc, f"'{name}' is the name of {'an op' if name in spec_ops() else 'a block'}",
                       hint="choose another name for the value")
        defined[name] = loc

    def undefined(self, name: str, loc: SourceLoc, defined: dict[str, SourceLoc]) -> None:
        if name in self.maybe:
            self.error(loc, f"'{name}' is not defined on every path to here",
                       notes=[(self.maybe[name], "it is assigned in only one branch of an if")],
                       hint="assign it in both branches")
            return
        if name in self.blocks or op_for(name):
            self.error(loc, f"'{name}' is a layer, not a value",
                       hint=f"call it on a value: 'x -> {name}' or '{name}(x)'")
            return
        candidates = set(defined) | set(self.globals) | bare_words()
        self.error(loc, f"undefined name '{name}'", hint=did_you_mean(name, candidates))

    # -- expressions ----------------------------------------------------------------------------------------
    def check_expr(self, e: ast.Expr, defined: dict[str, SourceLoc], piped: bool = False) -> None:
        if isinstance(e, ast.Literal):
            return
        if isinstance(e, ast.Name):
            if e.id not in defined and e.id not in self.globals and e.id not in bare_words():
                self.undefined(e.id, e.loc, defined)
        elif isinstance(e, ast.ListExpr):
            for item in e.items:
                self.check_expr(item, defined)
        elif isinstance(e, ast.BinOp):
            self.check_expr(e.left, defined)
            self.check_expr(e.right, defined)
        elif isinstance(e, ast.UnaryOp):
            self.check_expr(e.operand, defined)
        elif isinstance(e, ast.Chain):
            self.check_expr(e.head, defined)
            for s in e.steps:
                self.check_expr(s, defined, piped=True)
        elif isinstance(e, ast.Repeat):
            if not piped:
                self.error(e.loc, "'repeat' must follow '->' in a chain")
            self.check_expr(e.count, defined)
            for s in e.steps:
                self.check_expr(s, defined, piped=True)
        elif isinstance(e, ast.Call):
            self.check_call(e, defined, piped)

    def check_call(self, call: ast.Call, defined: dict[str, SourceLoc], piped: bool) -> None:
        for a in call.args:
            self.check_expr(a.value, defined)
        seen: dict[str, SourceLoc] = {}
        for a in call.args:
            if a.name is not None:
                if a.name in seen:
                    self.error(a.loc, f"argument '{a.name}' is given twice", notes=[(seen[a.name], "first here")])
                seen[a.name] = a.loc
        name = call.func
        resolved = op_for(name)
        if resolved is not None:
            op = REGISTRY[resolved[0]]
            names = {a.name for a in op.attrs} - set(resolved[1])
            for a in call.args:
                if a.name is not None and a.name not in names:
                    preset = a.name in resolved[1]
                    self.error(a.loc, f"'{name}' has no attribute '{a.name}'" if not preset else
                               f"'{name}' fixes '{a.name}'; it cannot be given",
                               hint=None if preset else (did_you_mean(a.name, names) or
                                                         f"its attributes: {', '.join(sorted(names)) or 'none'}"))
            return
        if name in self.blocks:
            if not self.blocks[name].broken:  # its parameters may be incomplete: no argument checks
                self.check_block_call(call, self.blocks[name], piped)
            return
        if name in NUMERIC_BUILTINS or name in TENSOR_BUILTINS or name in INITIALIZERS:
            if call.alias is not None:
                self.error(call.alias_loc, f"only layers and blocks can be named with 'as'; '{name}' is a function")
            if piped and name not in TENSOR_BUILTINS:
                self.error(call.loc, f"'{name}' is a function of numbers, not a layer")
            return
        kind = "layer, block or function"
        self.error(call.loc.span_to(call.loc), f"unknown {kind} '{name}'",
                   hint=did_you_mean(name, callable_names(self.blocks)))

    def check_block_call(self, call: ast.Call, block: ast.Block, piped: bool) -> None:
        if block.is_network:
            self.error(call.loc, f"'{block.name}' is a network; only blocks can be called")
            return
        if self.current is not None:
            caller = self.current.name
            if not self.calls.has_edge(caller, block.name):
                self.calls.add_edge(caller, block.name, loc=call.loc)
        params = [p.name for p in block.params]
        positional = [a for a in call.args if a.name is None]
        npos = len(positional) + (1 if piped else 0)
        if npos > len(params):
            first_extra = len(params) - (1 if piped else 0)
            at = positional[first_extra].loc if 0 <= first_extra < len(positional) else call.loc
            self.error(at,
                       f"block '{block.name}' takes {len(params)} argument{'s' if len(params) != 1 else ''}"
                       f" ({', '.join(params) or 'none'}), given {npos}"
                       + (" counting the value piped in by '->'" if piped else ""))
            return
        bound = set(params[:npos])
        for a in call.args:
            if a.name is None:
                continue
            if a.name not in params:
                self.error(a.loc, f"block '{block.name}' has no parameter '{a.name}'",
                           hint=did_you_mean(a.name, params) or f"its parameters: {', '.join(params)}")
            elif a.name in bound:
                self.error(a.loc, f"parameter '{a.name}' of block '{block.name}' is already given by position")
            bound.add(a.name)
        missing = [p.name for p in block.params if p.default is None and p.name not in bound]
        if missing:
            self.error(call.loc, f"block '{block.name}' needs {', '.join(repr(m) for m in missing)}",
                       notes=[(block.loc, f"'{block.name}' is defined here")])

    # -- recursion ------------------------------------------------------------------------------------------
    def check_recursion(self) -> bool:
        """Report cycles in the block call graph; True when there is one (lowering would not terminate)."""
        reported: set[frozenset[str]] = set()
        for cycle in nx.simple_cycles(self.calls):
            key = frozenset(cycle)
            if key in reported:
                continue
            reported.add(key)
            first = min(cycle, key=lambda n: (self.blocks[n].loc.path, self.blocks[n].loc.line))
            i = cycle.index(first)
            cycle = cycle[i:] + cycle[:i]
            site = self.calls.edges[cycle[-1], cycle[0]]["loc"]
            if len(cycle) == 1:
                self.error(site, f"block '{first}' calls itself", hint="blocks cannot be recursive; use repeat")
            else:
                path = " -> ".join([*cycle, cycle[0]])
                self.error(site, f"recursion between blocks: {path}",
                           hint="blocks cannot call each other in a cycle")
            if len(reported) >= 20:
                break
        return bool(reported)


def check(blocks: dict[str, ast.Block], lets: list[ast.Let], diags: list[Diagnostic]) -> bool:
    """Static checks of file-level constants (each may use the ones before it) and of every block and network.
    Returns False when the spec cannot be lowered at all (blocks call each other in a cycle)."""
    c = Checker(blocks, {}, diags)
    for let in lets:
        c.current = None
        c.check_expr(let.value, dict(c.globals))
        c.globals.setdefault(let.name, let.loc)
    for block in blocks.values():
        if not block.broken:
            c.check_definition(block)
    return not c.check_recursion()
