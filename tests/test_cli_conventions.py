"""What every command promises (docs/cli.md, Conventions): --help with examples that docs/cli.md runs, exit status
2 for usage errors and 1 for bad input with one message and no traceback (--debug shows one), progress only on a
terminal, and JSON where the output is a table or report."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from graphconv import cli, progress

ROOT = Path(__file__).resolve().parent.parent
VERBS = sorted(cli.build_parser()._subparsers._group_actions[0].choices)


def _help(verb: str, capsys) -> str:
    assert cli.main([verb, "--help"]) == 0
    return capsys.readouterr().out


def _examples(text: str) -> list[str]:
    m = re.search(r"^examples?:\n(.*)", text, re.S | re.M)
    assert m, "no examples at the end of --help"
    return [line.strip() for line in m.group(1).splitlines() if line.strip().startswith("graphconv ")]


def test_every_command_is_listed_in_order():
    assert {"check", "summary", "run", "compile", "export-onnx", "import-onnx", "bench", "train", "plot"} <= set(VERBS)
    assert sorted(cli.VERB_ORDER) == VERBS


@pytest.mark.parametrize("verb", VERBS)
def test_help_ends_with_examples_that_the_docs_run(verb, capsys):
    """Each --help example appears in a sh block of docs/cli.md (up to its comment), which tests/test_docs.py runs;
    so no --help example can rot."""
    text = _help(verb, capsys)
    assert text.startswith(f"usage: graphconv {verb}")
    examples = _examples(text)
    assert examples
    documented = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    sh = "\n".join(re.findall(r"```sh\n(.*?)```", documented, re.S))
    runnable = {" ".join(shlex.split(line, comments=True)) for line in sh.splitlines() if line.strip()}
    for example in examples:
        assert " ".join(shlex.split(example, comments=True)) in runnable, \
            f"`{example}` (graphconv {verb} --help) is not among docs/cli.md's commands"


@pytest.mark.parametrize("verb", VERBS)
def test_every_command_is_documented(verb):
    assert re.search(rf"^##+ .*\b{re.escape(verb)}\b", (ROOT / "docs" / "cli.md").read_text(), re.M)


@pytest.mark.parametrize("verb", VERBS)
def test_every_option_is_documented(verb):
    """Each long option of each command is in docs/cli.md (train's many options: in docs/training.md)."""
    sub = cli.build_parser()._subparsers._group_actions[0].choices[verb]
    docs = (ROOT / "docs" / "cli.md").read_text() + (
        (ROOT / "docs" / "training.md").read_text() if verb == "train" else "")
    missing = [o for a in sub._actions if a.help != argparse.SUPPRESS for o in a.option_strings
               if o.startswith("--") and o not in ("--help", "--debug", "--set") and o not in docs]
    assert missing == []


@pytest.mark.parametrize("verb", VERBS)
def test_unknown_option_is_a_usage_error(verb, capsys):
    assert cli.main([verb, "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert "usage: graphconv" in err and "Traceback" not in err


@pytest.mark.parametrize("verb", [v for v in VERBS if v not in ("bench", "fmt")])
def test_a_missing_file_is_one_message_and_exit_1(verb, capsys, tmp_path):
    """A file that is not there: status 1, one message naming it, no traceback."""
    missing = str(tmp_path / "nothere.gc")
    argv = {"plot": ["plot", str(tmp_path / "nothere")], "train": ["train", missing, "--data", "digits"],
            "export-onnx": ["export-onnx", missing, "-o", str(tmp_path / "m.onnx")],
            "import-onnx": ["import-onnx", str(tmp_path / "nothere.onnx"), "-o", str(tmp_path / "x.gc")],
            "viz": ["viz", missing, "-o", str(tmp_path / "x.html")],
            "filters": ["filters", str(tmp_path / "nothere.npz"), "--layer", "c1", "-o", str(tmp_path / "f.png")],
            "featuremaps": ["featuremaps", missing, "--image", str(tmp_path / "i.png"),
                            "-o", str(tmp_path / "m.png")],
            }.get(verb, [verb, missing])
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nothere" in err
    assert len(err.strip().splitlines()) <= 4, err


def test_debug_shows_the_traceback(capsys, tmp_path):
    assert cli.main(["summary", str(tmp_path / "nothere.gc"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_check_json(capsys):
    assert cli.main(["check", "specs/lenet5.gc", "examples/mistakes.gc", "--json"]) == 1
    records = json.loads(capsys.readouterr().out)
    assert records[0] == {"path": "specs/lenet5.gc", "ok": True, "network": "lenet5", "nodes": 12, "params": 61706}
    assert records[1]["ok"] is False
    first = records[1]["errors"][0]
    assert (first["line"], first["col"], first["hint"]) == (4, 50, "did you mean 'batchnorm'?")
    assert records[1]["errors"][2]["notes"][0]["message"] == "in block 'residual' called here"


def test_compile_json(capsys, tmp_path):
    assert cli.main(["compile", "specs/resnet18.gc", "-O2", "--json", "-o", str(tmp_path / "r.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["network"], report["level"], report["nodes_before"]) == ("resnet18", 2, 69)
    assert report["nodes_after"] < report["nodes_before"]
    folded = next(p for p in report["passes"] if p["name"] == "fold_batchnorm")
    assert folded["changed"] and sum(folded["counts"].values()) == 20  # resnet18's 20 batchnorms
    assert report["files"] == [str(tmp_path / "r.json"), str(tmp_path / "r.npz")]


def test_compile_json_refuses_ir_printing(capsys):
    assert cli.main(["compile", "specs/lenet5.gc", "--json", "--print-ir"]) == 1
    assert "--print-ir" in capsys.readouterr().err


def test_progress_only_on_a_terminal(capsys, monkeypatch):
    """The library is silent; enabled progress draws only when standard error is a terminal."""
    items = list(progress.iterate(range(3), "work"))
    with progress.stage("step"):
        pass
    assert items == [0, 1, 2] and capsys.readouterr().err == ""
    progress.enable(True)
    try:
        list(progress.iterate(range(3), "work"))  # captured stderr is not a terminal
        assert capsys.readouterr().err == ""
        monkeypatch.setattr(progress, "_is_terminal", lambda: True)
        assert list(progress.iterate(range(3), "work", unit="layer")) == [0, 1, 2]
        with progress.stage("step"):
            pass
        err = capsys.readouterr().err
        assert "work:" in err and "/3 [" in err and re.search(r"step\.\.\. \d+\.\d s", err)
    finally:
        progress.enable(False)


def test_a_batch_too_large_is_a_user_error(capsys):
    """Random inputs are sized before they are drawn; running out of memory is the user's input, not a bug."""
    assert cli.main(["run", "specs/lenet5.gc", "--batch", "1000000000"]) == 1
    err = capsys.readouterr().err
    assert "3,814.7 GiB" in err and "smaller --batch" in err


def test_out_of_memory_is_exit_1(capsys, monkeypatch):
    def exhausted(args):
        raise MemoryError

    monkeypatch.setitem(cli.COMMANDS, "summary", exhausted)
    assert cli.main(["summary", "specs/lenet5.gc"]) == 1
    assert capsys.readouterr().err.strip() == "error: out of memory; try a smaller batch or network"
