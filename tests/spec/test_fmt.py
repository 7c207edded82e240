"""`graphconv fmt` and `format_spec`: the canonical layout (golden cases), what formatting must never do (lose a
comment, change a graph, touch a spec with errors), idempotence, the zoo being canonical, and the command line."""

from __future__ import annotations

import io
import os
import random
import re
import signal
import stat
import sys
from pathlib import Path

import pytest

from graphconv import cli
from graphconv.errors import SpecError
from graphconv.ir.serialize import to_json
from graphconv.spec import MAX_FILE_BYTES, check_text, load_graph, load_graph_text
from graphconv.spec import fmt
from graphconv.spec.fmt import FormatterBug, format_spec
from graphconv.spec.lexer import tokenize

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "specs"
ZOO = sorted([*SPECS.glob("*.gc"), *(SPECS / "lib").glob("*.gc"), *(REPO / "examples").glob("*.gc")])
CORPUS = sorted((Path(__file__).resolve().parent / "corpus").glob("*.gc"))


def zoo_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def comments(text: str) -> list[str]:
    return [t.text.rstrip() for t in tokenize(text, "<t>", [], keep_comments=True) if t.kind == "comment"]


def code_tokens(text: str) -> list[tuple[str, str]]:
    return [(t.kind, t.text) for t in tokenize(text, "<t>", []) if t.kind not in ("newline", "eof")]


def graph_key(graph) -> dict:
    """The graph as JSON without what formatting may change: source locations and the file name."""
    doc = to_json(graph)
    doc["meta"].pop("source", None)
    for node in doc["nodes"]:
        node.pop("loc", None)
    return doc


# -- golden cases: messy input -> exact canonical text --------------------------------------------------------------

