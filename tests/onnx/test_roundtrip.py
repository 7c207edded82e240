"""Round trips through ONNX for every zoo spec: spec -> ONNX -> import -> reference equals spec -> reference, and
the imported network written back as a spec (+ weights) runs to the same outputs. Both sides run in the float64
reference executor, so only the translation can differ (no float32 rounding)."""

from __future__ import annotations

import numpy as np
import pytest

import graphconv
from graphconv import cli
from graphconv.onnx.export import export_onnx
from graphconv.reference.executor import run_graph

from test_export_helpers import ATOL, RTOL
from test_export_zoo import SPECS, ZOO, _prepared


@pytest.mark.parametrize("key", sorted(ZOO))
def test_spec_onnx_import_equals_spec(key, tmp_path):
    net, inputs = _prepared(key)
    path = tmp_path / f"{key}.onnx"
    export_onnx(net, str(path))
    imported = graphconv.import_onnx(path)
    assert imported.output_names == net.output_names
    assert imported.num_params() == net.num_params()
    want = run_graph(net.graph, inputs, net.weights, dtype="float64")
    got = run_graph(imported.graph, inputs, imported.weights, dtype="float64")
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_cli_export_import_run(tmp_path, capsys):
    """graphconv export-onnx, import-onnx, then run: the model, the written spec with its weights, and the model
    on onnxruntime all give the same outputs."""
    model, spec = tmp_path / "r18.onnx", tmp_path / "r18.gc"
    assert cli.main(["export-onnx", str(SPECS / "resnet18.gc"), "--set", "size=32", "--set", "num_classes=10",
                     "-o", str(model)]) == 0
    assert cli.main(["import-onnx", str(model), "-o", str(spec)]) == 0
    assert (tmp_path / "r18.npz").is_file()
    outs = {}
    for name, args in {
        "onnx-file": [str(model)],
        "written-spec": [str(spec), "--weights", str(tmp_path / "r18.npz")],
        "onnxruntime": [str(model), "--backend", "onnx"],
    }.items():
        out = tmp_path / f"{name}.npy"
        assert cli.main(["run", *args, "--seed", "4", "--output", str(out)]) == 0, name
        outs[name] = np.load(out)
    assert outs["onnx-file"].shape == (1, 10)
    np.testing.assert_array_equal(outs["written-spec"], outs["onnx-file"])
    np.testing.assert_allclose(outs["onnxruntime"], outs["onnx-file"], rtol=RTOL, atol=ATOL)


def test_set_is_refused_for_onnx_models(tmp_path, capsys):
    model = tmp_path / "l.onnx"
    assert cli.main(["export-onnx", str(SPECS / "lenet5.gc"), "-o", str(model)]) == 0
    assert cli.main(["run", str(model), "--set", "num_classes=3"]) == 1
    assert "--set applies to specs, not to ONNX models" in capsys.readouterr().err
