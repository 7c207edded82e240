"""Recursive-descent parser for spec files (grammar in docs/spec-language.md).

Errors are collected, not raised to the caller: after a bad statement the parser skips to the next line (or the
next top-level definition) and goes on, so a file with three typos reports three errors. Nesting depth is bounded
(`MAX_NESTING`) so a hostile file cannot exhaust Python's stack.
"""

from __future__ import annotations

from ..errors import MAX_ERRORS, Diagnostic, SourceLoc
from . import ast
from .lexer import Token, tokenize

MAX_NESTING = 64  # brackets, calls, chains and if-blocks inside each other

_BINARY = [  # (precedence, operators); higher binds tighter
    (1, {"or"}),
    (2, {"and"}),
    (4, {"==", "!=", "<", "<=", ">", ">="}),
    (5, {"+", "-"}),
    (6, {"*", "/", "//", "%"}),
]
_PREC = {op: prec for prec, ops in _BINARY for op in ops}
_NOT_PREC = 3
_TOP_KEYWORDS = {"network", "block", "include", "let"}


class ParseError(Exception):
    def __init__(self, diag: Diagnostic):
        super().__init__(diag.message)
        self.diag = diag


def _describe(tok: Token) -> str:
    if tok.kind == "newline":
        return "end of line"
    if tok.kind == "eof":
        return "end of file"
    if tok.kind == "string":
        return f"string {tok.text}"
    return f"'{tok.text}'"


