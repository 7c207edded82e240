"""The project's promises about itself: the README's set-up commands, CI running exactly the README's test command,
the generated op reference being current, and the README's example spec loading."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import graphconv.spec

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block and text.index("```sh") < 40, "the README opens with its set-up commands"
    return [line.strip() for line in block.group(1).strip().splitlines()]


def test_readme_opens_with_two_setup_commands():
    install_and_run, test = readme_commands()
    assert install_and_run.startswith("pip install . && graphconv ")
    assert "specs/" in install_and_run
    assert test.startswith("pip install -e '.[dev]' && pytest")


def test_ci_runs_exactly_the_readme_test_command():
    test = readme_commands()[1]
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line.strip() for line in script if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == test


def test_readme_main_job_spec_exists():
    for path in re.findall(r"specs/\S+\.gc", readme_commands()[0]):
        assert (ROOT / path).is_file(), path


def test_op_reference_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_ops_doc.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_readme_example_spec_loads():
    text = (ROOT / "README.md").read_text()
    example = re.search(r"```gc\n(# LeNet-5.*?)```", text, re.S).group(1)
    graph = graphconv.spec.load_graph_text(example, "readme.gc")
    assert graph.num_params() == 61_706
    assert [str(v.type) for v in graph.outputs.values()] == ["f32[N, 10]"]


def test_readme_error_example_is_real_output():
    text = (ROOT / "README.md").read_text()
    shown = re.search(r"```text\n(.*?)```", text, re.S).group(1)
    r = subprocess.run([sys.executable, "-m", "graphconv", "check", "examples/mistakes.gc"], capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1
    assert r.stderr == shown
