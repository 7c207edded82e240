"""Differential testing (graphconv/testing/differential.py): random networks agree on every backend, and the
comparison itself catches what it should. `python tools/fuzz.py --differential N` runs many more."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphconv.testing import differential
from graphconv.testing.differential import compare
from graphconv.testing.random_cnn import NARROW, WIDE, random_cnn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    from graphconv.llvm.runtime import LLVMModel

    monkeypatch.setenv("GRAPHCONV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "llvm-cache"))
    monkeypatch.setattr(LLVMModel, "min_parallel_flops", 0)


@pytest.mark.parametrize("seed, widths, size", [(5000, NARROW, 8), (5001, NARROW, 8), (5002, NARROW, 16),
                                                (5003, WIDE, 16), (5004, WIDE, 16)])
def test_random_networks_agree_on_every_backend(seed, widths, size):
    case = random_cnn(seed, dtype="float32", size=size, widths=widths)
    assert [m.line() for m in compare(case)] == [], case.description


def _case():
    return random_cnn(7, dtype="float32")


def _with_output(monkeypatch, change):
    """Every backend returns the reference's own result, changed by `change`."""
    from graphconv.reference.executor import run_graph

    def runners(net, configs):
        def run(x):
            return {k: change(v.astype(np.float32)) for k, v in run_graph(net.graph, x, net.weights,
                                                                             dtype="float64").items()}
        return {c: run for c in configs}

    monkeypatch.setattr(differential, "_runners", runners)


def test_an_exact_result_agrees(monkeypatch):
    _with_output(monkeypatch, lambda y: y)
    assert compare(_case(), ("a", "b")) == []


def test_an_error_beyond_the_tolerance_is_reported(monkeypatch):
    def off(y):
        y = y.copy()
        y[0, 0] += 1e-3 + 2e-4 * abs(y[0, 0])
        return y

    _with_output(monkeypatch, off)
    found = compare(_case(), ("llvm -O2 threads=2",))
    assert len(found) == 1 and found[0].config == "llvm -O2 threads=2" and found[0].output == "logits"
    assert found[0].max_error > found[0].bound
    assert found[0].line().startswith("llvm -O2 threads=2: output logits differs by")


def test_a_nan_where_the_reference_has_none_is_reported(monkeypatch):
    def nan(y):
        y = y.copy()
        y[1, 2] = np.nan
        return y

    _with_output(monkeypatch, nan)
    assert "NaN" in compare(_case(), ("onnx",))[0].note


def test_tools_fuzz_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz.py"), "--differential", "1", "--start", "6000"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "GRAPHCONV_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 random networks (seeds 6000..6000, narrow, 8x8): 0 disagreements" in r.stdout


def test_the_generator_makes_valid_networks_for_many_seeds():
    """random_cnn never builds a layer that does not fit its input (an explicit or asymmetric padding too small for
    a dilated kernel on a small map once did: the generator falls back to `same`)."""
    for seed in range(400):
        random_cnn(seed, dtype="float32")
    for seed in range(150):
        random_cnn(seed, dtype="float32", size=16, widths=WIDE)


def test_tools_fuzz_mutations_mode_runs(monkeypatch, capsys):
    """tools/fuzz.py --mutations on a sample: the mode counts cases and exits 0 without findings."""
    import importlib.util

    from graphconv.testing import mutate

    spec = importlib.util.spec_from_file_location("fuzz_tool", ROOT / "tools" / "fuzz.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    real = mutate.mutations
    monkeypatch.setattr(mutate, "mutations", lambda text, path: real(text, path, places=3))
    assert tool.main(["--mutations"]) == 0
    out = capsys.readouterr().out
    assert "mutated specs from 13 zoo specs" in out and "0 findings" in out
