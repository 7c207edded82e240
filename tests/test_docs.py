"""The documents' examples are tests, so they cannot rot.

Conventions in README.md and docs/*.md (docs/cli.md describes them for writers):
- A ```sh block holds commands. They run in order, one document at a time, in a fresh folder where `specs/`,
  `examples/` and `tools/` are the project's. A comment `# exit N` after a command expects exit status N (default 0).
- `<!-- file: NAME -->` on the line before a block writes the block to NAME in that folder first (a spec the
  following commands use).
- A ```python block runs there too, in document order.
- A ```gc block holding a `network` is a whole spec: it must check without errors, unless `<!-- error -->` on the
  line before says it shows one, and then it must fail to check.
- ```text blocks show output or synopses and are not run; `<!-- output -->` on the line before one says it is the
  output of the command just before it, which must print exactly that.
The README's first block, the set-up commands, is what .ci/run runs (tests/test_project.py).
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from graphconv import cli
from graphconv.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))

# Commands that need what the test extras do not install (the benchmark's PyTorch, a C compiler): run where present.
NEEDS = {"--train": "torch"}
# Benchmarks take minutes by design: the plain suite only parses them (so their flags cannot rot) and the slow
# variant (tools/run_slow_tests.sh) runs them.
SLOW = ("graphconv bench",)


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    text: str
    file: str | None = None  # <!-- file: NAME -->
    error: bool = False  # <!-- error -->
    output: bool = False  # <!-- output -->


def blocks(doc: str) -> list[Block]:
    """The fenced code blocks of a document, with the annotation on the line before each."""
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        before = lines[start - 1].strip() if start else ""
        name = re.fullmatch(r"<!--\s*file:\s*(\S+)\s*-->", before)
        out.append(Block(doc, start + 1, lang, "\n".join(lines[start + 1:j]) + "\n",
                         file=name.group(1) if name else None, error=before == "<!-- error -->",
                         output=before == "<!-- output -->"))
        i = j + 1
    return out


def commands(block: Block) -> list[tuple[int, str, int]]:
    """(line, command, expected exit status) of a sh block; `\\` continues a line."""
    out, pending, first = [], "", 0
    for k, raw in enumerate(block.text.splitlines()):
        if not pending:
            first = block.line + 1 + k
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line, pending = pending + raw, ""
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        status = re.search(r"#\s*exit (\d+)", line)
        out.append((first, line, int(status.group(1)) if status else 0))
    return out


def _argv(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    out = []
    for w in words:
        out.extend(sorted(glob.glob(w)) or [w] if any(c in w for c in "*?[") else [w])
    return out


def _run(command: str, where: str) -> tuple[int, str]:
    """Runs one documented command in the current folder; returns its status and output."""
    argv = _argv(command)
    for flag, module in NEEDS.items():
        if flag in argv:
            pytest.importorskip(module, reason=f"{where}: `{command}` needs {module}")
    if argv[0] == "graphconv":
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            status = cli.main(argv[1:])
        return status, out.getvalue()
    if argv[0] == "cc" and not shutil.which("cc"):
        pytest.skip(f"{where}: no C compiler")
    if argv[0] == "python":
        argv[0] = sys.executable
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture()
def sandbox(tmp_path, monkeypatch, tmp_path_factory):
    for name in ("specs", "examples", "tools"):
        os.symlink(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAPHCONV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "llvm-cache"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return tmp_path


def run_document(doc: str, slow: bool = False) -> int:
    """Runs every command and program of a document in order (benchmarks only when `slow`, else they are parsed);
    returns how many ran."""
    ran, last = 0, None
    for i, b in enumerate(blocks(doc)):
        if doc == "README.md" and i == 0:
            continue  # the set-up commands: .ci/run runs them
        if b.file:
            Path(b.file).parent.mkdir(parents=True, exist_ok=True)
            Path(b.file).write_text(b.text, encoding="utf-8")
        if b.lang == "sh":
            for line, command, expected in commands(b):
                where = f"{doc}:{line}"
                if command.startswith(SLOW) and not slow:
                    cli.build_parser().parse_args(_argv(command)[1:])
                    continue
                status, output = _run(command, where)
                assert status == expected, f"{where}: `{command}` exited {status}, expected {expected}:\n{output}"
                ran, last = ran + 1, (where, output)
        elif b.output:
            assert last is not None, f"{doc}:{b.line}: an output block with no command before it"
            shown = [line.rstrip() for line in b.text.rstrip().splitlines()]
            printed = [line.rstrip() for line in last[1].rstrip().splitlines()]
            assert printed == shown, f"{doc}:{b.line}: the output shown is not what {last[0]} prints"
        elif b.lang == "python":
            path = Path(f"_doc_{i}.py")
            path.write_text(b.text, encoding="utf-8")
            with contextlib.redirect_stdout(io.StringIO()):
                runpy.run_path(str(path), run_name="__main__")
            ran += 1
    return ran


@pytest.mark.parametrize("doc", DOCS)
def test_document_commands_run(doc, sandbox):
    run_document(doc)


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d in DOCS if any(c.startswith(SLOW) for b in blocks(d) if b.lang == "sh"
                                                        for _, c, _ in commands(b))])
def test_document_commands_run_with_benchmarks(doc, sandbox):
    run_document(doc, slow=True)


@pytest.mark.parametrize("doc", DOCS)
def test_document_specs_check(doc, sandbox):
    from graphconv.spec import load_graph, load_graph_text

    for b in blocks(doc):
        if b.file:
            Path(b.file).parent.mkdir(parents=True, exist_ok=True)
            Path(b.file).write_text(b.text, encoding="utf-8")
        if b.lang != "gc" or not re.search(r"^\s*network\b", b.text, re.M):
            continue
        where = f"{doc}:{b.line}"

        def load():
            return load_graph(b.file) if b.file else load_graph_text(b.text, where)

        if b.error:
            with pytest.raises(SpecError):
                load()
        else:
            try:
                load()
            except SpecError as e:
                pytest.fail(f"{where}: the spec shown does not check:\n{e}")


def test_every_sh_command_is_a_known_program():
    """A documented command is graphconv, python, cc or a program the document builds (./NAME)."""
    for doc in DOCS:
        for i, b in enumerate(blocks(doc)):
            if b.lang != "sh" or (doc == "README.md" and i == 0):
                continue
            for line, command, _ in commands(b):
                program = _argv(command)[0]
                assert program in ("graphconv", "python", "cc") or program.startswith("./"), \
                    f"{doc}:{line}: `{command}`"


def test_the_conventions_are_followed():
    """Runnable-looking lines outside sh blocks are synopses in text blocks; sh blocks hold no `[OPTIONAL]`
    placeholders (those belong in a text block)."""
    for doc in DOCS:
        for b in blocks(doc):
            if b.lang == "sh":
                for line, command, _ in commands(b):
                    assert not re.search(r"\s\[-", command), f"{doc}:{line}: a synopsis in a sh block: {command}"
            elif b.lang == "":
                assert not b.text.lstrip().startswith("graphconv "), \
                    f"{doc}:{b.line}: a command in an untyped block: mark it sh (run) or text (synopsis)"