GOLDEN = {
    "spaces_and_indentation": (
        "network  net ( num_classes=10 ,size = 32 ){\n"
        "input image :f32 [ N,3,size , size ]\n"
        "        y=image->conv2d( 16,3 , stride = 2,padding=1 )as c1->relu\n"
        "  z = y ->flatten-> dense( num_classes*2-1 , init = normal(std=0.01) )\n"
        "  w=add(z,z)as sum\n"
        "   output  w,y\n"
        "}\n",
        "network net(num_classes = 10, size = 32) {\n"
        "  input image: f32[N, 3, size, size]\n"
        "  y = image -> conv2d(16, 3, stride=2, padding=1) as c1 -> relu\n"
        "  z = y -> flatten -> dense(num_classes * 2 - 1, init=normal(std=0.01))\n"
        "  w = add(z, z) as sum\n"
        "  output w, y\n"
        "}\n"),
    "tabs_crlf_trailing_spaces": (
        "network n {   \r\n"
        "\tinput x: f32[N, 3, 8, 8]\t\r\n"
        "\t\ty = x -> relu  # CRLF comment \r\n"
        "\r\n"
        "\toutput y\r\n"
        "}\t\r\n",
        "network n {\n"
        "  input x: f32[N, 3, 8, 8]\n"
        "  y = x -> relu  # CRLF comment\n"
        "\n"
        "  output y\n"
        "}\n"),
    "blank_lines": (
        "\n\n\n# header\n\n\n\nlet A = 1\n\n\n\nlet B = 2\n"
        "network n {\n\n\n  input x: f32[N, 3]\n\n\n\n  y = x\n\n    -> relu\n\n  output y\n\n\n}\n"
        "block b(x) { return x }\nblock c(x) {\n  return x\n}\n\n\n\n",
        "# header\n"
        "\n"
        "let A = 1\n"
        "\n"
        "let B = 2\n"
        "\n"
        "network n {\n"
        "  input x: f32[N, 3]\n"
        "\n"
        "  y = x\n"
        "    -> relu\n"
        "\n"
        "  output y\n"
        "}\n"
        "\n"
        "block b(x) { return x }\n"
        "\n"
        "block c(x) {\n"
        "  return x\n"
        "}\n"),
    "comments_everywhere": (
        "# file header\n"
        "network n(c = 8,  # channels\n"
        "          k = 3) {\n"
        "      # about the input\n"
        "  input x: f32[N, 3, 8, 8]   # trailing\n"
        "  y = conv2d(x, c, k,    # inside a call\n"
        "             # own line inside the call\n"
        "             padding=1)\n"
        "  z = y\n"
        "# before a continuation line\n"
        "       -> relu # after relu\n"
        "       -> relu\n"
        "  output z\n"
        "  # before the closing brace\n"
        "}\n"
        "# end of file without newline",
        "# file header\n"
        "network n(c = 8,  # channels\n"
        "          k = 3) {\n"
        "  # about the input\n"
        "  input x: f32[N, 3, 8, 8]  # trailing\n"
        "  y = conv2d(x, c, k,       # inside a call\n"
        "             # own line inside the call\n"
        "             padding=1)\n"
        "  z = y\n"
        "    # before a continuation line\n"
        "    -> relu  # after relu\n"
        "    -> relu\n"
        "  output z\n"
        "  # before the closing brace\n"
        "}\n"
        "\n"
        "# end of file without newline\n"),
    "line_breaks": (
        "network n {\n"
        "  input x: f32[N, 3]\n"
        "  y = x -> relu ->\n"
        "    relu -> # a comment after an arrow\n"
        "    relu\n"
        "  let s = [1\n"
        "    , 2\n"
        "    , 3]\n"
        "  if true {\n"
        "    z = y }\n"
        "  else { z = x }\n"
        "  if false { w = z } else {\n"
        "  w = y\n"
        "  }\n"
        "  output w }\n",
        "network n {\n"
        "  input x: f32[N, 3]\n"
        "  y = x -> relu\n"
        "    -> relu  # a comment after an arrow\n"
        "    -> relu\n"
        "  let s = [1,\n"
        "    2,\n"
        "    3]\n"
        "  if true {\n"
        "    z = y\n"
        "  } else { z = x }\n"
        "  if false { w = z } else {\n"
        "    w = y\n"
        "  }\n"
        "  output w\n"
        "}\n"),
    "brackets": (
        "let W = [\n"
        "      [1, 2],\n"
        "   [3, 4],\n"
        "        ]\n"
        "block b(\n"
        "    x,\n"
        "  c = 1,\n"
        "  ) {\n"
        "  y = x -> conv2d(c, 3,\n"
        "                  padding=1)\n"
        "  z = concat(y,\n"
        "     y -> relu,\n"
        "        y\n"
        "      -> relu)\n"
        "  return f(g(1,\n"
        "      2), h(3,\n"
        "   4))\n"
        "}\n",
        "let W = [\n"
        "  [1, 2],\n"
        "  [3, 4],\n"
        "]\n"
        "\n"
        "block b(\n"
        "  x,\n"
        "  c = 1,\n"
        ") {\n"
        "  y = x -> conv2d(c, 3,\n"
        "                  padding=1)\n"
        "  z = concat(y,\n"
        "    y -> relu,\n"
        "    y\n"
        "      -> relu)\n"
        "  return f(g(1,\n"
        "    2), h(3,\n"
        "      4))\n"
        "}\n"),
    "repeat_operators_literals": (
        "block b(x, n, k = -1) {\n"
        "  let a = - n+2*( k-1 )// 3 % 2\n"
        "  let t = not(a==1)and n>=2 or-k<0\n"
        "  let v = [1e-3, 007, .5, 5., 2.5E3, \"edge\\n\"]\n"
        "  return x -> repeat n-1 {conv2d(8,3,padding = -k)->relu} -> repeat 2 {\n"
        "      batchnorm\n"
        "           -> relu\n"
        "  }\n"
        "}\n",
        "block b(x, n, k = -1) {\n"
        "  let a = -n + 2 * (k - 1) // 3 % 2\n"
        "  let t = not (a == 1) and n >= 2 or -k < 0\n"
        "  let v = [1e-3, 007, .5, 5., 2.5E3, \"edge\\n\"]\n"
        "  return x -> repeat n - 1 { conv2d(8, 3, padding=-k) -> relu } -> repeat 2 {\n"
        "    batchnorm\n"
        "    -> relu\n"
        "  }\n"
        "}\n"),
    "aligned_trailing_comments": (
        "network n {\n"
        "  input x: f32[N, 3]  # a\n"
        "  y = x -> relu # b\n"
        "  z = y -> relu -> relu     # c\n"
        "\n"
        "  output z           # d\n"
        "}\n",
        "network n {\n"
        "  input x: f32[N, 3]     # a\n"
        "  y = x -> relu          # b\n"
        "  z = y -> relu -> relu  # c\n"
        "\n"
        "  output z  # d\n"
        "}\n"),
    "else_after_a_comment_and_empty_bodies": (
        "network n {\n"
        "input x: f32[N]\n"
        "if a {\n"
        "y = x\n"
        "}   # then\n"
        "    # about else\n"
        "else {\n"
        "y = -x }\n"
        "if b {   } else if c { z = 1 }\n"
        "output y\n"
        "}\n",
        "network n {\n"
        "  input x: f32[N]\n"
        "  if a {\n"
        "    y = x\n"
        "  }  # then\n"
        "  # about else\n"
        "  else {\n"
        "    y = -x\n"
        "  }\n"
        "  if b {} else if c { z = 1 }\n"
        "  output y\n"
        "}\n"),
    "only_comments": ("  # one\n\n\n   # two   \n\n", "# one\n\n# two\n"),
    "empty": (" \n\t\n\n", ""),
}


