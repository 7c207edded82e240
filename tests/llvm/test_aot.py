"""Ahead-of-time compilation for C: `graphconv compile --target llvm-aot` writes an object, header, weights and
README; examples/c/classify.c built against them with the system C compiler gives the Python runtime's outputs.
Skipped (with the reason) where no C compiler is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphconv
from graphconv.cli import main as cli_main
from graphconv.errors import GraphconvError
from graphconv.llvm.aot import write_aot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "onnx"))
from test_export_helpers import calibrate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = ROOT / "examples" / "c" / "classify.c"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build(outdir: Path) -> Path:
    exe = outdir / "classify"
    r = subprocess.run([CC, "-O2", "-Wall", "-Werror", f"-I{outdir}", str(CLASSIFY), str(outdir / "model.o"), "-lm",
                        "-lpthread", "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


@pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc or clang) on this machine")
@pytest.mark.parametrize("spec,params,level", [("cifar_cnn", {}, 3), ("lenet5", {}, 0), ("resnet18", {"size": 32}, 3)])
def test_c_program_matches_python_runtime(tmp_path, spec, params, level):
    net = graphconv.load(ROOT / "specs" / f"{spec}.gc", seed=0, **params)
    # weights that keep activations at a sane scale, as trained ones do (float32 rounding is then the only error)
    calibrate(net, {v.name: np.random.default_rng(1).standard_normal(v.type.concrete(8)) for v in net.graph.inputs})
    res = write_aot(net, tmp_path, opt_level=level, name="model")
    assert sorted(p.name for p in res.files) == ["README.md", "model.h", "model.o", "model.weights"]
    exe = _build(tmp_path)
    x = np.random.default_rng(0).standard_normal(net.graph.inputs[0].type.concrete(3)).astype(np.float32)
    x.tofile(tmp_path / "in.f32")
    ref = graphconv.compile(net, dtype="float64").run({net.input_names[0]: x.astype(np.float64)})
    (name, want), = ref.items()
    for threads in (1, 2):
        py = graphconv.compile(net, backend="llvm", threads=threads, opt_level=level)(x)
        r = subprocess.run([str(exe), str(tmp_path / "model.weights"), str(tmp_path / "in.f32"),
                            str(tmp_path / "out.f32"), "-t", str(threads)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        got = np.fromfile(tmp_path / "out.f32", np.float32).reshape(want.shape)
        np.testing.assert_array_equal(got, py)  # the same code, the same thread count: the same bits
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        # the program prints the top classes of each sample, as the Python runtime ranks them
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("sample")]
        assert len(lines) == 3
        for n, line in enumerate(lines):
            top = [int(tok) for tok in line.split(":")[1].split()[::2]]
            assert top[0] == int(np.argmax(py[n]))


@pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc or clang) on this machine")
def test_c_program_refuses_wrong_weights(tmp_path):
    net = graphconv.load(ROOT / "specs" / "lenet5.gc", seed=0)
    write_aot(net, tmp_path, opt_level=2, name="model")
    exe = _build(tmp_path)
    (tmp_path / "short.weights").write_bytes(b"\0" * 64)
    r = subprocess.run([str(exe), str(tmp_path / "short.weights")], capture_output=True, text=True)
    assert r.returncode == 1 and "expects" in r.stderr


def test_cli_writes_the_files_and_header(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["compile", str(ROOT / "specs" / "lenet5.gc"), "--target", "llvm-aot", "-O2", "-o", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "lenet5.o" in text
    header = (out / "lenet5.h").read_text()
    assert "void lenet5_run(const float *const *inputs, float *const *outputs" in header
    assert "#define LENET5_INPUT0_ELEMENTS 1024" in header and "#define LENET5_OUTPUT0_ELEMENTS 10" in header
    size = int(header.split("#define LENET5_WEIGHTS_BYTES ")[1].split("ull")[0])
    assert (out / "lenet5.weights").stat().st_size == size
    assert (out / "README.md").read_text().startswith("# lenet5")


def test_aot_errors(tmp_path):
    net = graphconv.load(ROOT / "specs" / "lenet5.gc", seed=0)
    with pytest.raises(GraphconvError, match="not a C identifier"):
        write_aot(net, tmp_path, name="my-model")
    (tmp_path / "file").write_text("x")
    with pytest.raises(GraphconvError, match="not a folder"):
        write_aot(net, tmp_path / "file")
    assert cli_main(["compile", str(ROOT / "specs" / "lenet5.gc"), "--target", "llvm-aot"]) == 1


def test_cli_run_and_compile_with_llvm(capsys, tmp_path):
    assert cli_main(["run", str(ROOT / "specs" / "lenet5.gc"), "--backend", "llvm", "--threads", "2",
                     "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "backend llvm" in out and "output logits: shape [2, 10]" in out
    ll = tmp_path / "lenet5.ll"
    assert cli_main(["compile", str(ROOT / "specs" / "lenet5.gc"), "--target", "llvm", "-O3", "--no-cache",
                     "--emit-llvm", str(ll)]) == 0
    out = capsys.readouterr().out
    assert "native code for" in out and "compiled in" in out
    assert "define void @lenet5_run" in ll.read_text()
    assert cli_main(["compile", str(ROOT / "specs" / "lenet5.gc"), "--target", "llvm", "-O3"]) == 0
    assert "from the cache" in capsys.readouterr().out
    assert cli_main(["run", str(ROOT / "specs" / "lenet5.gc"), "--target-cpu", "znver4"]) == 1

