"""Malformed specs: every one is reported as located diagnostics, never as another exception.

The corpus is tests/spec/corpus/*.gc, one mistake per file (its first line says which); corpus/expected.txt gives
the place and message of the first diagnostic of each. Inputs that are awkward as files (deep nesting, invalid
UTF-8, oversized files, include tricks) are generated here in tmp_path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from graphconv import cli
from graphconv.errors import MAX_ERRORS, SpecError
from graphconv.spec import MAX_FILE_BYTES, check_spec, check_text, load_graph

CORPUS = Path(__file__).resolve().parent / "corpus"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Expected:
    file: str
    path: str  # where the first error is: the file itself or an included file
    line: int
    col: int
    messages: tuple[str, ...]  # one of these is in the message
    hint: str | None
    xfail: str | None  # a known bug: the test must fail until it is fixed
    crash: bool  # the known bug is an exception other than SpecError

    def __str__(self) -> str:
        return self.file


def _read_expected() -> list[Expected]:
    out = []
    for raw in (CORPUS / "expected.txt").read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        fields = [f.strip() for f in raw.split(" | ")]
        file, where, message, *rest = fields
        *path, line, col = where.split(":")
        hint = xfail = None
        crash = False
        for extra in rest:
            key, _, value = extra.partition(": ")
            if key == "hint":
                hint = value
            elif key in ("xfail", "crash"):
                xfail, crash = value, key == "crash"
            else:
                raise ValueError(f"expected.txt: unknown field {extra!r} in {raw!r}")
        out.append(Expected(file, path[0] if path else file, int(line), int(col), tuple(message.split(" OR ")),
                            hint, xfail, crash))
    return out


EXPECTED = _read_expected()
BY_FILE = {e.file: e for e in EXPECTED}


def _param(e: Expected, *, only_crash: bool = False):
    if e.xfail and (e.crash or not only_crash):
        return pytest.param(e, id=e.file, marks=pytest.mark.xfail(strict=True, reason=e.xfail))
    return pytest.param(e, id=e.file)


@pytest.fixture
def in_corpus(monkeypatch):
    monkeypatch.chdir(CORPUS)


def _check(name: str):
    t = time.perf_counter()
    graph, diags, sources = check_spec(name)
    elapsed = time.perf_counter() - t
    assert elapsed < 2.0, f"{name} took {elapsed:.1f} s"
    return graph, diags, sources


# -- the table itself -----------------------------------------------------------------------------------------------

def test_every_corpus_file_has_an_expectation_and_a_comment():
    files = sorted(p.name for p in CORPUS.glob("*.gc"))
    assert len(files) >= 80
    assert sorted(BY_FILE) == files, "corpus/*.gc and corpus/expected.txt disagree"
    assert len(EXPECTED) == len(BY_FILE), "a file is listed twice in expected.txt"
    for name in files:
        first = (CORPUS / name).read_text(encoding="utf-8").split("\n", 1)[0]
        assert first.startswith("# ") and len(first) > 10, f"{name}: the first line should say what is wrong"


# -- each file -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("e", [_param(e) for e in EXPECTED])
def test_first_diagnostic(e: Expected, in_corpus):
    graph, diags, sources = _check(e.file)
    assert graph is None
    assert diags, "no diagnostic"
    first = diags[0]
    got = f"{first.loc.path}:{first.loc.line}:{first.loc.col}: {first.message} (hint: {first.hint})"
    assert (first.loc.path, first.loc.line, first.loc.col) == (e.path, e.line, e.col), got
    assert any(m in first.message for m in e.messages), got
    if e.hint is not None:
        assert first.hint is not None and e.hint in first.hint, got


@pytest.mark.parametrize("e", [_param(e, only_crash=True) for e in EXPECTED])
def test_every_diagnostic_is_located_and_in_source_order(e: Expected, in_corpus):
    graph, diags, sources = _check(e.file)
    assert diags
    order = list(sources)
    keys = []
    for d in diags:
        assert d.loc is not None, d.message
        assert d.loc.line >= 1 and d.loc.col >= 1 and d.loc.length >= 1, d
        assert d.loc.path == e.file or d.loc.path in sources, d
        if d.loc.path in sources:
            assert d.loc.line <= max(1, len(sources[d.loc.path].splitlines()) + 1), d
        for loc, _ in d.notes:
            assert loc is not None and loc.line >= 1 and loc.col >= 1
        keys.append((order.index(d.loc.path) if d.loc.path in order else -1, d.loc.line, d.loc.col))
    assert keys == sorted(keys)


@pytest.mark.parametrize("e", [_param(e, only_crash=True) for e in EXPECTED])
def test_load_graph_raises_only_spec_error(e: Expected, in_corpus):
    with pytest.raises(SpecError) as info:
        load_graph(e.file)
    text = str(info.value)
    assert re.match(rf"{re.escape(e.path)}:{e.line}:{e.col}: error: ", text) or e.xfail, text
    assert text.rstrip().endswith("found")  # "1 error found", "3 errors found"


# -- several errors in one file ----------------------------------------------------------------------------------

def _locs(diags) -> list[str]:
    return [f"{d.loc.line}:{d.loc.col}" for d in diags]


def test_several_errors_are_all_reported_in_source_order(in_corpus):
    _, diags, _ = _check("multi_three_errors.gc")
    assert _locs(diags) == ["4:25", "5:12", "6:17"]
    assert [d.hint for d in diags[:2]] == ["did you mean 'stride'?", "did you mean 'batchnorm'?"]
    assert diags[2].message == "unexpected character '$'"


def test_a_syntax_error_does_not_hide_errors_in_other_blocks(in_corpus):
    _, diags, _ = _check("multi_syntax_and_names.gc")
    assert _locs(diags) == ["9:1", "11:10"]
    assert diags[1].message == "undefined name 'xx'" and diags[1].hint == "did you mean 'x'?"


def test_the_definition_after_an_unclosed_brace_is_still_checked(in_corpus):
    _, diags, _ = _check("syntax_unclosed_brace_drops_next_block.gc")
    assert [d.message for d in diags] == ["this '{' is never closed before the next definition",
                                          "undefined name 'xx'"]


def test_a_block_error_has_a_note_at_the_call_site(in_corpus):
    _, (d,), _ = _check("block_error_in_block_body.gc")
    assert [(str(loc), text) for loc, text in d.notes] == [
        ("block_error_in_block_body.gc:4:12", "in block 'b' called here")]


def test_duplicates_point_at_the_first_definition(in_corpus):
    for name, note in [("dup_value.gc", "4:3"), ("dup_block.gc", "6:7"), ("dup_param.gc", "6:12"),
                       ("dup_let.gc", "2:1"), ("dup_keyword_arg.gc", "4:25"), ("dup_network.gc", "2:9")]:
        _, diags, _ = _check(name)
        assert [f"{loc.line}:{loc.col}" for loc, _ in diags[0].notes] == [note], name


# -- the command line -------------------------------------------------------------------------------------------------

CLI_SAMPLE = [
    "syntax_unclosed_paren.gc", "syntax_stray_unicode.gc", "syntax_bad_escape.gc", "name_undefined_hint.gc",
    "unknown_op_hint.gc", "attr_negative_stride.gc", "shape_add_mismatch.gc", "block_recursion_mutual.gc",
    "include_cycle.gc", "eval_repeat_huge.gc", "multi_three_errors.gc",
]


@pytest.mark.parametrize("e", EXPECTED, ids=lambda e: e.file)
def test_cli_check_exits_1_with_the_located_error(e: Expected, in_corpus, capsys):
    """Every corpus file through `graphconv check` (in-process): exit 1, the first error at its place, no
    traceback."""
    assert cli.main(["check", e.file]) == 1
    err = capsys.readouterr().err
    assert f"{e.path}:{e.line}:{e.col}: error: " in err
    assert "Traceback" not in err


def test_cli_check_reports_errors_without_traceback():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = {name: subprocess.Popen([sys.executable, "-m", "graphconv.cli", "check", name], cwd=CORPUS, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in CLI_SAMPLE}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        e = BY_FILE[name]
        assert proc.returncode == 1, (name, out, err)
        assert "Traceback" not in out + err, (name, err)
        assert re.search(rf"^{re.escape(e.path)}:{e.line}:{e.col}: error: ", err, re.M), (name, err)
        assert re.search(r"^\d+ errors? found$", err, re.M), (name, err)


# -- generated inputs -------------------------------------------------------------------------------------------------

NET_HEAD = "network n {\n  input x: f32[N, 3, 8, 8]\n"


def _write(tmp_path: Path, name: str, data: bytes | str) -> str:
    p = tmp_path / name
    if isinstance(data, str):
        data = data.encode("utf-8")
    p.write_bytes(data)
    return str(p)


def _first(path: str, **kw):
    graph, diags, sources = check_spec(path, **kw)
    assert graph is None and diags
    with pytest.raises(SpecError):
        load_graph(path, **kw)
    return diags[0]


@pytest.mark.parametrize("opening, closing, what", [
    ("(", ")", "parentheses"), ("[", "]", "lists"), ("-", "", "unary minus"), ("not ", "", "not"),
])
def test_nesting_ten_thousand_deep_is_refused(tmp_path, opening, closing, what):
    value = opening * 10_000 + ("true" if what == "not" else "1") + closing * 10_000
    path = _write(tmp_path, "deep.gc", NET_HEAD + f"  let c = {value}\n  output x\n}}\n")
    d = _first(path)
    assert "nesting is too deep" in d.message
    assert d.loc.line == 3 and 11 <= d.loc.col <= 11 + 10_000 * len(opening)


def test_ten_thousand_nested_ifs_and_repeats_are_refused(tmp_path):
    path = _write(tmp_path, "ifs.gc", NET_HEAD + "  " + "if true {\n" * 10_000 + "}\n" * 10_000 + "  output x\n}\n")
    assert "nesting is too deep" in _first(path).message
    path = _write(tmp_path, "rep.gc", NET_HEAD + "  y = x -> " + "repeat 1 { " * 10_000 + "relu" + " }" * 10_000
                  + "\n  output y\n}\n")
    assert "nesting is too deep" in _first(path).message


def test_a_long_chain_of_operators(tmp_path):
    path = _write(tmp_path, "ops.gc", NET_HEAD + "  let c = " + " + ".join(["1"] * 5000) + "\n  output x\n}\n")
    graph, diags, _ = check_spec(path)
    # every operator deepens the expression tree, so a long chain counts toward the nesting limit
    assert graph is None and diags[0].loc.line == 3 and "nesting is too deep" in diags[0].message


def test_invalid_utf8_is_located_at_the_bad_byte(tmp_path):
    path = _write(tmp_path, "latin1.gc", NET_HEAD.encode() + b"  y = x -> relu  # caf\xe9\n  output y\n}\n")
    d = _first(path)
    assert "not valid UTF-8 (byte 0xe9)" in d.message and d.hint == "save the spec as UTF-8"
    assert (d.loc.path, d.loc.line, d.loc.col) == (path, 3, 23)
    d = _first(_write(tmp_path, "utf16.gc", "network n {}\n".encode("utf-16")))
    assert "not valid UTF-8" in d.message and (d.loc.line, d.loc.col) == (1, 1)


def test_invalid_utf8_in_an_included_file_is_located_in_that_file(tmp_path):
    _write(tmp_path, "lib.gc", b"let A = 1\nlet B = \"\xff\"\n")
    path = _write(tmp_path, "main.gc", 'include "lib.gc"\n' + NET_HEAD + "  output x\n}\n")
    d = _first(path)
    assert "not valid UTF-8 (byte 0xff)" in d.message
    assert (d.loc.path, d.loc.line, d.loc.col) == (str(tmp_path / "lib.gc"), 2, 10)


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    path = _write(tmp_path, "big.gc", b"# big\n" + b"#" * MAX_FILE_BYTES + b"\n")
    d = _first(path)
    assert f"limited to {MAX_FILE_BYTES} bytes" in d.message and (d.loc.line, d.loc.col) == (1, 1)


def test_a_file_of_exactly_the_size_limit_is_read(tmp_path):
    text = (NET_HEAD + "  output x\n}\n").ljust(MAX_FILE_BYTES, " ")
    path = _write(tmp_path, "exact.gc", text)
    assert load_graph(path).outputs


def test_an_included_file_over_the_size_limit_is_located_at_the_include(tmp_path):
    _write(tmp_path, "big.gc", b"#" * (MAX_FILE_BYTES + 1))
    path = _write(tmp_path, "main.gc", 'include "big.gc"\n' + NET_HEAD + "  output x\n}\n")
    d = _first(path)
    assert "limited to" in d.message and (d.loc.path, d.loc.line, d.loc.col) == (path, 1, 9)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"# only a comment\n"])
def test_an_empty_file_defines_no_network(tmp_path, content):
    path = _write(tmp_path, "empty.gc", content)
    d = _first(path)
    assert "defines no network" in d.message and (d.loc.path, d.loc.line, d.loc.col) == (path, 1, 1)


def test_a_missing_file_and_a_folder_are_located_errors(tmp_path):
    d = _first(str(tmp_path / "nope.gc"))
    assert "cannot read" in d.message and (d.loc.line, d.loc.col) == (1, 1)
    (tmp_path / "dir.gc").mkdir()
    d = _first(str(tmp_path / "dir.gc"))
    assert "is not a file" in d.message and (d.loc.line, d.loc.col) == (1, 1)


def test_an_include_through_a_symlink_leaving_the_folder_is_refused(tmp_path):
    outside = tmp_path / "outside"
    project = tmp_path / "project"
    outside.mkdir()
    project.mkdir()
    (outside / "secret.gc").write_text("let S = 1\n")
    (project / "link.gc").symlink_to(outside / "secret.gc")
    path = _write(project, "main.gc", 'include "link.gc"\n' + NET_HEAD + "  output x\n}\n")
    d = _first(path)
    assert "points outside the project folder" in d.message and (d.loc.line, d.loc.col) == (1, 9)


def test_absolute_include_paths_are_refused(tmp_path):
    path = _write(tmp_path, "main.gc", 'include "/etc/hostname"\n' + NET_HEAD + "  output x\n}\n")
    assert "points outside the project folder" in _first(path).message


def test_includes_nested_too_deep_are_refused(tmp_path):
    for i in range(30):
        _write(tmp_path, f"f{i}.gc", f'include "f{i + 1}.gc"\n')
    _write(tmp_path, "f30.gc", "let Z = 1\n")
    path = _write(tmp_path, "main.gc", 'include "f0.gc"\n' + NET_HEAD + "  output x\n}\n")
    d = _first(path)
    assert "too many or too deeply nested includes" in d.message


def test_too_many_included_files_are_refused(tmp_path):
    for i in range(100):
        _write(tmp_path, f"f{i}.gc", f"let C{i} = {i}\n")
    path = _write(tmp_path, "main.gc", "".join(f'include "f{i}.gc"\n' for i in range(100)) + NET_HEAD
                  + "  output x\n}\n")
    graph, diags, _ = check_spec(path)
    assert graph is None and diags and "too many or too deeply nested includes" in diags[0].message


def test_an_include_name_with_a_nul_character(tmp_path):
    path = _write(tmp_path, "main.gc", 'include "a\0b.gc"\n' + NET_HEAD + "  output x\n}\n")
    d = _first(path)
    assert (d.loc.line, d.loc.col) == (1, 9)


def test_blocks_nested_more_than_the_limit(tmp_path):
    blocks = "".join(f"block b{i}(x) {{\n  return x -> b{i + 1}\n}}\n" for i in range(80))
    path = _write(tmp_path, "deep.gc", NET_HEAD + "  y = x -> b0\n  output y\n}\n" + blocks
                  + "block b80(x) {\n  return x -> relu\n}\n")
    d = _first(path)
    assert "blocks are nested more than 64 deep" in d.message
    assert len(d.notes) <= 3 and all("called here" in text for _, text in d.notes)


def test_exponential_expansion_stops_at_the_node_limit(tmp_path):
    blocks = "".join(f"block b{i}(x) {{\n  return x -> b{i - 1} -> b{i - 1}\n}}\n" for i in range(1, 40))
    path = _write(tmp_path, "exp.gc", NET_HEAD + "  y = x -> b39\n  output y\n}\n" + blocks
                  + "block b0(x) {\n  return x -> relu\n}\n")
    t = time.perf_counter()
    graph, diags, _ = check_spec(path)
    assert graph is None and "more than 100000 layers" in diags[0].message
    assert time.perf_counter() - t < 20


def test_lists_and_strings_cannot_grow_without_bound():
    doubling = "let a0 = [0]\n" + "".join(f"let a{i + 1} = a{i} + a{i}\n" for i in range(30))
    _, diags, _ = check_text(doubling + NET_HEAD + "  output x\n}\n")
    assert diags and diags[0].message == "list too long"
    doubling = 'let a0 = "abcdefgh"\n' + "".join(f"let a{i + 1} = a{i} + a{i}\n" for i in range(30))
    _, diags, _ = check_text(doubling + NET_HEAD + "  output x\n}\n")
    assert diags and diags[0].message == "string too long"


def test_a_flood_of_errors_is_capped(tmp_path):
    path = _write(tmp_path, "flood.gc", NET_HEAD + "  $\n" * 20_000 + "  output x\n}\n")
    graph, diags, sources = check_spec(path)
    assert graph is None and 1 <= len(diags) <= 1000
    t = time.perf_counter()
    text = str(SpecError(diags, sources))
    assert time.perf_counter() - t < 2
    assert text.count(": error: ") == MAX_ERRORS and text.endswith(f"found (the first {MAX_ERRORS} shown)")