@pytest.mark.parametrize("name", GOLDEN)
def test_golden(name):
    messy, expected = GOLDEN[name]
    assert format_spec(messy) == expected
    assert format_spec(expected) == expected


@pytest.mark.parametrize("name", GOLDEN)
def test_no_comment_is_lost_and_no_token_changes(name):
    messy, expected = GOLDEN[name]
    assert comments(expected) == comments(messy)
    assert code_tokens(expected) == code_tokens(messy)


def test_golden_networks_build_the_same_graph():
    for name in ("spaces_and_indentation", "tabs_crlf_trailing_spaces", "comments_everywhere"):
        messy, expected = GOLDEN[name]
        assert graph_key(load_graph_text(messy, "n.gc")) == graph_key(load_graph_text(expected, "n.gc")), name


def test_a_byte_order_mark_is_dropped():
    assert format_spec("\ufefflet a = 1\n") == "let a = 1\n"


# -- the zoo: canonical, idempotent, same graphs --------------------------------------------------------------------

@pytest.mark.parametrize("path", ZOO, ids=zoo_id)
def test_zoo_spec_is_canonical(path):
    text = path.read_text(encoding="utf-8")
    assert format_spec(text, str(path)) == text


def _messy_formatted_copy(tmp_path: Path) -> Path:
    """A copy of specs/ and examples/ in which every spec was perturbed (see `perturb`) and then formatted."""
    for path in ZOO:
        text = perturb(path.read_text(encoding="utf-8"), random.Random(zoo_id(path)))
        out = tmp_path / path.relative_to(REPO)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(format_spec(text, str(path)), encoding="utf-8")
    return tmp_path


def _messages(path: Path) -> list[str]:
    return [d.message for d in check_text(path.read_text(), path.name, root=str(path.parent))[1]]


def test_zoo_graphs_are_unchanged_by_formatting(tmp_path):
    root = _messy_formatted_copy(tmp_path)
    loaded = 0
    for path in ZOO:
        if path.parent.name == "lib":
            continue  # included by vgg16/vgg19: checked through them
        rel = path.relative_to(REPO)
        if path.name == "mistakes.gc":  # no graph: the same errors instead
            assert _messages(root / rel) == _messages(path)
            continue
        assert graph_key(load_graph(str(root / rel))) == graph_key(load_graph(str(path))), rel
        loaded += 1
    assert loaded >= 12


# -- whitespace fuzzing: perturbed zoo specs format back to the canonical text ---------------------------------------

_WORDISH = ("ident", "keyword", "int", "float")


def _joinable(a, b) -> bool:
    """Whether tokens a and b may touch without becoming other tokens."""
    if a.kind in _WORDISH and b.kind in _WORDISH:
        return False
    return code_tokens(a.text + b.text) == [(a.kind, a.text), (b.kind, b.text)]


