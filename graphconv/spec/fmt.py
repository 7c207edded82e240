"""`graphconv fmt`: rewrite specs in one canonical layout, keeping every comment (like gofmt or black).

    format_spec(text, path) -> the canonical text, or SpecError when the spec has syntax errors

Design note. The formatter works on tokens, not on the syntax tree: the tree drops comments and the user's line
breaks, and both must survive. The lexer, asked with `keep_comments=True`, gives the code tokens with the newlines
and comments between them; each stretch between two code tokens (a "gap") is either empty, and then the two tokens
share a line with a space or not, or it holds line breaks and comments, and then the formatter starts a new line.
So the formatter never invents or removes a line break inside a statement, with four exceptions that make the layout
canonical: a break after `->` moves before it, a break before `,` moves after it, `}` and `else` join on one line,
and a body `{ ... }` written over several lines gets one statement per line. It never reflows long lines.

Where a new line starts, its indentation follows from a stack of what is open (bodies, parentheses, brackets,
`repeat { }`): statements are indented two spaces per body; a line starting with `->` two more than the line its
chain is on; a line inside brackets two more than the line that opened them, or aligned just after the opening
bracket when the user aligned it there; a closing bracket at the start of a line goes back to its opener's line.
Spacing within a line depends only on the two tokens and the innermost bracket (`k=v` in calls, `x = v` elsewhere).
The rules are listed in docs/spec-language.md, "Formatting".

A formatter must never change what a spec means, so `format_spec` checks its own output before returning it: the
same code tokens, the same comments in the same order, and a syntax tree equal to the original's apart from
locations. A difference is a bug in the formatter and raises `FormatterBug` instead of returning the text. Every
loop here is iterative and the parser bounds nesting, so deep nesting is a clean SpecError, not a RecursionError.
Lines are built from lists of pieces, not by adding to strings, so a line of a million characters stays linear.

The command. A file is compared with its formatted text byte for byte, so a byte-order mark or `\r\n` line
endings make it "would reformat" and are removed. Writing (`_write`): a read-only file is refused (exit 1, file
untouched): one the user may not write, or one nobody may write (no `w` bit at all, which stops root too), since
the rename that replaces a file needs only the folder's permission. A file with one name is replaced at once: a
complete temporary file renamed over it, with its permissions; a link given on the command line is followed and
its target rewritten. A file with more than one hard link is rewritten in place instead, so that all its names
keep sharing the new contents: the text goes first to a temporary file beside it (written and flushed to disk, so
it is complete and fits), then over the file's contents (write, truncate, fsync); should that fail half-way, the
temporary file is kept and the message names it. Folders (`_expand`) stand for the .gc files under them; there,
links that resolve outside the folder given are skipped with a note (they are someone else's files), and so are
broken links and FIFOs, devices and sockets named *.gc, which are never opened; links to folders are not followed;
a folder with no .gc file to format is an error (exit 1), so `fmt --check` on a mistyped folder fails in CI. A
FIFO named on the command line is refused without being opened.
"""

from __future__ import annotations

import argparse
import difflib
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from ..errors import Diagnostic, SourceLoc, SpecError
from ..files import replacing
from . import MAX_FILE_BYTES, _decode
from .lexer import Token, tokenize
from .parser import parse

__all__ = ["format_spec", "FormatterBug", "add_parsers", "cmd_fmt", "VERBS"]

_CLOSERS = {")": "(", "]": "[", "}": "{"}
_COMMENT_TRAILING_WS = " \t\r\f\v"


class FormatterBug(RuntimeError):
    """The formatter's output would not mean what its input meant. A bug in the formatter: the input is left as
    it is."""


def format_spec(text: str, path: str = "<spec>") -> str:
    """The spec `text` in the canonical layout (docs/spec-language.md, "Formatting"), comments kept.

    Raises SpecError with every located syntax error when `text` does not parse; semantic problems (an unknown
    layer, a wrong shape) do not stop formatting. Formatting is idempotent: format_spec(format_spec(x)) equals
    format_spec(x).
    """
    text = text.removeprefix("\ufeff")
    diags: list[Diagnostic] = []
    tree = parse(text, path, diags)
    if diags:
        diags.sort(key=lambda d: (0, 0) if d.loc is None else (d.loc.line, d.loc.col))
        raise SpecError(diags, {path: text})
    tokens = tokenize(text, path, [], keep_comments=True)
    out = _Layout(tokens).render()
    if out != text:  # the same text has the same tokens and tree: only a change needs the check
        _verify(tokens, out, tree, path)
    return out


