"""The exact text of rendered spec errors: `path:line:col: error: message`, the source line, a caret under the
offending text, notes at the block call sites that led there, the hint, and the count."""

from __future__ import annotations

import textwrap

import pytest

from graphconv.errors import Diagnostic, SourceLoc, SpecError
from graphconv.spec import load_graph_text


def rendered(text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_graph_text(text, "net.gc")
    assert str(info.value) == info.value.render()
    return str(info.value)


def test_two_errors_with_hints_and_block_call_notes():
    spec = textwrap.dedent("""\
        network n {
          input image: f32[N, 3, 8, 8]
          y = image -> outer as o
          z = imgae -> relu
          output y, z
        }
        block outer(x) {
          return x -> inner(4)
        }
        block inner(x, c) {
          return x -> conv2d(c, 1) as conv -> relu -> conv2d(c, 1) as conv
        }
        """)
    assert rendered(spec) == textwrap.dedent("""\
        net.gc:4:7: error: undefined name 'imgae'
            z = imgae -> relu
                ^~~~~
          hint: did you mean 'image'?
        net.gc:11:63: error: layer name 'conv' is already used
            return x -> conv2d(c, 1) as conv -> relu -> conv2d(c, 1) as conv
                                                                        ^~~~
        net.gc:8:15: note: in block 'inner' called here
            return x -> inner(4)
                        ^~~~~
        net.gc:3:16: note: in block 'outer' called here
            y = image -> outer as o
                         ^~~~~
          hint: layer names are unique within a block
        2 errors found""")


def test_a_caret_spans_the_whole_call_when_an_op_rejects_its_input():
    spec = "network n {\n  input x: f32[N, 3, 8, 8]\n  y = x -> dense(10)\n  output y\n}\n"
    assert rendered(spec) == (
        "net.gc:3:12: error: dense expects a rank-2 input [N, features], got f32[N, 3, 8, 8]\n"
        "    y = x -> dense(10)\n"
        "             ^~~~~~~~~\n"
        "  hint: insert flatten before dense\n"
        "1 error found")


def test_tabs_count_as_one_column_and_the_caret_stays_aligned():
    spec = "network n {\n\tinput x: f32[N, 3, 8, 8]\n\ty = x\t-> relu(alpha=1)\n\toutput y\n}\n"
    assert rendered(spec) == (
        "net.gc:3:16: error: 'relu' has no attribute 'alpha'\n"
        "   y = x -> relu(alpha=1)\n"
        "                 ^~~~~\n"
        "  hint: its attributes: none\n"
        "1 error found")


def test_a_long_line_is_shown_around_the_error():
    spec = ("network n {\n  input x: f32[N, 3, 8, 8]\n  y = x" + " -> relu" * 40 + " -> conv2d(8, 3, strid=2)\n"
            "  output y\n}\n")
    text = rendered(spec)
    lines = text.splitlines()
    assert lines[0] == "net.gc:3:345: error: 'conv2d' has no attribute 'strid'"
    assert lines[1] == "  ..." + ("  y = x" + " -> relu" * 40 + " -> conv2d(8, 3, strid=2)")[265:]
    assert lines[2] == " " * 84 + "^~~~~"
    assert lines[1][lines[2].index("^"):].startswith("strid=2")
    assert lines[3:] == ["  hint: did you mean 'stride'?", "1 error found"]


def test_an_error_in_an_included_file_shows_that_file(tmp_path):
    (tmp_path / "lib.gc").write_text("block b(x) {\n  return x -> relu(3)\n}\n")
    spec = 'include "lib.gc"\nnetwork n {\n  input x: f32[N, 3, 8, 8]\n  y = x -> b\n  output y\n}\n'
    with pytest.raises(SpecError) as info:
        load_graph_text(spec, "net.gc", root=str(tmp_path))
    assert str(info.value) == (
        "lib.gc:2:20: error: 'relu' takes no attributes\n"
        "    return x -> relu(3)\n"
        "                     ^\n"
        "net.gc:4:12: note: in block 'b' called here\n"
        "    y = x -> b\n"
        "             ^\n"
        "1 error found")


def test_diagnostics_without_source_or_location():
    d = Diagnostic(SourceLoc("gone.gc", 3, 5, 2), "something", hint="fix it")
    assert SpecError([d]).render() == "gone.gc:3:5: error: something\n  hint: fix it\n1 error found"
    assert Diagnostic(None, "no place").render() == "error: no place"
    # a location past the end of its line is clamped to a single caret
    d = Diagnostic(SourceLoc("a.gc", 1, 4, 50), "too long")
    assert d.render({"a.gc": "abc\n"}) == "a.gc:1:4: error: too long\n  abc\n     ^"