def perturb(text: str, rng: random.Random) -> str:
    """The canonical `text` with random whitespace: spaces and tabs between tokens (none where legal), random
    indentation of statement lines and comment lines, trailing spaces, extra blank lines, `->` moved to the end of
    the line before, `} else` split over two lines, CRLF or LF, with or without a final newline. Lines inside
    brackets keep their indentation and spacing: there the user's alignment is significant."""
    out: list[str] = []
    stack: list[str] = []  # open "(", "[", "repeat", "body"
    after_repeat = False
    for line in text.split("\n"):
        toks = [t for t in tokenize(line, "<p>", [], keep_comments=True) if t.kind not in ("newline", "eof")]
        if not toks:
            out += [rng.choice(["", " ", "\t"])] * (rng.choice([1, 1, 2, 3]) if line == "" and out else 1)
            continue
        level = not stack or stack[-1] == "body"
        code = [t for t in toks if t.kind != "comment"]
        for t in code:
            if t.text in ("(", "["):
                stack.append(t.text)
            elif t.text == "repeat":
                after_repeat = True
            elif t.text == "{":
                stack.append("repeat" if after_repeat else "body")
                after_repeat = False
            elif t.text in (")", "]", "}"):
                stack.pop()
        keep = not level or (stack and stack[-1] != "body")  # starts or ends inside brackets
        if keep:
            out.append(line)
            continue
        indent = rng.choice(["", " ", "  ", "\t", "     ", "\t  "])
        parts = [toks[0].text]
        for a, b in zip(toks, toks[1:]):
            gap = rng.choice(["", " ", "  ", "\t", " \t "])
            if (b.kind == "comment" and gap == "") or (gap == "" and not _joinable(a, b)):
                gap = " "
            if a.text == "}" and b.text == "else" and rng.random() < 0.5:
                gap = "\n" + rng.choice(["", "    "])
            parts += [gap, b.text]
        body = "".join(parts) + rng.choice(["", " ", "\t "])
        ends_in_code = out and out[-1].strip() and "#" not in out[-1]
        if toks[0].text == "->" and ends_in_code and rng.random() < 0.5:
            out[-1] = out[-1].rstrip() + rng.choice([" ->", "->", " -> "])
            body = body[2:]
        out.append(indent + body)
    result = rng.choice(["\n", "\r\n"]).join(out)
    if result.endswith("\n") and rng.random() < 0.3:
        result = result.rstrip("\r\n")
    assert code_tokens(result) == code_tokens(text) and comments(result) == comments(text)
    return result


@pytest.mark.parametrize("path", ZOO, ids=zoo_id)
def test_perturbed_whitespace_formats_back_to_the_zoo_text(path):
    canonical = path.read_text(encoding="utf-8")
    for seed in range(8):
        messy = perturb(canonical, random.Random(seed))
        assert format_spec(messy, str(path)) == canonical, f"seed {seed}:\n{messy}"


@pytest.mark.parametrize("name", [n for n in GOLDEN if GOLDEN[n][1]])
def test_perturbed_whitespace_formats_back_to_the_golden_text(name):
    canonical = GOLDEN[name][1]
    for seed in range(8):
        messy = perturb(canonical, random.Random(seed))
        assert format_spec(messy) == canonical, f"seed {seed}:\n{messy}"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_specs_without_syntax_errors_format_idempotently(path):
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        once = format_spec(text, path.name)
    except SpecError:
        return
    assert format_spec(once, path.name) == once
    assert comments(once) == comments(text) and code_tokens(once) == code_tokens(text)


# -- errors and the self-check ----------------------------------------------------------------------------------------

def test_syntax_errors_raise_located_spec_errors():
    with pytest.raises(SpecError) as e:
        format_spec("network n {\n  y = x -> \n  output y\n  z = (1 +\n}\n", "bad.gc")
    locs = [(d.loc.line, d.loc.col) for d in e.value.diagnostics]
    assert locs == [(3, 3), (5, 1)]
    assert "bad.gc:3:3: error: expected a layer or block after '->'" in str(e.value)


def test_semantic_errors_do_not_stop_formatting():
    assert format_spec("network n {\n  y = x ->nosuchlayer\n}\n") == "network n {\n  y = x -> nosuchlayer\n}\n"


@pytest.mark.parametrize("text", ["(" * 10_000 + "1" + ")" * 10_000, "[" * 10_000 + "]" * 10_000,
                                  "-" * 10_000 + "1", "1" + " + 1" * 10_000],
                         ids=["parentheses", "brackets", "unary-minus", "binary-plus"])
def test_deep_nesting_is_a_clean_error(text):
    with pytest.raises(SpecError, match="nesting is too deep"):
        format_spec(f"network n {{\n  y = {text}\n}}\n")


def test_long_flat_chains_format():
    text = "network n {\n  y = x" + " -> relu" * 2_000 + "\n}\n"
    assert format_spec(text) == text


def test_a_formatter_bug_is_refused_not_written(monkeypatch, tmp_path):
    """If the layout ever lost a token or changed the meaning, format_spec raises instead of returning it."""
    monkeypatch.setattr(fmt._Layout, "render", lambda self: "network n {\n  y = x\n}\n")
    with pytest.raises(FormatterBug, match="tokens"):
        format_spec("network n {\n  y = x -> relu\n}\n")
    monkeypatch.setattr(fmt._Layout, "render", lambda self: "network n {\n  y = x\n  -> relu\n}\n".replace(
        "\n  -> relu", " ->\n\n  relu"))  # same tokens, parses
    assert format_spec("network n {\n  y = x -> relu\n}\n")  # same tree: accepted
    monkeypatch.setattr(fmt._Layout, "render", lambda self: "network n {\n  output a b\n}\n")
    with pytest.raises(FormatterBug, match="meaning"):
        format_spec("network n {\n  output a\n  b\n}\n")
    path = tmp_path / "n.gc"
    path.write_text("network n {\n  output a\n  b\n}\n")
    assert cli.main(["fmt", str(path)]) == cli.EXIT_INTERNAL
    assert path.read_text() == "network n {\n  output a\n  b\n}\n"