# -- layout -----------------------------------------------------------------------------------------------------

def _is(tok: Token | None, text: str) -> bool:
    return tok is not None and tok.kind in ("punct", "keyword") and tok.text == text


def _has_newline(gap: list[str | None]) -> bool:
    return any(item is None for item in gap)


@dataclass
class _Frame:
    """Something open: a body `{`, a `(` (call, parameter list or grouping), a list `[`, or `repeat ... {`."""

    kind: str  # "body" | "call" | "params" | "group" | "list" | "repeat"
    line_indent: int  # indentation of the output line holding the opener
    first_src: int | None = None  # source column of the first token after the opener, when on the opener's line
    first_out: int | None = None  # output column of that token
    visual: bool | None = None  # lines inside aligned at first_out; decided at the first line that starts inside


@dataclass
class _Line:
    indent: int
    text: str = ""  # the code; "" for a line holding only a comment (joined from `parts` when the line is done)
    comment: str | None = None
    parts: list[str] = field(default_factory=list)  # the code while the line is built: appending to a list, not
    width: int = 0  # to a string, keeps a line of a million characters linear; width: len("".join(parts))

    def add(self, s: str) -> None:
        self.parts.append(s)
        self.width += len(s)

    def done(self) -> _Line:
        self.text, self.parts = "".join(self.parts), []
        return self


