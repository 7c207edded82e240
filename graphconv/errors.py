"""Errors that reach users.

Every problem with user input (a spec, a weights file, an input array) becomes a `GraphconvError`; the CLI prints
it and exits 1, never with a traceback. Problems in a spec are `Diagnostic`s located at path:line:col, rendered the
way compilers do: the message, the source line, a caret under the offending text, and a hint where one helps.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["SourceLoc", "Diagnostic", "GraphconvError", "SpecError", "WeightsError", "InputError", "ExecutionError",
           "TrainingError", "OpError", "did_you_mean", "MAX_ERRORS"]

MAX_ERRORS = 100  # diagnostics shown for one spec; a flood of errors helps nobody and costs time


@dataclass(frozen=True)
class SourceLoc:
    """A position in a spec file: 1-based line and column, and the length of the text it covers."""

    path: str
    line: int
    col: int
    length: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"

    def span_to(self, other: "SourceLoc | None") -> "SourceLoc":
        """A location from the start of this one to the end of `other` when both are on one line."""
        if other is None or other.path != self.path or other.line != self.line or other.col < self.col:
            return self
        return SourceLoc(self.path, self.line, self.col, other.col + other.length - self.col)


@dataclass
class Diagnostic:
    """One located problem. `notes` point at related places (e.g. the first definition of a duplicate)."""

    loc: SourceLoc | None
    message: str
    hint: str | None = None
    severity: str = "error"
    notes: list[tuple[SourceLoc, str]] = field(default_factory=list)

    def render(self, sources: dict[str, str] | None = None, *, lines: dict[str, list[str]] | None = None) -> str:
        """The diagnostic as text; `lines` (path -> source lines) saves splitting the sources again for each
        diagnostic of a long list."""
        if lines is None:
            lines = {p: t.splitlines() for p, t in (sources or {}).items()}
        out = [_render_one(self.loc, self.severity, self.message, lines)]
        for loc, text in self.notes:
            out.append(_render_one(loc, "note", text, lines))
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)


def _render_one(loc: SourceLoc | None, severity: str, message: str, lines: dict[str, list[str]]) -> str:
    if loc is None:
        return f"{severity}: {message}"
    out = f"{loc}: {severity}: {message}"
    src_lines = lines.get(loc.path)
    if src_lines is not None:
        if 1 <= loc.line <= len(src_lines):
            src = src_lines[loc.line - 1].expandtabs(1)
            if len(src) > 200:  # keep huge single-line files readable
                start = max(0, loc.col - 80)
                src = ("..." if start else "") + src[start:start + 160]
                col = loc.col - start + (3 if start else 0)
            else:
                col = loc.col
            width = max(1, min(loc.length, len(src) - col + 1))
            out += f"\n  {src}\n  {' ' * (col - 1)}^{'~' * (width - 1)}"
    return out


class GraphconvError(Exception):
    """Base of every error caused by user input; the CLI prints it and exits with status 1."""


class SpecError(GraphconvError):
    """One or more located problems in a spec, all reported together."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = list(diagnostics)
        self.sources = dict(sources or {})
        super().__init__(self.render())

    def render(self) -> str:
        """Every diagnostic (up to MAX_ERRORS) with its source line and caret, then the count."""
        lines = {p: t.splitlines() for p, t in self.sources.items()}
        shown = self.diagnostics[:MAX_ERRORS]
        body = "\n".join(d.render(lines=lines) for d in shown)
        n = len(self.diagnostics)
        more = f" (the first {MAX_ERRORS} shown)" if n > MAX_ERRORS else ""
        return f"{body}\n{n} error{'s' if n != 1 else ''} found{more}"


class WeightsError(GraphconvError):
    """A weights file is unreadable, unsafe, or does not fit the network."""


class InputError(GraphconvError):
    """An input array given to a model has the wrong name, shape or dtype."""


class ExecutionError(GraphconvError):
    """A node failed while running; the message names the node, its op and its place in the spec."""


class OpError(Exception):
    """Raised by an op's rules (attribute validation, shape inference); the spec lowering turns it into a located
    Diagnostic. `attr` names the offending attribute and `arg` the offending tensor input (0-based), when known, so
    the caret can point at that argument instead of the whole call. `others` are further problems found in the same
    call (every bad attribute of a call is reported at once)."""

    def __init__(self, message: str, *, attr: str | None = None, arg: int | None = None, hint: str | None = None,
                 others: list["OpError"] | None = None):
        super().__init__(message)
        self.message = message
        self.attr = attr
        self.arg = arg
        self.hint = hint
        self.others = list(others or [])


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


class TrainingError(GraphconvError):
    """A network cannot be trained as asked (an op without a gradient rule, a loss on the wrong output), or training
    stopped (bad data, a divergent loss)."""