# -- the command line -------------------------------------------------------------------------------------------------

MESSY = "network n {\ninput x: f32[N, 3]\n  y=x->relu\n  output y\n}\n"
CLEAN = "network n {\n  input x: f32[N, 3]\n  y = x -> relu\n  output y\n}\n"
BROKEN = "network n {\n  y = x -> \n}\n"


def test_cli_rewrites_files_in_place_keeping_permissions(tmp_path, capsys):
    messy, clean = tmp_path / "messy.gc", tmp_path / "clean.gc"
    messy.write_text(MESSY)
    clean.write_text(CLEAN)
    messy.chmod(0o640)
    assert cli.main(["fmt", str(messy), str(clean)]) == 0
    assert messy.read_text() == CLEAN and clean.read_text() == CLEAN
    assert stat.S_IMODE(messy.stat().st_mode) == 0o640
    assert capsys.readouterr().out == f"reformatted {messy}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.gc", "messy.gc"]  # no temporary file left


def test_cli_rewrites_the_target_of_a_symlink(tmp_path):
    target = tmp_path / "real.gc"
    target.write_text(MESSY)
    link = tmp_path / "link.gc"
    link.symlink_to(target)
    assert cli.main(["fmt", str(link)]) == 0
    assert link.is_symlink() and target.read_text() == CLEAN


def test_cli_check_changes_nothing_and_exits_1_when_a_file_would_change(tmp_path, capsys):
    messy, clean = tmp_path / "messy.gc", tmp_path / "clean.gc"
    messy.write_text(MESSY)
    clean.write_text(CLEAN)
    assert cli.main(["fmt", "--check", str(messy), str(clean)]) == 1
    assert capsys.readouterr().out == f"would reformat {messy}\n"
    assert messy.read_text() == MESSY
    assert cli.main(["fmt", "--check", str(clean)]) == 0
    assert capsys.readouterr().out == ""


def test_cli_check_of_the_zoo_passes(capsys):
    assert cli.main(["fmt", "--check", str(SPECS), str(REPO / "examples")]) == 0
    assert capsys.readouterr().out == ""