class _Layout:
    """One pass over the tokens of a spec that parsed without errors, building the lines of the output."""

    def __init__(self, tokens: list[Token]):
        # code tokens, and gaps[i]: what stands before code[i] (gaps[len(code)]: before the end of the file), a list
        # of None for each newline and the text of each comment
        self.code: list[Token] = []
        self.gaps: list[list[str | None]] = [[]]
        for t in tokens:
            if t.kind == "newline":
                self.gaps[-1].append(None)
            elif t.kind == "comment":
                self.gaps[-1].append(t.text.rstrip(_COMMENT_TRAILING_WS))
            elif t.kind != "eof":
                self.code.append(t)
                self.gaps.append([])
        self._move_breaks()
        self.repeats = self._repeat_braces()
        self.unary = [_is(t, "-") and self._starts_operand(i) for i, t in enumerate(self.code)]
        self.lines: list[_Line | None] = []  # None: a blank line
        self.cur: _Line | None = None
        self.stack: list[_Frame] = []

    def _move_breaks(self) -> None:
        """Canonical places of the breaks the parser accepts in more than one: before `->` rather than after it,
        after `,` rather than before it, and none between `}` and `else`."""
        gaps = self.gaps
        for i, t in enumerate(self.code):
            if _is(t, "->") and _has_newline(gaps[i + 1]):
                gaps[i], gaps[i + 1] = gaps[i] + gaps[i + 1], []
            elif _is(t, ",") and _has_newline(gaps[i]):
                gaps[i], gaps[i + 1] = [], gaps[i] + gaps[i + 1]
            elif _is(t, "else") and all(item is None for item in gaps[i]):
                gaps[i] = []

    def _repeat_braces(self) -> set[int]:
        """The indices of the `{` of `repeat`s (the others open bodies). A body written over several lines gets a
        line break after its `{` and before its `}`; one written on one line stays so."""
        repeats: set[int] = set()
        opened: list[int] = []
        breaks = [0]  # breaks[i]: how many of gaps[0:i] hold a newline
        for gap in self.gaps:
            breaks.append(breaks[-1] + _has_newline(gap))
        after_repeat = False
        for i, t in enumerate(self.code):
            if _is(t, "repeat"):
                after_repeat = True
            elif _is(t, "{"):
                if after_repeat:
                    repeats.add(i)
                after_repeat = False
                opened.append(i)
            elif _is(t, "}"):
                start = opened.pop()
                if start not in repeats and breaks[i + 1] > breaks[start + 1]:
                    for g in (start + 1, i):
                        if not _has_newline(self.gaps[g]):
                            self.gaps[g].insert(0, None)
        return repeats

    def _starts_operand(self, i: int) -> bool:
        """Whether code[i] begins an operand (so a `-` there is unary): nothing before it that ends a value."""
        if i == 0:
            return True
        prev = self.code[i - 1]
        if prev.kind == "punct":
            return prev.text not in (")", "]", "}")
        return prev.kind == "keyword" and prev.text not in ("true", "false")

    # -- the pass -------------------------------------------------------------------------------------------
    def render(self) -> str:
        code, gaps = self.code, self.gaps
        for i in range(len(code) + 1):
            nxt = code[i] if i < len(code) else None
            if self.cur is None or nxt is None or _has_newline(gaps[i]):
                self._new_line(i, nxt)
            else:
                self.cur.add(self._space(i))
            if nxt is None:
                break
            line = self.cur
            if i > 0 and code[i - 1].kind == "punct" and code[i - 1].text in ("(", "[", "{") \
                    and not _has_newline(gaps[i]):  # the first token after an opening bracket, on its line
                self.stack[-1].first_src = nxt.loc.col
                self.stack[-1].first_out = line.indent + line.width
            line.add(nxt.text)
            self._track(i, nxt, line)
        return _render(self.lines)

    def _track(self, i: int, t: Token, line: _Line) -> None:
        if t.kind != "punct":
            return
        if t.text in _CLOSERS:
            self.stack.pop()
        elif t.text == "(":
            prev = self.code[i - 1] if i else None
            if prev is not None and prev.kind == "ident":
                header = i >= 2 and self.code[i - 2].kind == "keyword" and self.code[i - 2].text in ("block",
                                                                                                      "network")
                kind = "params" if header else "call"
            else:
                kind = "group"
            self.stack.append(_Frame(kind, line.indent))
        elif t.text == "[":
            self.stack.append(_Frame("list", line.indent))
        elif t.text == "{":
            self.stack.append(_Frame("repeat" if i in self.repeats else "body", line.indent))

    def _space(self, i: int) -> str:
        """What separates code[i-1] and code[i] on one line: a space or nothing."""
        prev, t = self.code[i - 1], self.code[i]
        p = prev.text if prev.kind == "punct" else None
        n = t.text if t.kind == "punct" else None
        if n in (",", ")", "]", ":") or p in ("(", "["):
            return ""
        if n == "}" or p == "{":
            return "" if (n, p) == ("}", "{") else " "
        if "=" in (n, p):
            return "" if self.stack and self.stack[-1].kind == "call" else " "
        if self.unary[i - 1] or (n in ("(", "[") and prev.kind == "ident"):  # -x, f(x), f32[N, 3]
            return ""
        return " "

    def _depth(self) -> int:
        return sum(f.kind == "body" for f in self.stack)

    def _content_indent(self, frame: _Frame, first: Token | None = None) -> int:
        """Where lines inside a bracket start. `first` (the first token of such a line) decides, the first time,
        whether the user aligned the lines just after the opening bracket."""
        if frame.visual is None and first is not None:
            shift = self._arrow(frame, first)
            frame.visual = frame.first_src is not None and first.loc.col == frame.first_src + shift
        if frame.visual:
            return frame.first_out
        return frame.line_indent + 2

    @staticmethod
    def _arrow(frame: _Frame | None, t: Token) -> int:
        """The extra indentation of a line starting with `->`: one level below the chain's first line, except
        directly inside `repeat { }`, whose braces already indent the steps."""
        return 2 if _is(t, "->") and (frame is None or frame.kind != "repeat") else 0

    def _indent(self, t: Token) -> tuple[int, int]:
        """The indentation of a line starting with `t`, and that of comment lines just above it."""
        top = self.stack[-1] if self.stack else None
        depth = self._depth()
        arrow = self._arrow(top, t)
        if t.kind == "punct" and t.text in _CLOSERS:
            if top.kind == "body":
                return 2 * (depth - 1), 2 * depth
            return top.line_indent, self._content_indent(top)
        if top is None or top.kind == "body":
            return 2 * depth + arrow, 2 * depth + arrow
        indent = self._content_indent(top, t) + arrow
        return indent, indent

    def _new_line(self, i: int, nxt: Token | None) -> None:
        """End the current line at the gap before code[i] (its trailing comment, comment lines, blank lines) and
        start the line of `nxt`."""
        gap = self.gaps[i]
        prev = self.code[i - 1] if i else None
        trailing = None
        pending = 1 if self.cur is None else 0  # newlines since the last line with something on it
        comments: list[str] = []
        blanks: list[int] = []  # blank lines before each comment line, then before the next code line
        for k, item in enumerate(gap):
            if item is None:
                pending += 1
            elif k == 0 and self.cur is not None:
                trailing = item
            else:
                blanks.append(max(0, pending - 1))
                comments.append(item)
                pending = 0
        blanks.append(max(0, pending - 1))

        top = self.stack[-1] if self.stack else None
        statement_gap = (top is None or top.kind == "body") and not _is(nxt, "->")
        if not statement_gap:
            blanks = [0] * len(blanks)
        else:
            blanks = [min(1, b) for b in blanks]
            if self.cur is None or (_is(prev, "{") and top is not None):
                blanks[0] = 0  # nothing blank at the start of the file or of a body
            if nxt is None or (_is(nxt, "}") and top is not None):
                blanks[-1] = 0  # nor at its end
            if top is None and _is(prev, "}") and (nxt is not None or comments):
                blanks[0] = 1  # after a definition
            if top is None and nxt is not None and nxt.kind == "keyword" and nxt.text in ("network", "block"):
                # before a definition and the comments just above it
                last = max((k for k, b in enumerate(blanks) if b), default=0)
                if last or self.cur is not None:
                    blanks[last] = 1

        if nxt is None:
            indent = comment_indent = 0
        else:
            indent, comment_indent = self._indent(nxt)
        if self.cur is not None:
            self.cur.comment = trailing
            self.lines.append(self.cur.done())
        for k, comment in enumerate(comments):
            self.lines.extend([None] * blanks[k])
            self.lines.append(_Line(comment_indent, "", comment))
        self.lines.extend([None] * blanks[-1])
        self.cur = _Line(indent) if nxt is not None else None