class Parser:
    def __init__(self, text: str, path: str, diags: list[Diagnostic]):
        self.path = path
        self.diags = diags
        self.toks = tokenize(text, path, diags)
        self.i = 0
        self.depth = 0
        self.paren = 0  # inside ( ) or [ ]: newlines are not statement ends

    # -- token helpers --------------------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        if self.paren:
            while self.toks[self.i].kind == "newline":
                self.i += 1
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Token:
        """The k-th token after the current one; inside brackets, newlines are skipped as `tok` skips them."""
        self.tok  # noqa: B018  (skips newlines inside brackets first)
        j, last = self.i, len(self.toks) - 1
        for _ in range(k):
            j = min(j + 1, last)
            while self.paren and j < last and self.toks[j].kind == "newline":
                j += 1
        return self.toks[j]

    def at(self, text: str) -> bool:
        t = self.tok
        return t.kind in ("punct", "keyword") and t.text == text

    def advance(self) -> Token:
        t = self.tok
        if t.kind != "eof":
            self.i += 1
        return t

    def error(self, message: str, loc: SourceLoc | None = None, hint: str | None = None) -> ParseError:
        return ParseError(Diagnostic(loc or self.tok.loc, message, hint))

    def expect(self, text: str, what: str | None = None) -> Token:
        if not self.at(text):
            raise self.error(f"expected '{text}'{' ' + what if what else ''}, found {_describe(self.tok)}")
        return self.advance()

    def expect_ident(self, what: str) -> Token:
        t = self.tok
        if t.kind != "ident":
            hint = f"'{t.text}' is a reserved word" if t.kind == "keyword" else None
            raise self.error(f"expected {what}, found {_describe(t)}", hint=hint)
        return self.advance()

    def skip_newlines(self) -> None:
        while self.tok.kind == "newline":
            self.advance()

    def end_statement(self) -> None:
        if self.tok.kind == "newline":
            self.advance()
        elif not self.at("}") and self.tok.kind != "eof":
            raise self.error(f"expected end of line, found {_describe(self.tok)}")

    def nest(self, loc: SourceLoc) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"nesting is too deep (more than {MAX_NESTING} levels)", loc)

    # -- recovery -------------------------------------------------------------------------------------------
    def sync_statement(self) -> None:
        """Skip the rest of a bad statement: to the end of its line, over any braces it opened."""
        depth = 0
        while self.tok.kind != "eof":
            if self.at("{"):
                depth += 1
            elif self.at("}"):
                if depth == 0:
                    return
                depth -= 1
            elif self.tok.kind == "newline" and depth == 0:
                self.advance()
                return
            self.advance()

    def sync_top(self) -> None:
        """Skip to the next top-level definition: a line starting with network/block/include/let outside
        braces."""
        depth = 0
        line_start = False
        while self.tok.kind != "eof":
            t = self.tok
            if line_start and depth == 0 and t.kind == "keyword" and t.text in _TOP_KEYWORDS:
                return
            if self.at("{"):
                depth += 1
            elif self.at("}"):
                depth = max(0, depth - 1)
            line_start = t.kind == "newline"
            self.advance()

    # -- file -----------------------------------------------------------------------------------------------
    def parse_file(self) -> ast.SpecFile:
        f = ast.SpecFile(self.path, [], [], [])
        while True:
            self.skip_newlines()
            if self.tok.kind == "eof" or len(self.diags) > MAX_ERRORS:
                return f
            self.depth = self.paren = 0
            try:
                t = self.tok
                if self.at("include"):
                    self.advance()
                    s = self.tok
                    if s.kind != "string":
                        raise self.error(f"expected a file name in quotes after include, found {_describe(s)}")
                    self.advance()
                    f.includes.append(ast.Include(s.value, s.loc))
                    self.end_statement()
                elif self.at("let"):
                    f.lets.append(self.parse_let())
                elif self.at("block") or self.at("network"):
                    f.blocks.append(self.parse_definition())
                elif self.at("}"):
                    raise self.error("unmatched '}'")
                else:
                    hint = None
                    if t.kind == "ident":
                        from ..errors import did_you_mean
                        hint = did_you_mean(t.text, _TOP_KEYWORDS)
                    raise self.error(f"expected network, block, include or let at the top level, found "
                                     f"{_describe(t)}", hint=hint or "statements belong inside a network or block")
            except ParseError as e:
                self.diags.append(e.diag)
                self.paren = 0
                self.advance()
                self.sync_top()

    def parse_definition(self) -> ast.Block:
        kw = self.advance()
        is_network = kw.text == "network"
        name = self.expect_ident("a network name" if is_network else "a block name")
        params: list[ast.ParamDecl] = []
        errors_before = len(self.diags)
        if self.at("("):
            self.advance()
            self.paren += 1
            try:
                while not self.at(")"):
                    p = self.expect_ident("a parameter name")
                    default = None
                    if self.at("="):
                        self.advance()
                        default = self.parse_expr()
                    params.append(ast.ParamDecl(p.text, default, p.loc))
                    if not self.at(","):
                        break
                    self.advance()
                self.paren -= 1
                self.expect(")", "to close the parameter list")
            except ParseError as e:
                # keep the definition (so its callers don't report it unknown): skip to its body
                self.diags.append(e.diag)
                self.paren = 0
                while self.tok.kind not in ("eof", "newline") and not self.at("{"):
                    self.advance()
        elif not is_network:
            self.diags.append(Diagnostic(self.tok.loc, f"expected '(' and the parameters of block '{name.text}'",
                                         hint=f"write 'block {name.text}(x)' for a block taking one tensor"))
        body = self.parse_body()
        return ast.Block(name.text, params, body, name.loc, is_network, broken=len(self.diags) > errors_before)

    def parse_body(self) -> list[ast.Stmt]:
        open_tok = self.expect("{", "to open the body")
        self.nest(open_tok.loc)
        stmts: list[ast.Stmt] = []
        while True:
            self.skip_newlines()
            if self.at("}"):
                self.advance()
                break
            if self.tok.kind == "eof" or (self.tok.kind == "keyword" and self.tok.text in ("network", "block")
                                          and self.peek().kind == "ident"):
                # report and end the body here, so the definition that follows is still parsed
                where = "" if self.tok.kind == "eof" else " before the next definition"
                self.diags.append(Diagnostic(open_tok.loc, f"this '{{' is never closed{where}",
                                             hint="add the missing '}'"))
                break
            depth = self.depth
            try:
                stmts.append(self.parse_statement())
            except ParseError as e:
                self.diags.append(e.diag)
                self.depth, self.paren = depth, 0
                self.sync_statement()
        self.depth -= 1
        return stmts

    # -- statements -----------------------------------------------------------------------------------------
    def parse_let(self) -> ast.Let:
        kw = self.advance()
        name = self.expect_ident("a constant name after let")
        self.expect("=")
        value = self.parse_expr()
        self.end_statement()
        return ast.Let(kw.loc, name.text, value)

    def parse_statement(self) -> ast.Stmt:
        t = self.tok
        if self.at("let"):
            return self.parse_let()
        if self.at("input"):
            self.advance()
            name = self.expect_ident("an input name")
            self.expect(":", "and a type, as in 'input x: f32[N, 3, 224, 224]'")
            dt = self.expect_ident("a dtype (f32 or f64)")
            self.expect("[", "to start the shape")
            self.paren += 1
            dims = [self.parse_expr()]
            while self.at(","):
                self.advance()
                dims.append(self.parse_expr())
            self.paren -= 1
            self.expect("]", "to close the shape")
            self.end_statement()
            return ast.InputDecl(t.loc, name.text, dt.text, dt.loc, dims)
        if self.at("output"):
            self.advance()
            names = [self.expect_ident("an output name")]
            while self.at(","):
                self.advance()
                names.append(self.expect_ident("an output name"))
            self.end_statement()
            return ast.OutputDecl(t.loc, [(n.text, n.loc) for n in names])
        if self.at("return"):
            self.advance()
            values = [self.parse_expr()]
            while self.at(","):
                self.advance()
                values.append(self.parse_expr())
            self.end_statement()
            return ast.Return(t.loc, values)
        if self.at("if"):
            stmt = self.parse_if()
            self.end_statement()
            return stmt
        if t.kind == "ident" and (self.peek().text in ("=", ",") and self.peek().kind == "punct"):
            targets = [self.advance()]
            while self.at(","):
                self.advance()
                targets.append(self.expect_ident("a name to assign"))
            self.expect("=")
            value = self.parse_expr()
            self.end_statement()
            return ast.Assign(t.loc, [(x.text, x.loc) for x in targets], value)
        if t.kind == "keyword" and t.text in ("network", "block", "include"):
            raise self.error(f"'{t.text}' is only allowed at the top level of a file")
        value = self.parse_expr()
        self.end_statement()
        return ast.ExprStmt(t.loc, value)

    def parse_if(self) -> ast.If:
        kw = self.advance()
        cond = self.parse_expr()
        then = self.parse_body()
        else_: list[ast.Stmt] = []
        save = self.i
        self.skip_newlines()
        if self.at("else"):
            self.advance()
            if self.at("if"):
                else_ = [self.parse_if()]
            else:
                else_ = self.parse_body()
        else:
            self.i = save
        return ast.If(kw.loc, cond, then, else_)

    # -- expressions ----------------------------------------------------------------------------------------
    def parse_expr(self) -> ast.Expr:
        """expr = logic { '->' step }, where a line starting with '->' continues the chain."""
        start = self.tok
        self.nest(start.loc)
        head = self.parse_binary(0)
        steps: list[ast.Expr] = []
        while True:
            if self.tok.kind == "newline":
                k = 0
                while self.peek(k).kind == "newline":
                    k += 1
                if self.peek(k).kind == "punct" and self.peek(k).text == "->":
                    self.skip_newlines()
            if not self.at("->"):
                break
            self.advance()
            self.skip_newlines()
            steps.append(self.parse_step())
        self.depth -= 1
        return ast.Chain(start.loc, head, steps) if steps else head

    def parse_step(self) -> ast.Expr:
        t = self.tok
        if self.at("repeat"):
            self.advance()
            self.nest(t.loc)
            count = self.parse_binary(0)
            self.expect("{", "to open the repeated steps")
            self.skip_newlines()
            steps = [self.parse_step()]
            while True:
                self.skip_newlines()
                if not self.at("->"):
                    break
                self.advance()
                self.skip_newlines()
                steps.append(self.parse_step())
            self.expect("}", "to close the repeated steps")
            self.depth -= 1
            return ast.Repeat(t.loc, count, steps)
        if t.kind != "ident":
            raise self.error(f"expected a layer or block after '->', found {_describe(t)}")
        self.advance()
        call = ast.Call(t.loc, t.text, [])
        if self.at("("):
            self.parse_args(call)
        self.parse_alias(call)
        return call

    def parse_alias(self, call: ast.Call) -> None:
        if self.at("as"):
            self.advance()
            name = self.expect_ident("a layer name after 'as'")
            call.alias, call.alias_loc = name.text, name.loc

    def parse_args(self, call: ast.Call) -> None:
        open_tok = self.expect("(")
        self.paren += 1
        seen_keyword = False
        while not self.at(")"):
            t = self.tok
            if t.kind == "ident" and self.peek().kind == "punct" and self.peek().text == "=":
                self.advance()
                self.advance()
                call.args.append(ast.Arg(t.text, self.parse_expr(), t.loc))
                seen_keyword = True
            else:
                value = self.parse_expr()
                if seen_keyword:
                    self.diags.append(Diagnostic(value.loc, "positional argument after a keyword argument",
                                                 hint="put positional arguments first"))
                call.args.append(ast.Arg(None, value, value.loc))
            if not self.at(","):
                break
            self.advance()
        if not self.at(")"):
            raise self.error(f"expected ',' or ')' in the arguments of '{call.func}', found {_describe(self.tok)}",
                             hint=None if self.tok.kind != "eof" else f"the '(' at {open_tok.loc} is never closed")
        self.paren -= 1
        call.end = self.advance().loc

    def parse_binary(self, min_prec: int) -> ast.Expr:
        left = self.parse_unary()
        levels = 0  # each operator deepens the (left-deep) tree that later passes walk recursively
        while True:
            t = self.tok
            prec = _PREC.get(t.text) if t.kind in ("punct", "keyword") else None
            if prec is None or prec <= min_prec:
                self.depth -= levels
                return left
            self.nest(t.loc)
            levels += 1
            self.advance()
            right = self.parse_binary(prec)
            if prec == 4 and self.tok.text in _BINARY[2][1] and self.tok.kind == "punct":
                raise self.error("comparisons cannot be chained", hint="use 'and' between two comparisons")
            left = ast.BinOp(t.loc, t.text, left, right)

    def parse_unary(self) -> ast.Expr:
        t = self.tok
        if self.at("-"):
            self.advance()
            self.nest(t.loc)
            operand = self.parse_unary()
            self.depth -= 1
            return ast.UnaryOp(t.loc, "-", operand)
        if self.at("not"):
            self.advance()
            self.nest(t.loc)
            operand = self.parse_binary(_NOT_PREC)
            self.depth -= 1
            return ast.UnaryOp(t.loc, "not", operand)
        return self.parse_atom()

    def parse_atom(self) -> ast.Expr:
        t = self.tok
        if t.kind in ("int", "float", "string"):
            self.advance()
            return ast.Literal(t.loc, t.value)
        if self.at("true") or self.at("false"):
            self.advance()
            return ast.Literal(t.loc, t.text == "true")
        if t.kind == "ident":
            self.advance()
            if self.at("("):
                call = ast.Call(t.loc, t.text, [])
                self.parse_args(call)
                self.parse_alias(call)
                return call
            return ast.Name(t.loc, t.text)
        if self.at("["):
            self.advance()
            self.nest(t.loc)
            self.paren += 1
            items: list[ast.Expr] = []
            while not self.at("]"):
                items.append(self.parse_expr())
                if not self.at(","):
                    break
                self.advance()
            self.paren -= 1
            self.expect("]", "to close the list")
            self.depth -= 1
            return ast.ListExpr(t.loc, items)
        if self.at("("):
            self.advance()
            self.paren += 1
            inner = self.parse_expr()
            self.paren -= 1
            self.expect(")")
            return inner
        if self.at("repeat"):
            raise self.error("'repeat' must follow '->' in a chain", hint="write 'x -> repeat 3 { layer }'")
        raise self.error(f"expected a value, found {_describe(t)}")


def parse(text: str, path: str, diags: list[Diagnostic]) -> ast.SpecFile:
    """Parse one file; problems are appended to `diags`."""
    return Parser(text, path, diags).parse_file()
