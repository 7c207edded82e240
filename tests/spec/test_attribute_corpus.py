"""Malformed specs, one class at a time (issue 8): every attribute of every op the spec language offers, given a
value of the wrong type, sign or rank, is a located error at that argument that names the attribute (and no other
exception escapes). The cases come from the op registry, so a new op or attribute is covered the day it is added."""

from __future__ import annotations

import pytest

from graphconv.errors import SpecError
from graphconv.ops import REGISTRY
from graphconv.spec import load_graph_text
from graphconv.spec.names import spec_ops

# wrong values per kind of attribute: another type, a bad sign, a list of the wrong length
BAD = {"Int": ['"a"', "1.5", "true", "[1, 2]"], "Float": ['"a"', "[1.0]", "true"], "Bool": ["2", '"yes"'],
       "Enum": ['"nope"', "3"], "Ints": ["[1, 2, 3, 4, 5]", '"x"', "0.5", "-1"], "IntList": ['"x"', "1.5"],
       "Padding": ['"wide"', "[1, 2, 3]", "-1"], "Pads": ['"wide"', "[1, 2, 3]", "-1"], "InitKind": ["3", '"nope"'],
       "TensorLiteral": ['"x"'], "OneOf": ['"x"']}
# valid values of the attributes an op requires, so that the wrong one is the only problem
REQUIRED = {"kernel": "2", "pads": "1", "shape": "[-1]", "perm": "[0, 1, 2, 3]", "reduce": "max"}


def _cases():
    for op in sorted(spec_ops()):
        for attr in REGISTRY[op].attrs:
            for bad in BAD.get(type(attr.kind).__name__, []):
                yield op, attr.name, bad


CASES = list(_cases())


def test_the_corpus_is_large():
    assert len(CASES) >= 250


@pytest.mark.parametrize("op, attr, bad", CASES)
def test_a_wrong_attribute_value_is_located_at_its_argument(op, attr, bad):
    required = [f"{a.name}={REQUIRED[a.name]}" for a in REGISTRY[op].attrs if a.required and a.name != attr]
    args = ", ".join(required + [f"{attr}={bad}"])
    call = f"{op}(x, x, {args})" if op in ("concat", "add", "sub", "mul", "div") else f"x -> {op}({args})"
    line = f"  y = {call}"
    text = "network t() {\n  input x: f32[N, 8, 16, 16]\n" + line + "\n  output y\n}\n"
    with pytest.raises(SpecError) as info:
        load_graph_text(text, "t.gc")
    at = [d for d in info.value.diagnostics if d.loc is not None and d.loc.line == 3 and attr in d.message]
    assert at, [f"{d.loc}: {d.message}" for d in info.value.diagnostics]
    assert at[0].loc.col == line.index(f"{attr}=") + 1 or at[0].loc.col == line.index(bad, line.index(f"{attr}=")) + 1