def _render(lines: list[_Line | None]) -> str:
    """The text of the lines; trailing comments of consecutive lines are aligned two spaces after the longest."""
    out: list[str] = []
    k = 0
    while k < len(lines):
        line = lines[k]
        if line is None:
            out.append("")
            k += 1
            continue
        if not line.text:
            out.append(" " * line.indent + line.comment)
            k += 1
            continue
        end = k
        while end < len(lines) and lines[end] is not None and lines[end].text and lines[end].comment is not None:
            end += 1
        if end == k:  # no trailing comment
            out.append(" " * line.indent + line.text)
            k += 1
            continue
        width = max(lines[j].indent + len(lines[j].text) for j in range(k, end))
        for j in range(k, end):
            code = " " * lines[j].indent + lines[j].text
            out.append(code.ljust(width + 2) + lines[j].comment)
        k = end
    return "".join(line + "\n" for line in out)


# -- the check of every result ----------------------------------------------------------------------------------

def _verify(before: list[Token], after: str, tree, path: str) -> None:
    """Raise FormatterBug unless `after` has the code tokens and comments of `before` (the tokens of the input, with
    comments), in order, and parses to the same tree."""
    diags: list[Diagnostic] = []

    def key(tokens: list[Token]) -> tuple[list[tuple[str, str]], list[str]]:
        code, comments = [], []
        for t in tokens:
            if t.kind == "comment":
                comments.append(t.text.rstrip(_COMMENT_TRAILING_WS))
            elif t.kind not in ("newline", "eof"):
                code.append((t.kind, t.text))
        return code, comments

    if key(before) != key(tokenize(after, path, diags, keep_comments=True)):
        raise FormatterBug(f"formatting {path} would change its tokens or comments")
    again = parse(after, path, diags)
    if diags or _tree_key(tree) != _tree_key(again):
        raise FormatterBug(f"formatting {path} would change its meaning")


def _tree_key(node) -> list:
    """A syntax tree flattened in pre-order, without source locations (iterative: no recursion to exhaust)."""
    out: list = []
    names: dict[type, tuple[str, ...]] = {}  # the field names of each node type, looked up once
    todo = [node]
    while todo:
        x = todo.pop()
        if isinstance(x, SourceLoc):
            out.append("@")
        elif is_dataclass(x):
            kind = type(x)
            if kind not in names:
                names[kind] = tuple(f.name for f in fields(x))
            out.append(kind.__name__)
            todo.extend(reversed([getattr(x, name) for name in names[kind]]))
        elif isinstance(x, (list, tuple)):
            out.append(("seq", len(x)))
            todo.extend(reversed(x))
        else:
            out.append((type(x).__name__, x))
    return out


# -- the command ------------------------------------------------------------------------------------------------

