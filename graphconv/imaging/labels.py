"""Class names for a classifier's outputs, read from a labels file.

Three formats:
- a JSON list: ["tench", "goldfish", ...].
- a JSON object keyed by class index, its values a name or a list ending with the name, as Keras' and PyTorch's
  `imagenet_class_index.json`: {"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], ...}; the keys must be
  exactly 0..K-1, written in decimal digits, each class once ("0" and "00" together are refused, as is a key
  repeated).
- text: one label per line, line k naming class k (the format of most `classes.txt` / `synset_words.txt` files).
  Lines end at "\n" only (a "\r" before it is dropped), so a form feed or U+2028 inside a label stays in it;
  surrounding white space is stripped, trailing empty lines are ignored, an empty line inside is an error.

A file whose whole text is a JSON list or object is JSON. Any other file is text, unless it looks like JSON that
failed to parse: its first character (white space aside) is "[" or "{" followed by a JSON value's opening
(white space or the end of the line, a quote, a bracket or a brace), as in `["tench",` or `{"0":`. Then it is an
error at the line and column where the JSON breaks, not a labels file read line by line. So a text file whose first
label is `[background]` or `{unknown}` is text.

Labels are strings from a file: `printable` escapes the control characters in one before it is printed to a
terminal.
"""

from __future__ import annotations

import json
import os
import unicodedata
from typing import Any

from ..errors import GraphconvError
from ..files import read_bounded

__all__ = ["LabelsError", "read_labels", "check_labels", "printable", "MAX_LABELS_BYTES"]

MAX_LABELS_BYTES = 16 << 20


class LabelsError(GraphconvError):
    """A labels file that cannot be read or does not fit the network's classes."""


def read_labels(path: str | os.PathLike) -> list[str]:
    """The class names in the labels file at `path` (see the module docstring). Raises LabelsError."""
    path = os.fspath(path)
    raw = read_bounded(path, MAX_LABELS_BYTES, "labels", LabelsError)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LabelsError(f"labels '{path}' is not UTF-8 text (byte {e.start})") from None
    labels = _from_json(text, path) if _json_like(text) else _from_lines(text, path)
    if not labels:
        raise LabelsError(f"labels '{path}' holds no labels")
    return labels


_JSON_STARTS = " \t\r\n\"[]{}"  # what may follow the "[" or "{" opening a JSON list or object of names


def _json_like(text: str) -> bool:
    """Whether `text` is (or looks like) a JSON list or object rather than lines of labels: see the module
    docstring."""
    body = text.lstrip(" \t\r\n")
    if body[:1] not in ("[", "{"):
        return False
    if body[1:2] == "" or body[1:2] in _JSON_STARTS:
        return True
    try:
        return isinstance(json.loads(text), (list, dict))  # e.g. [1, 2]: valid JSON all the same
    except (ValueError, RecursionError):
        return False


def _from_lines(text: str, path: str) -> list[str]:
    lines = [line.removesuffix("\r").strip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    for i, line in enumerate(lines):
        if not line:
            raise LabelsError(f"labels '{path}' line {i + 1} is empty (one label per line, line k naming class "
                              f"k-1)")
    return lines


def _name(value: Any, where: str, path: str) -> str:
    if isinstance(value, list) and value:
        value = value[-1]  # ["n01440764", "tench"]: the readable name comes last
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise LabelsError(f"labels '{path}': {where} is not a name (a string, or a list ending with one)")


class _RepeatedKey(ValueError):
    pass


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook: a dict, refusing a key given twice (json keeps the last one silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def _from_json(text: str, path: str) -> list[str]:
    try:
        data = json.loads(text, object_pairs_hook=_no_repeated_keys)
    except _RepeatedKey as e:
        raise LabelsError(f"labels '{path}': key {e.args[0]!r} is given twice") from None
    except (json.JSONDecodeError, RecursionError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise LabelsError(f"labels '{path}' is not valid JSON{where}") from None
    if isinstance(data, list):
        return [_name(v, f"entry {i}", path) for i, v in enumerate(data)]
    if not isinstance(data, dict):
        raise LabelsError(f"labels '{path}': expected a JSON list or an object keyed by class index")
    by_index: dict[int, str] = {}
    keys: dict[int, str] = {}
    for key, value in data.items():
        if not (key.isascii() and key.isdigit()):  # int() would also take " 1", "+1", "1_0" and other digits
            raise LabelsError(f"labels '{path}': key {key!r} is not a class index (0, 1, 2, ...)")
        k = int(key)
        if k in keys:
            raise LabelsError(f"labels '{path}': keys {keys[k]!r} and {key!r} both name class {k}")
        keys[k] = key
        by_index[k] = _name(value, f"class {key}", path)
    if sorted(by_index) != list(range(len(by_index))):
        missing = sorted(set(range(len(by_index))) - set(by_index))
        raise LabelsError(f"labels '{path}': the keys must be the class indices 0..{len(by_index) - 1}"
                          + (f"; {missing[0]} is missing" if missing else ""))
    return [by_index[k] for k in range(len(by_index))]


def check_labels(labels: list[str], classes: int, path: str, output: str) -> None:
    """Raise LabelsError unless there is exactly one label per class of the output named `output`."""
    if len(labels) != classes:
        raise LabelsError(f"labels '{path}' has {len(labels):,} labels, but output '{output}' has {classes:,} "
                          f"classes (one label per class, in class order)")


_ESCAPED = ("Cc", "Cf", "Zl", "Zp", "Cs")  # Unicode categories printable() escapes
_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text: str) -> str:
    """`text` with every control or format character (Unicode categories Cc and Cf: terminal escapes, bidi
    overrides, zero-width characters), line or paragraph separator (Zl, Zp) and lone surrogate (Cs, which cannot be
    encoded) written as a visible escape like repr's: "\\x1b", "\\t", "\\u202e". For printing a label or a file
    name to a terminal."""
    if text.isprintable():  # the common case; isprintable is False for every character escaped here (and a few kept)
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) in _ESCAPED:
            code = ord(ch)
            out.append(_ESCAPES.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
                                            if code < 0x10000 else f"\\U{code:08x}"))
        else:
            out.append(ch)
    return "".join(out)