def test_cli_diff_prints_a_unified_diff_and_writes_nothing(tmp_path, capsys):
    messy = tmp_path / "messy.gc"
    messy.write_text(MESSY)
    assert cli.main(["fmt", "--diff", str(messy)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"--- {messy}\n+++ {messy}\n@@ ")
    assert "\n network n {\n-input x: f32[N, 3]\n-  y=x->relu\n+  input x: f32[N, 3]\n+  y = x -> relu\n" in out
    assert messy.read_text() == MESSY
    assert cli.main(["fmt", "--diff", "--check", str(messy)]) == 1


def test_cli_diff_marks_a_missing_final_newline(tmp_path, capsys):
    path = tmp_path / "n.gc"
    path.write_text("let a = 1")
    assert cli.main(["fmt", "--diff", str(path)]) == 0
    assert capsys.readouterr().out.endswith("-let a = 1\n\\ No newline at end of file\n+let a = 1\n")


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_cli_stdin_to_stdout(monkeypatch, capsys):
    _stdin(monkeypatch, MESSY.encode())
    assert cli.main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == CLEAN
    _stdin(monkeypatch, MESSY.encode())
    assert cli.main(["fmt", "--check", "-"]) == 1
    assert capsys.readouterr().out == "would reformat <stdin>\n"


def test_cli_stdin_with_errors(monkeypatch, capsys):
    _stdin(monkeypatch, BROKEN.encode())
    assert cli.main(["fmt", "-"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "<stdin>:3:1: error: expected a layer or block after '->'" in out.err
    _stdin(monkeypatch, b"let a = \xff\n")
    assert cli.main(["fmt", "-"]) == 1
    assert "<stdin>:1:9: error: the file is not valid UTF-8 (byte 0xff)" in capsys.readouterr().err


def test_cli_mixed_good_and_bad_files(tmp_path, capsys):
    good, bad, missing = tmp_path / "good.gc", tmp_path / "bad.gc", tmp_path / "missing.gc"
    good.write_text(MESSY)
    bad.write_text(BROKEN)
    assert cli.main(["fmt", str(bad), str(missing), str(good)]) == 1
    out = capsys.readouterr()
    assert bad.read_text() == BROKEN and good.read_text() == CLEAN
    assert out.out == f"reformatted {good}\n"
    assert f"{bad}:3:1: error: expected a layer or block after '->', found '}}'" in out.err
    assert re.search(rf"{re.escape(str(missing))}:1:1: error: cannot read", out.err)


def test_cli_reports_what_check_reports(tmp_path, capsys):
    bad = tmp_path / "bad.gc"
    bad.write_text(BROKEN)
    assert cli.main(["fmt", str(bad)]) == 1
    from_fmt = capsys.readouterr().err
    assert cli.main(["check", str(bad)]) == 1
    assert capsys.readouterr().err == from_fmt


def test_cli_limits_invalid_utf8_and_oversized_files(tmp_path, capsys):
    bad = tmp_path / "bad.gc"
    bad.write_bytes(b"network n {\n  y = x\xff\n}\n")
    big = tmp_path / "big.gc"
    big.write_bytes(b"# " + b"x" * MAX_FILE_BYTES + b"\n")
    assert cli.main(["fmt", str(bad), str(big)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:8: error: the file is not valid UTF-8 (byte 0xff)" in err
    assert f"specs are limited to {MAX_FILE_BYTES} bytes" in err
    assert bad.read_bytes() == b"network n {\n  y = x\xff\n}\n"


def test_cli_folders_mean_their_spec_files(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.gc").write_text(MESSY)
    (tmp_path / "sub" / "b.gc").write_text(MESSY)
    (tmp_path / "notes.txt").write_text("x  =  1\n")
    assert cli.main(["fmt", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"reformatted {tmp_path / 'a.gc'}\nreformatted {tmp_path / 'sub' / 'b.gc'}\n"
    assert (tmp_path / "notes.txt").read_text() == "x  =  1\n"


def test_cli_usage_errors_exit_2(capsys):
    assert cli.main(["fmt"]) == 2
    assert cli.main(["fmt", "--nope", "a.gc"]) == 2


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a folder the user cannot write")
def test_cli_unwritable_folder_is_a_user_error(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "n.gc"
    path.write_text(MESSY)
    folder.chmod(0o555)
    try:
        assert cli.main(["fmt", str(path)]) == 1
        assert "error: cannot write" in capsys.readouterr().err
        assert path.read_text() == MESSY
    finally:
        folder.chmod(0o755)


# -- review fixes: bytes on disk, read-only files, hard links, folders, speed ---------------------------------------

def test_cli_a_byte_order_mark_is_a_change_to_check_and_to_rewrite(tmp_path, capsys, monkeypatch):
    """format_spec drops the BOM from the text it is given, so the command compares bytes, not the decoded text."""
    path = tmp_path / "bom.gc"
    path.write_bytes(b"\xef\xbb\xbf" + CLEAN.encode())
    assert cli.main(["fmt", "--check", str(path)]) == 1
    assert capsys.readouterr().out == f"would reformat {path}\n"
    assert path.read_bytes() == b"\xef\xbb\xbf" + CLEAN.encode()
    assert cli.main(["fmt", "--diff", str(path)]) == 0
    assert "-\ufeffnetwork n {\n+network n {\n" in capsys.readouterr().out
    assert cli.main(["fmt", str(path)]) == 0
    assert capsys.readouterr().out == f"reformatted {path}\n"
    assert path.read_bytes() == CLEAN.encode()
    assert cli.main(["fmt", "--check", str(path)]) == 0
    _stdin(monkeypatch, b"\xef\xbb\xbf" + CLEAN.encode())
    assert cli.main(["fmt", "--check", "-"]) == 1
    assert capsys.readouterr().out == "would reformat <stdin>\n"


def test_cli_crlf_line_endings_are_a_change_to_check_and_to_rewrite(tmp_path, capsys):
    path = tmp_path / "crlf.gc"
    path.write_bytes(CLEAN.replace("\n", "\r\n").encode())
    assert cli.main(["fmt", "--check", str(path)]) == 1
    assert capsys.readouterr().out == f"would reformat {path}\n"
    assert cli.main(["fmt", str(path)]) == 0
    assert path.read_bytes() == CLEAN.encode()


def test_cli_refuses_a_file_the_user_cannot_write(tmp_path, capsys, monkeypatch):
    """Replacing a file needs only the folder's permission, so fmt asks os.access itself. The tests run as root,
    for whom os.access always says yes: os.access is monkeypatched to say no for this file."""
    path = tmp_path / "n.gc"
    path.write_text(MESSY)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(path) else real_access(p, mode))
    assert cli.main(["fmt", str(path)]) == 1
    out = capsys.readouterr()
    assert out.err == f"error: cannot write '{path}': it is read-only\n" and out.out == ""
    assert path.read_text() == MESSY
    assert cli.main(["fmt", "--check", str(path)]) == 1  # reading is fine
    assert capsys.readouterr().out == f"would reformat {path}\n"


def test_cli_refuses_a_file_nobody_may_write_even_as_root(tmp_path, capsys):
    path = tmp_path / "n.gc"
    path.write_text(MESSY)
    path.chmod(0o444)
    assert cli.main(["fmt", str(path)]) == 1
    assert capsys.readouterr().err == f"error: cannot write '{path}': it is read-only\n"
    assert path.read_text() == MESSY and stat.S_IMODE(path.stat().st_mode) == 0o444


def test_cli_keeps_hard_links_by_rewriting_in_place(tmp_path, capsys):
    a, b = tmp_path / "a.gc", tmp_path / "b.gc"
    a.write_text(MESSY)
    a.chmod(0o640)
    os.link(a, b)
    inode = a.stat().st_ino
    assert cli.main(["fmt", str(a)]) == 0
    assert capsys.readouterr().out == f"reformatted {a}\n"
    assert a.stat().st_ino == b.stat().st_ino == inode and a.stat().st_nlink == 2
    assert b.read_text() == CLEAN and stat.S_IMODE(a.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gc", "b.gc"]  # the temporary file is gone
    a.write_text("let   a   =   1\n")  # longer than its formatted text: the rest of the file is cut off
    assert cli.main(["fmt", str(b)]) == 0
    assert a.read_text() == b.read_text() == "let a = 1\n"
    a.write_text("let a=1")  # shorter: the file grows
    assert cli.main(["fmt", str(a)]) == 0
    assert a.read_text() == b.read_text() == "let a = 1\n" and a.stat().st_nlink == 2


def test_cli_in_place_write_failing_half_way_keeps_the_formatted_text(tmp_path, capsys, monkeypatch):
    a, b = tmp_path / "a.gc", tmp_path / "b.gc"
    a.write_text(MESSY)
    os.link(a, b)

    class HalfWrite:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[:5])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(fmt, "open", lambda p, mode: HalfWrite(open(p, mode)), raising=False)
    assert cli.main(["fmt", str(a)]) == 1
    err = capsys.readouterr().err
    m = re.fullmatch(rf"error: cannot write '{re.escape(str(a))}': No space left on device; its formatted text "
                     rf"is in '(.+)'\n", err)
    assert m and Path(m.group(1)).read_text() == CLEAN and Path(m.group(1)).parent == tmp_path

    def refuse(p, mode):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fmt, "open", refuse, raising=False)
    Path(m.group(1)).unlink()
    a.write_text(MESSY)
    assert cli.main(["fmt", str(a)]) == 1  # failing before any write: the file is untouched, no file left behind
    assert capsys.readouterr().err == f"error: cannot write '{a}': Permission denied\n"
    assert a.read_text() == MESSY and sorted(p.name for p in tmp_path.iterdir()) == ["a.gc", "b.gc"]


@pytest.fixture
def no_hang():
    """Fail instead of hanging should a test open a FIFO (which waits for a writer): an alarm after 20 s."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def timeout(signum, frame):
        raise AssertionError("the FIFO was opened: fmt waited for a writer")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_cli_folder_skips_links_out_of_it_broken_links_and_fifos(tmp_path, capsys, no_hang):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "theirs.gc").write_text(MESSY)
    (outside / "sub").mkdir()
    (outside / "sub" / "deep.gc").write_text(MESSY)
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "a.gc").write_text(MESSY)
    (folder / "inside.gc").symlink_to(folder / "a.gc")  # inside the folder: followed
    (folder / "out.gc").symlink_to(outside / "theirs.gc")
    (folder / "up.gc").symlink_to(Path("..") / "outside" / "theirs.gc")
    (folder / "broken.gc").symlink_to(folder / "missing.gc")
    (folder / "linked_dir").symlink_to(outside / "sub")  # links to folders are not followed
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.gc")  # opening it would block: it must be skipped without being opened
    assert cli.main(["fmt", str(folder)]) == 0
    out = capsys.readouterr()
    assert out.out == f"reformatted {folder / 'a.gc'}\n"  # inside.gc: already formatted through a.gc
    notes = out.err.splitlines()
    assert f"note: skipping '{folder / 'broken.gc'}': it is a broken link" in notes
    assert f"note: skipping '{folder / 'out.gc'}': it is a link to '{outside / 'theirs.gc'}', outside " \
           f"'{folder}'" in notes
    assert any(n.startswith(f"note: skipping '{folder / 'up.gc'}': it is a link to") for n in notes)
    if hasattr(os, "mkfifo"):
        assert f"note: skipping '{folder / 'pipe.gc'}': it is a FIFO, not a file" in notes
    assert len(notes) == 3 + hasattr(os, "mkfifo")
    assert (outside / "theirs.gc").read_text() == MESSY and (outside / "sub" / "deep.gc").read_text() == MESSY
    assert (folder / "a.gc").read_text() == CLEAN and (folder / "out.gc").is_symlink()


def test_cli_links_and_fifos_named_on_the_command_line(tmp_path, capsys, no_hang):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "theirs.gc").write_text(MESSY)
    link = tmp_path / "specs" / "out.gc"
    link.parent.mkdir()
    link.symlink_to(outside / "theirs.gc")
    assert cli.main(["fmt", str(link)]) == 0  # named explicitly: followed, as before
    assert (outside / "theirs.gc").read_text() == CLEAN and link.is_symlink()
    if hasattr(os, "mkfifo"):
        pipe = tmp_path / "pipe.gc"
        os.mkfifo(pipe)
        assert cli.main(["fmt", "--check", str(pipe)]) == 1  # refused without being opened (that would block)
        assert f"{pipe}:1:1: error: '{pipe}' is not a file: it is a FIFO" in capsys.readouterr().err


def test_cli_a_folder_without_specs_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x\n")
    good = tmp_path / "good.gc"
    good.write_text(MESSY)
    assert cli.main(["fmt", "--check", str(empty)]) == 1
    out = capsys.readouterr()
    assert out.err == f"error: no .gc files under '{empty}'\n" and out.out == ""
    assert cli.main(["fmt", str(empty), str(good)]) == 1  # the other arguments are still formatted
    assert capsys.readouterr().out == f"reformatted {good}\n" and good.read_text() == CLEAN
    (empty / "broken.gc").symlink_to(empty / "missing.gc")
    assert cli.main(["fmt", str(empty)]) == 1
    assert capsys.readouterr().err == (f"note: skipping '{empty / 'broken.gc'}': it is a broken link\n"
                                       f"error: no .gc files to format under '{empty}'\n")
    assert cli.main(["fmt", "--help"]) == 0
    assert "a folder without any is an error (exit 1)" in " ".join(capsys.readouterr().out.split())


def test_cli_an_unreadable_subfolder_is_an_error(tmp_path, capsys, monkeypatch):
    """Root can list every folder, so listing one fails through a monkeypatched os.scandir (which os.walk uses)."""
    (tmp_path / "a.gc").write_text(CLEAN)
    (tmp_path / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(tmp_path / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert cli.main(["fmt", "--check", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: cannot read the folder '{tmp_path / 'locked'}': Permission denied\n"


def test_an_unchanged_text_is_not_verified_again_and_a_changed_one_is(monkeypatch):
    """Speed for large specs: the check re-tokenizes and re-parses the output, which is needless when the output
    is the input."""
    calls = []
    monkeypatch.setattr(fmt, "_verify", lambda *a: calls.append(a))
    assert format_spec(CLEAN) == CLEAN and calls == []
    assert format_spec(MESSY) == CLEAN and len(calls) == 1


def test_lines_are_built_from_pieces():
    """A line is a list of pieces while it is built (adding to a string of a million characters is quadratic:
    a 120,000-step chain took seconds in the layout alone); the pieces are joined once, with the width kept."""
    layout = fmt._Layout(tokenize("let a = [1, 2]\n", "<t>", [], keep_comments=True))
    line = fmt._Line(4)
    for piece in ("ab", "", "cde"):
        line.add(piece)
    assert (line.width, line.text) == (5, "")
    assert line.done() is line and (line.text, line.parts) == ("abcde", [])
    assert layout.render() == "let a = [1, 2]\n"
    chain = "network n {\n  y = x" + " -> relu" * 5_000 + "\n}\n"
    assert format_spec(chain.replace(" -> ", "->")) == chain