_EPILOG = """\
examples:
  graphconv fmt --diff messy.gc      # show the changes as a unified diff, write nothing
  graphconv fmt messy.gc             # rewrite in place, print the files that changed
  graphconv fmt --check specs/       # CI: exit 1 and print 'would reformat PATH' if any would change

exit status: 0 done (with --check: nothing to reformat); 1 a spec with errors, a file that cannot be read or
written, a folder without .gc files, or (with --check) a file to reformat; 2 a usage error"""


def add_parsers(sub: Any, common: argparse.ArgumentParser, sets: argparse.ArgumentParser) -> None:
    """Add the `fmt` subcommand."""
    p = sub.add_parser("fmt", parents=[common], help="rewrite specs in the canonical layout, keeping comments",
                       description="Rewrite specs in one canonical layout (indentation, spaces, blank lines; "
                                   "comments kept; UTF-8 without a byte-order mark, \\n line endings; the rules are "
                                   "in docs/spec-language.md, 'Formatting'). Files are rewritten in place; a spec "
                                   "with syntax errors is left as it is and its errors are printed; a read-only "
                                   "file is left as it is too (exit 1). A file with other hard links is rewritten in place, so the links "
                                   "keep sharing it. A folder stands for every .gc file under it; a folder without "
                                   "any is an error (exit 1), and links to files outside the folder, broken links "
                                   "and FIFOs or devices named *.gc are skipped with a note. '-' formats stdin to "
                                   "stdout.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or folders; '-' reads stdin, writes stdout")
    p.add_argument("--check", action="store_true",
                   help="change nothing; print 'would reformat PATH' and exit 1 if any file would change")
    p.add_argument("--diff", action="store_true", help="print a unified diff instead of rewriting the files")


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, for messages."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _skip_reason(file: str, root: str, shown_root: str) -> str | None:
    """Why a *.gc entry found in the folder `root` (its real path) is not formatted, or None to format it."""
    real = os.path.realpath(file)
    try:
        mode = os.stat(real).st_mode
    except OSError as e:
        return "it is a broken link" if os.path.islink(file) else f"cannot read it: {e.strerror or e}"
    try:
        inside = os.path.commonpath([root, real]) == root
    except ValueError:  # another drive
        inside = False
    if not inside:
        return f"it is a link to '{real}', outside '{shown_root}'"
    if not stat.S_ISREG(mode):
        return f"it is {_kind(mode)}, not a file"
    return None


def _expand(paths: list[str]) -> tuple[list[str], bool]:
    """The files to format, and whether every argument was usable. A folder becomes the .gc files under it (sorted);
    anything else stays as given. In a folder, a link to a file outside it, a broken link and a FIFO or device
    named *.gc are skipped with a note (never opened), and links to folders are not followed; a folder with no .gc
    file to format, or one that cannot be listed, is an error."""
    out: list[str] = []
    ok = True
    for path in paths:
        if path == "-" or not os.path.isdir(path):
            out.append(path)
            continue
        root = os.path.realpath(path)
        found: list[str] = []
        skipped = False

        def unreadable(e: OSError) -> None:
            nonlocal ok
            ok = False
            print(f"error: cannot read the folder '{e.filename}': {e.strerror or e}", file=sys.stderr)

        for folder, dirs, files in os.walk(path, onerror=unreadable):
            dirs.sort()
            for name in sorted(files):
                if not name.endswith(".gc"):
                    continue
                file = os.path.join(folder, name)
                why = _skip_reason(file, root, path)
                if why is None:
                    found.append(file)
                else:
                    skipped = True
                    print(f"note: skipping '{file}': {why}", file=sys.stderr)
        if not found:
            ok = False
            print(f"error: no .gc files {'to format ' if skipped else ''}under '{path}'", file=sys.stderr)
        out += found
    return out, ok


