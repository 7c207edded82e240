"""ONNX export: names, the symbolic batch dimension, external data, float64, opsets, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

import graphconv
from graphconv.errors import GraphconvError
from graphconv.ir.graph import Graph, TensorType
from graphconv.ops.build import add_op
from graphconv.onnx.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, export_onnx
from graphconv.onnx.load import load_model
from graphconv.reference.executor import run_graph
from graphconv.weights import init_weights

from test_export_helpers import ATOL, RTOL, check_valid, session

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module")
def resnet18():
    return graphconv.load(SPECS / "resnet18.gc", seed=0, size=32, num_classes=10)


def test_names_follow_the_spec(resnet18):
    model = export_onnx(resnet18)
    g = resnet18.graph
    assert model.graph.name == "resnet18"
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits"]
    onnx_nodes = {n.name for n in model.graph.node}
    assert {n.name for n in g.nodes} <= onnx_nodes
    assert "layer2.basic0.conv1" in onnx_nodes
    inits = {t.name for t in model.graph.initializer}
    assert {p for p in g.params} == inits  # every parameter, by name, and nothing else for resnet
    produced = {o for n in model.graph.node for o in n.output}
    assert {n.output.name for n in g.nodes} <= produced
    assert model.opset_import[0].version == DEFAULT_OPSET
    assert export_onnx(resnet18, name="other").graph.name == "other"


def test_batch_dimension_is_symbolic(resnet18):
    model = export_onnx(resnet18)
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "N" and out_dims[1].dim_value == 10
    sess = session(model)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        (y,) = sess.run(None, {"image": x})
        assert y.shape == (batch, 10)


def test_weights_are_the_networks(resnet18, tmp_path):
    model = export_onnx(resnet18, tmp_path / "r.onnx")
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, arr in resnet18.weights.items():
        np.testing.assert_array_equal(init[name], arr)
    loaded = onnx.load(str(tmp_path / "r.onnx"))
    check_valid(loaded)
    assert not os.path.exists(tmp_path / "r.onnx.data")


def test_weights_file_and_mapping(tmp_path):
    net = graphconv.load(SPECS / "lenet5.gc", seed=3)
    net.save_weights(tmp_path / "w.npz")
    g = net.graph
    a = export_onnx(g, weights=str(tmp_path / "w.npz"))
    b = export_onnx(net)
    assert a.graph.initializer == b.graph.initializer


def test_external_data(tmp_path):
    net = graphconv.load(SPECS / "cifar_cnn.gc", seed=0)
    path = tmp_path / "m" / "cifar.onnx"
    path.parent.mkdir()
    model = export_onnx(net, path, external_data_threshold=1024)
    data = path.parent / "cifar.onnx.data"
    assert data.is_file() and data.stat().st_size > 3_000_000
    assert path.stat().st_size < 100_000
    assert sorted(os.listdir(path.parent)) == ["cifar.onnx", "cifar.onnx.data"]
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    onnx.checker.check_model(str(path), full_check=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    import onnxruntime as ort

    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    want = graphconv.compile(net).run({"image": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    safe = load_model(path)  # graphconv's own safe loader reads it back
    assert safe.graph.initializer[0].raw_data
    offsets = [int({e.key: e.value for e in t.external_data}["offset"]) for t in model.graph.initializer]
    assert len(set(offsets)) == len(offsets) and all(o % 4096 == 0 for o in offsets)
    # exporting again overwrites the data file instead of appending to it
    size = data.stat().st_size
    export_onnx(net, path, external_data_threshold=1024)
    assert data.stat().st_size == size


def test_float64(tmp_path):
    g = Graph("mlp64")
    x = g.add_input("x", TensorType(("N", 6), "float64"))
    h = add_op(g, "fc1", "dense", [x], units=5)
    h = add_op(g, "act", "tanh", [h])
    g.set_output("probs", add_op(g, "sm", "softmax", [add_op(g, "fc2", "dense", [h], units=3)]))
    w = init_weights(g, 0)
    model = export_onnx(g, weights=w)
    check_valid(model)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert all(t.data_type == onnx.TensorProto.DOUBLE for t in model.graph.initializer)
    xv = np.random.default_rng(0).standard_normal((3, 6))
    (got,) = session(model).run(None, {"x": xv})
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, run_graph(g, {"x": xv}, w, dtype="float64")["probs"], rtol=1e-12, atol=1e-14)


def test_float64_conv_network_is_valid():
    net = graphconv.load(SPECS / "resnet18.gc", seed=0, size=32)
    model = export_onnx(net, dtype="float64")
    check_valid(model)
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.DOUBLE}


def test_output_that_is_an_input_and_repeated_outputs():
    g = Graph("passthrough")
    x = g.add_input("x", TensorType(("N", 4), "float32"))
    y = add_op(g, "r", "relu", [x])
    g.set_output("x_again", x)
    g.set_output("r", y)
    g.set_output("r2", y)
    model = export_onnx(g, weights={})
    check_valid(model)
    assert [o.name for o in model.graph.output] == ["x_again", "r", "r2"]
    xv = np.array([[-1, 2, -3, 4]], np.float32)
    a, b, c = session(model).run(None, {"x": xv})
    np.testing.assert_array_equal(a, xv)
    np.testing.assert_array_equal(b, np.maximum(xv, 0))
    np.testing.assert_array_equal(c, b)


@pytest.mark.parametrize("opset", [MIN_OPSET, MAX_OPSET])
def test_opsets(opset):
    net = graphconv.load(SPECS / "googlenet.gc", seed=0, size=64)
    model = export_onnx(net, opset=opset)
    check_valid(model)
    assert model.opset_import[0].version == opset
    session(model)


@pytest.mark.parametrize("opset", [12, MAX_OPSET + 1, "21", True])
def test_bad_opset(opset):
    net = graphconv.load(SPECS / "lenet5.gc")
    with pytest.raises(GraphconvError, match="opset"):
        export_onnx(net, opset=opset)


def test_bad_weights():
    net = graphconv.load(SPECS / "lenet5.gc")
    with pytest.raises(GraphconvError, match="missing parameter"):
        export_onnx(net.graph, weights={})
    with pytest.raises(GraphconvError, match="Network or a Graph"):
        export_onnx("specs/lenet5.gc")


def test_in_memory_model_over_the_protobuf_limit_is_refused(monkeypatch):
    """Past protobuf's 2 GiB a model cannot be one message: in memory that is a clear error (the real size runs
    in the slow tests/onnx/test_export_large.py)."""
    import graphconv.onnx.export as export

    net = graphconv.load(SPECS / "cifar_cnn.gc", seed=0)
    monkeypatch.setattr(export, "EXTERNAL_DATA_THRESHOLD", 1024)
    with pytest.raises(export.ExportError, match=r"the model's tensors take 0\.00 GiB, more than one protobuf "
                                                 r"message can hold \(2 GiB\); export it to a file"):
        export.build_model(net)


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_external_data_never_writes_through_a_planted_link(tmp_path, link):
    net = graphconv.load(SPECS / "lenet5.gc", seed=0)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    data = tmp_path / "model.onnx.data"
    (os.symlink if link == "symlink" else os.link)(victim, data)
    export_onnx(net, tmp_path / "model.onnx", external_data_threshold=0)
    assert victim.read_text() == "precious data\n"
    assert data.is_file() and not data.is_symlink() and data.stat().st_size > 200_000
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "model.onnx.data", "victim.txt"]  # no temporary left


def test_external_data_bad_paths(tmp_path):
    from graphconv.onnx.export import ExportError

    net = graphconv.load(SPECS / "lenet5.gc", seed=0)
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(net, tmp_path / "missing" / "m.onnx", external_data_threshold=0)
    with pytest.raises(ExportError, match="names a folder, not a file"):
        export_onnx(net, str(tmp_path) + "/", external_data_threshold=0)
    assert os.listdir(tmp_path) == []
