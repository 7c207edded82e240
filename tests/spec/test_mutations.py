"""Malformed specs made by mutating valid ones (issue 8): every zoo spec below, with one token deleted, doubled or
replaced by a hostile one at seeded places, either still loads or fails with located SpecErrors, quickly, and never
with another exception (RecursionError, OverflowError, IndexError, ...). The hand-written corpus (tests/spec/corpus)
checks each error's exact message; this checks that nothing escapes."""

from __future__ import annotations

import time
from pathlib import Path

from graphconv.errors import SpecError
from graphconv.spec import load_graph_text
from graphconv.testing.mutate import KINDS, mutations

ROOT = Path(__file__).resolve().parents[2]
SPECS = ["lenet5", "alexnet", "resnet18", "mobilenet_v2", "googlenet"]
PLACES = 80  # per spec and kind of mutation (tools/fuzz.py --mutations: every token)


def _mutations(name: str):
    text = (ROOT / "specs" / f"{name}.gc").read_text()
    return mutations(text, f"{name}.gc", seed=len(name), places=PLACES)


def test_mutated_specs_load_or_fail_with_located_errors():
    cases = errors = 0
    for spec in SPECS:
        for what, text in _mutations(spec):
            cases += 1
            t0 = time.perf_counter()
            try:
                load_graph_text(text, f"{spec}.gc")
            except SpecError as e:
                errors += 1
                assert e.diagnostics, what
                n_lines = text.count("\n") + 1
                for d in e.diagnostics:
                    assert d.loc is not None and 1 <= d.loc.line <= n_lines and d.loc.col >= 1, (what, d.message)
            except Exception as e:  # noqa: BLE001 - the point of the test
                raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e
            assert time.perf_counter() - t0 < 2.0, f"{what}: took more than 2 s"
    assert cases == len(SPECS) * len(KINDS) * PLACES
    assert errors > cases // 2  # most mutations break a spec: the test exercises the error paths