def _read_file(path: str, diags: list[Diagnostic]) -> bytes | None:
    """The bytes of a spec file (a link is followed), with the spec loader's size limit. Anything but a regular
    file is refused without being opened (opening a FIFO would wait for a writer)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode):
            diags.append(Diagnostic(None, f"'{path}' is not a file: it is {_kind(st.st_mode)}"))
            return None
        if st.st_size > MAX_FILE_BYTES:
            diags.append(Diagnostic(None, f"'{path}' is {st.st_size} bytes; specs are limited to {MAX_FILE_BYTES} "
                                          f"bytes"))
            return None
        # O_NONBLOCK: should it have become a FIFO since the stat, opening it does not wait
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                diags.append(Diagnostic(None, f"'{path}' is not a file: it is {_kind(mode)}"))
                return None
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        diags.append(Diagnostic(None, f"cannot read '{path}': {e.strerror or e}"))
        return None
    if len(data) > MAX_FILE_BYTES:  # it grew after the size check
        diags.append(Diagnostic(None, f"'{path}' is larger than {MAX_FILE_BYTES} bytes"))
        return None
    return data


def _read_spec(path: str) -> tuple[bytes | None, str | None, list[Diagnostic]]:
    """The bytes and the text of a spec file or of stdin ('-'), with the spec loader's limits (size, UTF-8)."""
    diags: list[Diagnostic] = []
    shown = "<stdin>" if path == "-" else path
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)  # None when replaced by a text stream (tests, embedding)
        data = stream.read(MAX_FILE_BYTES + 1) if stream is not None else sys.stdin.read(MAX_FILE_BYTES + 1).encode()
        if len(data) > MAX_FILE_BYTES:
            diags.append(Diagnostic(None, f"stdin has more than {MAX_FILE_BYTES} bytes; specs are limited to "
                                          f"{MAX_FILE_BYTES} bytes"))
            data = None
    else:
        data = _read_file(path, diags)
    text = None if data is None else _decode(data, shown, diags)
    for d in diags:
        if d.loc is None:
            d.loc = SourceLoc(shown, 1, 1)
    return data, text, diags


class _CannotWrite(Exception):
    """A file fmt will not or could not write; the message says why."""


def _write(path: str, data: bytes) -> None:
    """Give the file `path` (a link: its target) the contents `data`, or raise _CannotWrite (the file untouched,
    unless the message says otherwise).

    A read-only file (one the user may not write, or that has no write permission for anyone, which refuses root
    too) is refused: replacing it would need only the folder's permission. A file with one name is replaced at once
    (a complete temporary file renamed over it, with its permissions). A file with other hard links is rewritten in
    place, so that every name keeps showing the same file: the new contents first go to a temporary file next to it
    (flushed to disk, which proves they fit), then into the file itself; if that fails half-way, the temporary file
    is kept and named in the message."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        if not os.access(real, os.W_OK) or not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise _CannotWrite("it is read-only")
        if st.st_nlink > 1:
            _write_in_place(real, data)
        else:
            mode = stat.S_IMODE(st.st_mode)
            with replacing(real, before_rename=lambda tmp: os.chmod(tmp, mode)) as fh:
                fh.write(data)
    except OSError as e:
        raise _CannotWrite(e.strerror or str(e)) from e


def _write_in_place(real: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.", suffix=".tmp", dir=os.path.dirname(real))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fh = open(real, "r+b")
    except BaseException:
        os.unlink(tmp)
        raise
    try:
        with fh:
            fh.write(data)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        raise _CannotWrite(f"{e.strerror or e}; its formatted text is in '{tmp}'") from e
    os.unlink(tmp)


def _unified_diff(path: str, before: str, after: str) -> str:
    diff = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                fromfile=path, tofile=path)
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in diff)


def cmd_fmt(args: argparse.Namespace) -> int:
    """`graphconv fmt`: 0 when done (or, with --check, when nothing would change), 1 when a spec has errors, cannot
    be read or written, a folder holds no spec, or --check found a file to reformat."""
    files, ok = _expand(args.specs)
    failed, would_change = not ok, False
    for path in files:
        shown = "<stdin>" if path == "-" else path
        data, text, diags = _read_spec(path)
        if text is None:
            print(SpecError(diags, {}).render(), file=sys.stderr)
            failed = True
            continue
        try:
            new = format_spec(text, shown)
        except SpecError as e:
            print(e.render(), file=sys.stderr)
            failed = True
            continue
        encoded = new.encode("utf-8")
        changed = encoded != data  # the bytes, not the decoded text: a byte-order mark or \r\n is a change too
        if args.diff and changed:
            sys.stdout.write(_unified_diff(shown, data.decode("utf-8"), new))
        if args.check:
            if changed:
                would_change = True
                if not args.diff:
                    print(f"would reformat {shown}")
        elif args.diff:
            pass
        elif path == "-":
            sys.stdout.write(new)
        elif changed:
            try:
                _write(path, encoded)
            except _CannotWrite as e:
                print(f"error: cannot write '{path}': {e}", file=sys.stderr)
                failed = True
                continue
            print(f"reformatted {path}")
    return 1 if failed or would_change else 0


VERBS = {"fmt": cmd_fmt}
