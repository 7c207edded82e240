"""Syntax tree of a spec file. Every node keeps the location of its first token for error messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SourceLoc


# -- expressions ------------------------------------------------------------------------------------------------

@dataclass
class Expr:
    loc: SourceLoc


@dataclass
class Literal(Expr):
    value: object  # int, float, bool or str


@dataclass
class Name(Expr):
    id: str


@dataclass
class ListExpr(Expr):
    items: list[Expr]


@dataclass
class Arg:
    name: str | None  # keyword, or None for a positional argument
    value: Expr
    loc: SourceLoc  # of the keyword (or of the value when positional)


@dataclass
class Call(Expr):
    """`f(args)` or, as a chain step, a bare `f`. `alias` is the layer name given with `as`."""

    func: str
    args: list[Arg]
    alias: str | None = None
    alias_loc: SourceLoc | None = None
    end: SourceLoc | None = None  # closing parenthesis, to underline the whole call


@dataclass
class BinOp(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass
class UnaryOp(Expr):
    op: str  # "-" | "not"
    operand: Expr


@dataclass
class Repeat(Expr):
    """`repeat COUNT { step -> step ... }` inside a chain: the steps applied COUNT times in sequence."""

    count: Expr
    steps: list[Expr]  # Call or Repeat


@dataclass
class Chain(Expr):
    """`head -> step -> step`: each step receives the previous value as its first argument."""

    head: Expr
    steps: list[Expr]  # Call or Repeat


# -- statements -------------------------------------------------------------------------------------------------

@dataclass
class Stmt:
    loc: SourceLoc


@dataclass
class Let(Stmt):
    name: str
    value: Expr


@dataclass
class Assign(Stmt):
    targets: list[tuple[str, SourceLoc]]
    value: Expr


@dataclass
class InputDecl(Stmt):
    name: str
    dtype: str
    dtype_loc: SourceLoc
    dims: list[Expr]


@dataclass
class OutputDecl(Stmt):
    names: list[tuple[str, SourceLoc]]


@dataclass
class Return(Stmt):
    values: list[Expr]


@dataclass
class If(Stmt):
    cond: Expr
    then: list[Stmt]
    else_: list[Stmt] = field(default_factory=list)


@dataclass
class ExprStmt(Stmt):
    value: Expr


# -- top level --------------------------------------------------------------------------------------------------

@dataclass
class ParamDecl:
    name: str
    default: Expr | None
    loc: SourceLoc


@dataclass
class Block:
    name: str
    params: list[ParamDecl]
    body: list[Stmt]
    loc: SourceLoc
    is_network: bool = False
    broken: bool = False  # had a syntax error: the static checks skip it rather than report echoes


@dataclass
class Include:
    path: str
    loc: SourceLoc


@dataclass
class SpecFile:
    path: str
    includes: list[Include]
    lets: list[Let]
    blocks: list[Block]  # networks too (is_network=True)
