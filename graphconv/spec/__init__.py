"""The spec language front end: read files, follow includes, parse, check, lower to the IR.

    load_graph(path, params)        -> Graph, or SpecError with every located problem
    check_spec(path, params)        -> (Graph | None, diagnostics, sources)
    load_graph_text(text, path=...) -> Graph from a string (tests, the API)
    parse_value(text)               -> a literal for `--set k=v`

Files are untrusted: sizes are checked before reading, text must be UTF-8, and includes must stay inside the folder
of the top-level spec (after resolving symbolic links).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import Diagnostic, SourceLoc, SpecError
from ..ir.graph import Graph
from . import ast
from .check import check
from .lower import Lowerer
from .names import op_for
from .parser import parse

MAX_FILE_BYTES = 1 << 20
MAX_FILES = 64
MAX_INCLUDE_DEPTH = 16

__all__ = ["load_graph", "load_graph_text", "check_spec", "check_text", "parse_value", "SpecError"]


@dataclass
class _Loaded:
    files: list[ast.SpecFile] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    diags: list[Diagnostic] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)  # real path -> display path


def _decode(data: bytes, path: str, diags: list[Diagnostic]) -> str | None:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # editors on Windows may start the file with a BOM
    except UnicodeDecodeError as e:
        before = data[:e.start]
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        diags.append(Diagnostic(SourceLoc(path, line, col), f"the file is not valid UTF-8 (byte 0x{data[e.start]:02x})",
                                hint="save the spec as UTF-8"))
        return None


def _read(real: str, shown: str, at: SourceLoc | None, diags: list[Diagnostic]) -> str | None:
    try:
        size = os.stat(real).st_size
        if not os.path.isfile(real):
            diags.append(Diagnostic(at, f"'{shown}' is not a file"))
            return None
        if size > MAX_FILE_BYTES:
            diags.append(Diagnostic(at or SourceLoc(shown, 1, 1), f"'{shown}' is {size} bytes; specs are limited "
                                                                  f"to {MAX_FILE_BYTES} bytes"))
            return None
        with open(real, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        diags.append(Diagnostic(at, f"cannot read '{shown}': {e.strerror or e}"))
        return None
    if len(data) > MAX_FILE_BYTES:  # it grew after the size check
        diags.append(Diagnostic(at or SourceLoc(shown, 1, 1), f"'{shown}' is larger than {MAX_FILE_BYTES} bytes"))
        return None
    return _decode(data, shown, diags)


def _load_file(text: str, shown: str, real: str, root: str, out: _Loaded, chain: list[str]) -> None:
    """Parse a file and, first, the files it includes: `out.files` ends in dependency order, the top-level file
    last, so constants are evaluated after the ones they may use."""
    out.sources[shown] = text
    f = parse(text, shown, out.diags)
    for inc in f.includes:
        _follow(inc, f, shown, real, root, out, chain)
    out.files.append(f)


def _follow(inc: ast.Include, f: ast.SpecFile, shown: str, real: str, root: str, out: _Loaded,
            chain: list[str]) -> None:
    if not inc.path or "\0" in inc.path:
        out.diags.append(Diagnostic(inc.loc, "an include needs a file name" if not inc.path else
                                    "an include file name cannot contain a NUL character"))
        return
    base = os.path.dirname(real)
    target = os.path.realpath(os.path.join(base, inc.path))
    target_shown = os.path.normpath(os.path.join(os.path.dirname(shown), inc.path))
    if os.path.commonpath([root, target]) != root:
        out.diags.append(Diagnostic(inc.loc, f"include '{inc.path}' points outside the project folder",
                                    hint=f"includes must stay inside {root}"))
        return
    if target in chain:
        names = [out.seen[p] for p in chain[chain.index(target):]] + [target_shown]
        msg = "the file includes itself" if target == real else "include cycle: " + " -> ".join(names)
        out.diags.append(Diagnostic(inc.loc, msg))
        return
    if target in out.seen:
        return  # already loaded through another include
    if len(chain) >= MAX_INCLUDE_DEPTH or len(out.seen) >= MAX_FILES:
        out.diags.append(Diagnostic(inc.loc, f"too many or too deeply nested includes (limits: {MAX_FILES} files, "
                                             f"depth {MAX_INCLUDE_DEPTH})"))
        return
    if not os.path.exists(target):
        out.diags.append(Diagnostic(inc.loc, f"cannot find include '{inc.path}'", hint=f"looked for {target_shown}"))
        return
    out.seen[target] = target_shown
    text = _read(target, target_shown, inc.loc, out.diags)
    if text is not None:
        _load_file(text, target_shown, target, root, out, chain + [target])


def _front(text: str, shown: str, real: str, root: str, params: dict[str, Any] | None,
           out: _Loaded, network: str | None = None) -> Graph | None:
    out.seen[real] = shown
    _load_file(text, shown, real, root, out, [real])
    main = out.files[-1]
    # file-level definitions, across all files
    blocks: dict[str, ast.Block] = {}
    lets: list[ast.Let] = []
    global_names: dict[str, SourceLoc] = {}  # to report duplicates
    for f in out.files:
        for let in f.lets:
            if let.name in global_names:
                out.diags.append(Diagnostic(let.loc, f"constant '{let.name}' is already defined",
                                            notes=[(global_names[let.name], "first defined here")]))
            global_names.setdefault(let.name, let.loc)
            lets.append(let)
        for b in f.blocks:
            if b.is_network and f is not main:
                out.diags.append(Diagnostic(b.loc, f"network '{b.name}' is in an included file; included files "
                                                   "hold blocks and constants"))
                continue
            if b.name in blocks:
                first = blocks[b.name]
                out.diags.append(Diagnostic(b.loc, f"'{b.name}' is already defined",
                                            notes=[(first.loc, "first defined here")]))
                continue
            if op_for(b.name) is not None:
                out.diags.append(Diagnostic(b.loc, f"'{b.name}' is the name of a built-in op",
                                            hint="choose another name"))
                continue
            blocks[b.name] = b
    networks = [b for b in main.blocks if b.is_network and blocks.get(b.name) is b]
    if network is not None:
        networks = [b for b in networks if b.name == network]
        if not networks:
            out.diags.append(Diagnostic(SourceLoc(shown, 1, 1), f"no network named '{network}' in {shown}"))
    elif not networks and not any(d.loc and d.loc.path == shown for d in out.diags):
        out.diags.append(Diagnostic(SourceLoc(shown, 1, 1), f"{shown} defines no network",
                                    hint="add 'network NAME { ... }'"))
    elif len(networks) > 1:
        out.diags.append(Diagnostic(networks[1].loc, "a spec file defines one network",
                                    notes=[(networks[0].loc, "the first is here")],
                                    hint="put shared layers in blocks"))
    parse_failed = bool(out.diags)
    lowerable = check(blocks, lets, out.diags)
    if parse_failed or not lowerable or len(networks) != 1:
        return None  # evaluating a half-parsed file would only report echoes of the syntax errors
    graph = Lowerer(blocks, lets, out.diags).lower(networks[0], dict(params or {}))
    if graph is not None and not out.diags:
        graph.meta["source"] = shown
    return graph


def _sorted(diags: list[Diagnostic], order: list[str]) -> list[Diagnostic]:
    rank = {p: i for i, p in enumerate(order)}

    def key(d: Diagnostic):
        if d.loc is None:
            return (-1, 0, 0)
        return (rank.get(d.loc.path, len(rank)), d.loc.line, d.loc.col)

    return sorted(diags, key=key)


def check_spec(path: str, params: dict[str, Any] | None = None, network: str | None = None
               ) -> tuple[Graph | None, list[Diagnostic], dict[str, str]]:
    """Load and check a spec file. Returns (graph or None, diagnostics in source order, sources)."""
    out = _Loaded()
    real = os.path.realpath(path)
    text = _read(real, path, None, out.diags)
    if text is None:
        if out.diags and out.diags[0].loc is None:
            out.diags[0].loc = SourceLoc(path, 1, 1)
        return None, out.diags, out.sources
    graph = _front(text, path, real, os.path.dirname(real), params, out, network)
    return (graph if not out.diags else None), _sorted(out.diags, list(out.sources)), out.sources


def check_text(text: str, path: str = "<string>", params: dict[str, Any] | None = None, root: str | None = None,
               network: str | None = None) -> tuple[Graph | None, list[Diagnostic], dict[str, str]]:
    """Like check_spec for spec text; includes resolve against `root` (default: the current folder)."""
    out = _Loaded()
    root = os.path.realpath(root or os.getcwd())
    graph = _front(text, path, os.path.join(root, os.path.basename(path) or "spec.gc"), root, params, out, network)
    return (graph if not out.diags else None), _sorted(out.diags, list(out.sources)), out.sources


def load_graph(path: str, params: dict[str, Any] | None = None, network: str | None = None) -> Graph:
    """Parse, check and lower a spec file; raises SpecError listing every problem."""
    graph, diags, sources = check_spec(path, params, network)
    if diags or graph is None:
        raise SpecError(diags, sources)
    return graph


def load_graph_text(text: str, path: str = "<string>", params: dict[str, Any] | None = None,
                    root: str | None = None) -> Graph:
    """A graph from spec text (tests, the API); raises SpecError with every located problem."""
    graph, diags, sources = check_text(text, path, params, root)
    if diags or graph is None:
        raise SpecError(diags, sources)
    return graph


def parse_value(text: str) -> Any:
    """A literal as the spec language writes it: 3, 0.5, true, "s", [1, 2], a bare word (a string). Raises
    ValueError when `text` is not one."""
    diags: list[Diagnostic] = []
    f = parse(f"let v = {text}\n", "<--set>", diags)
    if diags or len(f.lets) != 1:
        raise ValueError(f"not a value: {text!r}")

    def value(e: ast.Expr) -> Any:
        if isinstance(e, ast.Literal):
            return e.value
        if isinstance(e, ast.Name):
            return e.id
        if isinstance(e, ast.ListExpr):
            return [value(i) for i in e.items]
        if isinstance(e, ast.UnaryOp) and e.op == "-" and isinstance(e.operand, ast.Literal) \
                and isinstance(e.operand.value, (int, float)) and not isinstance(e.operand.value, bool):
            return -e.operand.value
        raise ValueError(f"not a value: {text!r} (give a number, true/false, a string or a list)")

    return value(f.lets[0].value)
