"""The onnxruntime backend and the command line around ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import graphconv
from graphconv import network
from graphconv.cli import main
from graphconv.errors import GraphconvError, InputError
from graphconv.onnx import runtime

from test_export_helpers import ATOL, RTOL, check_valid

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module")
def lenet():
    return graphconv.load(SPECS / "lenet5.gc", seed=1)


def test_registered():
    assert "onnx" in network.BACKENDS


def test_compile_and_call(lenet):
    model = graphconv.compile(lenet, backend="onnx", device="cpu", threads=1)
    assert model.backend == "onnx" and model.session.get_providers() == ["CPUExecutionProvider"]
    assert model.session.get_session_options().intra_op_num_threads == 1
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(model(x), graphconv.compile(lenet)(x), rtol=RTOL, atol=ATOL)
    assert model(x[:1]).shape == (1, 10)
    assert "backend=onnx" in repr(model)


def test_several_outputs():
    net = graphconv.load(SPECS / "sobel.gc", size=16)
    x = np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32)
    got = graphconv.compile(net, backend="onnx")(x)
    want = graphconv.compile(net)(x)
    assert list(got) == list(want) == ["gx", "gy", "magnitude2"]
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL)


def test_bad_input(lenet):
    model = graphconv.compile(lenet, backend="onnx")
    with pytest.raises(InputError):
        model(np.zeros((1, 1, 28, 28), np.float32))


def test_cuda_without_provider_is_a_clear_error(lenet, monkeypatch):
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(GraphconvError, match=r"no CUDA execution provider.*pip install 'graphconv\[gpu\]'"):
        graphconv.compile(lenet, backend="onnx", device="cuda")


def test_cuda_provider_choice():
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert runtime.choose_providers("cuda", available=avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert runtime.choose_providers("cuda", tensorrt=True, available=avail)[0] == "TensorrtExecutionProvider"
    assert runtime.choose_providers("cpu", available=avail) == ["CPUExecutionProvider"]
    with pytest.raises(GraphconvError, match="unknown device"):
        runtime.choose_providers("tpu", available=avail)


def test_bad_options(lenet):
    with pytest.raises(GraphconvError, match="no option 'warp'"):
        graphconv.compile(lenet, backend="onnx", warp=9)
    with pytest.raises(GraphconvError, match="CPU only"):
        graphconv.compile(lenet, backend="reference", device="cuda")
    with pytest.raises(GraphconvError, match="threads"):
        graphconv.compile(lenet, backend="onnx", threads=-1)


def test_float64_dense_network_and_conv_hint():
    from graphconv.ir.graph import Graph, TensorType
    from graphconv.ops.build import add_op

    g = Graph("mlp")
    x = g.add_input("x", TensorType(("N", 4)))
    g.set_output("y", add_op(g, "fc", "dense", [add_op(g, "r", "relu", [x])], units=2))
    net = network.Network(g, seed=0)
    xv = np.random.default_rng(0).standard_normal((2, 4))
    got = graphconv.compile(net, backend="onnx", dtype="float64")(xv)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, graphconv.compile(net, dtype="float64")(xv), rtol=1e-12)
    conv = graphconv.load(SPECS / "lenet5.gc")
    with pytest.raises(GraphconvError, match="float64"):
        graphconv.compile(conv, backend="onnx", dtype="float64")


def test_external_data_session(lenet):
    """A model over the threshold goes through files (here forced with a tiny threshold)."""
    model = graphconv.compile(lenet, backend="onnx", external_data_threshold=16)
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(model(x), graphconv.compile(lenet)(x), rtol=RTOL, atol=ATOL)


# -- command line ---------------------------------------------------------------------------------------------------

def test_cli_export(tmp_path, capsys):
    out = tmp_path / "r.onnx"
    assert main(["export-onnx", str(SPECS / "resnet18.gc"), "-o", str(out), "--set", "size=32",
                 "--set", "num_classes=7", "--opset", "18"]) == 0
    assert "wrote" in capsys.readouterr().out
    model = onnx.load(str(out))
    check_valid(model)
    assert model.opset_import[0].version == 18
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 7


def test_cli_export_weights_and_O(tmp_path, capsys):
    net = graphconv.load(SPECS / "lenet5.gc", seed=5)
    net.save_weights(tmp_path / "w.npz")
    out = tmp_path / "l.onnx"
    assert main(["export-onnx", str(SPECS / "lenet5.gc"), "-o", str(out), "--weights", str(tmp_path / "w.npz"),
                 "-O", "2"]) == 0
    assert capsys.readouterr().err == ""
    init = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    for k, v in net.weights.items():
        np.testing.assert_array_equal(init[k], v)


def test_cli_export_errors(tmp_path, capsys):
    assert main(["export-onnx", str(SPECS / "lenet5.gc"), "-o", str(tmp_path / "x.onnx"), "--opset", "9"]) == 1
    assert "opset 9 is not supported" in capsys.readouterr().err
    assert main(["export-onnx", str(SPECS / "lenet5.gc")]) == 2


def test_cli_run_onnx(capsys):
    assert main(["run", str(SPECS / "lenet5.gc"), "--backend", "onnx", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "backend onnx" in out and "shape [2, 10]" in out


def test_cli_run_cuda_error(capsys, monkeypatch):
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: ["CPUExecutionProvider"])
    assert main(["run", str(SPECS / "lenet5.gc"), "--backend", "onnx", "--device", "cuda"]) == 1
    assert "graphconv[gpu]" in capsys.readouterr().err
