"""Tokens of the spec language.

Newlines end statements. The parser ignores them inside ( ) and [ ], where a long call or list may span lines, and
before a line that starts with `->`, which continues the chain on the line before. Comments
run from `#` to the end of the line; the parser never sees them, the formatter (fmt.py) asks for them with
`keep_comments=True`. Problems (stray characters, unterminated strings) are reported and skipped so one pass finds
them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import MAX_ERRORS, Diagnostic, SourceLoc

KEYWORDS = {
    "network", "block", "input", "output", "return", "if", "else", "repeat", "include", "let", "and", "or", "not",
    "true", "false", "as",
}

_TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\r\f]+)
  | (?P<comment>\#[^\n]*)
  | (?P<newline>\n)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<punct>->|==|!=|<=|>=|//|[()\[\]{},:=<>+\-*/%])
""", re.VERBOSE)

MAX_INT = 1 << 62  # integer literals; computed integers obey the same limit (lower.py)

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}


@dataclass(frozen=True)
class Token:
    kind: str  # "ident" | "keyword" | "int" | "float" | "string" | "punct" | "newline" | "comment" | "eof"
    text: str
    loc: SourceLoc
    value: object = None


def tokenize(text: str, path: str, diags: list[Diagnostic], *, keep_comments: bool = False) -> list[Token]:
    """The tokens of `text`, ending with a newline and an "eof" token; problems are appended to `diags`.
    `keep_comments=True` adds a "comment" token (its text from `#` to the end of the line) for each comment."""
    tokens: list[Token] = []
    line, line_start, pos = 1, 0, 0
    n = len(text)
    while pos < n and len(diags) <= MAX_ERRORS:
        m = _TOKEN_RE.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            ch = text[pos]
            if ch == '"':
                end = text.find("\n", pos)
                end = n if end < 0 else end
                diags.append(Diagnostic(SourceLoc(path, line, col, end - pos), "unterminated string",
                                        hint='strings end with " on the same line'))
                pos = end
                continue
            shown = repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"
            diags.append(Diagnostic(SourceLoc(path, line, col), f"unexpected character {shown}"))
            pos += 1
            continue
        kind = m.lastgroup
        s = m.group()
        loc = SourceLoc(path, line, col, max(1, len(s)))
        if kind == "newline":
            tokens.append(Token("newline", "\\n", loc))
            line += 1
            line_start = m.end()
        elif kind == "number":
            if s.isdigit():
                # compare digits before converting: int() of a huge literal is slow, and refused past 4300 digits
                value = int(s) if len(s) <= 19 else MAX_INT + 1
                if value > MAX_INT:
                    diags.append(Diagnostic(loc, "integer literal too large (the limit is 2**62)"))
                    value = 0
                tokens.append(Token("int", s, loc, value))
            else:
                value = float(s)
                if value == float("inf"):
                    diags.append(Diagnostic(loc, "number literal too large"))
                    value = 0.0
                tokens.append(Token("float", s, loc, value))
        elif kind == "ident":
            tokens.append(Token("keyword" if s in KEYWORDS else "ident", s, loc, s))
        elif kind == "string":
            body = s[1:-1]
            value, bad = _unescape(body)
            if bad is not None:
                diags.append(Diagnostic(SourceLoc(path, line, col + 1 + bad, 2),
                                        f"unknown escape '\\{body[bad + 1]}' in string",
                                        hint='escapes: \\n \\t \\\\ \\"'))
            tokens.append(Token("string", s, loc, value))
        elif kind == "punct":
            tokens.append(Token("punct", s, loc))
        elif kind == "comment" and keep_comments:
            tokens.append(Token("comment", s, loc))
        pos = m.end()
    tokens.append(Token("newline", "\\n", SourceLoc(path, line, pos - line_start + 1)))
    tokens.append(Token("eof", "end of file", SourceLoc(path, line, pos - line_start + 1)))
    return tokens


def _unescape(body: str) -> tuple[str, int | None]:
    out, i, bad = [], 0, None
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            rep = _ESCAPES.get(body[i + 1])
            if rep is None and bad is None:
                bad = i
            out.append(rep if rep is not None else body[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out), bad
