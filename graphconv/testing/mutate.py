"""Malformed specs made from valid ones: one token deleted, doubled or replaced by a hostile one.

    for what, text in mutations(spec_text, "resnet18.gc", seed=0, places=80): ...   # places=None: every token

Used by tests/spec/test_mutations.py (a seeded sample) and `tools/fuzz.py --mutations` (every token of every zoo
spec): each mutated spec must load, or fail with located SpecErrors within 2 s, and never raise anything else.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..spec.lexer import tokenize

__all__ = ["mutations", "KINDS", "HOSTILE"]

KINDS = ("delete", "double", "replace")
HOSTILE = ("->", "(", ")", "{", "}", "[", "]", "=", ",", ":", "as", "network", "block", "repeat", "if", "else",
           "return", "output", "input", "include", "-1", "0", "1e400", "4611686018427387904", "99999999999999999999",
           "0.5", '"text"', "relu", "conv2d", "x", "N", "f32", "not", "//", "%", "\n", "#")


def mutations(text: str, path: str, *, seed: int = 0, places: int | None = None) -> Iterator[tuple[str, str]]:
    """(description, mutated text) for `places` seeded token positions per kind (every position when None)."""
    starts = np.cumsum([0] + [len(line) for line in text.splitlines(keepends=True)])
    tokens = [t for t in tokenize(text, path, []) if t.kind not in ("newline", "eof")]
    spans = [(int(starts[t.loc.line - 1]) + t.loc.col - 1, len(t.text)) for t in tokens]
    rng = np.random.default_rng(seed)
    for kind in KINDS:
        chosen = range(len(spans)) if places is None else rng.choice(len(spans), min(places, len(spans)),
                                                                     replace=False)
        for i in chosen:
            at, n = spans[int(i)]
            token = text[at:at + n]
            new = {"delete": "", "double": f"{token} {token}",
                   "replace": HOSTILE[int(rng.integers(len(HOSTILE)))]}[kind]
            yield f"{path}: {kind} {token!r} at offset {at}", text[:at] + new + text[at + n:]
