"""The pass manager: levels, training pipelines, the pass log, IR printing, verification, and `graphconv compile`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphconv
from graphconv.cli import main
from graphconv.errors import GraphconvError
from graphconv.passes import PIPELINES, PassResult, PassVerificationError, format_log, optimize, pipeline, registry
from graphconv.passes.base import Pass

SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_every_pass_has_a_module_a_name_and_a_summary():
    reg = registry()
    assert set(reg) == {"remove_dropout", "remove_identity", "fold_constants", "cse", "dce", "fold_batchnorm",
                        "fold_1x1", "lower_pooling", "fuse_activation", "lower_1x1", "fuse_pool",
                        "assign_layout", "plan_memory"}
    for name, p in reg.items():
        assert p.name == name and p.summary and type(p).__module__ == f"graphconv.passes.{name}"
        assert (type(p).__module__.split(".")[-1] == name) and __import__(type(p).__module__, fromlist=["x"]).__doc__


def test_levels():
    assert [p.name for p in pipeline(0)] == []
    assert [p.name for p in pipeline(1)] == ["remove_dropout", "remove_identity", "fold_constants", "cse", "dce"]
    assert [p.name for p in pipeline(2)][-5:] == ["fold_batchnorm", "fold_1x1", "fuse_activation", "dce",
                                                  "plan_memory"]
    assert set(PIPELINES) == {0, 1, 2, 3}
    o3 = [p.name for p in pipeline(3)]
    assert [p.name for p in pipeline(3, target="llvm")] == o3[:-1] + ["assign_layout", "plan_memory"]
    assert [p.name for p in pipeline(2, target="llvm")] == [p.name for p in pipeline(2)]
    with pytest.raises(GraphconvError, match="unknown target 'gpu'; choose reference, onnx, llvm"):
        pipeline(3, target="gpu")
    o2 = [p.name for p in pipeline(2)]
    assert [p.name for p in pipeline(3)] == o2[:7] + ["lower_pooling", "fuse_activation", "lower_1x1", "fuse_pool"] \
        + o2[8:]
    # a training graph keeps batchnorm statistics and dropout
    train = [p.name for p in pipeline(2, training=True)]
    assert not {"remove_dropout", "fold_batchnorm", "fold_1x1", "fuse_activation"} & set(train)
    assert "cse" in train and "dce" in train
    for bad in (4, -1, True, "2"):
        with pytest.raises(GraphconvError, match="unknown optimization level"):
            pipeline(bad)


def test_optimize_leaves_the_network_alone_and_logs_each_pass():
    net = graphconv.load(SPECS / "googlenet.gc", size=64)
    n_before = len(net.graph.nodes)
    opt, log = optimize(net, 2)
    assert len(net.graph.nodes) == n_before and any(n.op == "batchnorm" for n in net.graph.nodes)
    text = format_log(log)
    assert "remove_dropout: 1 dropouts removed" in text
    assert "fold_batchnorm: 57 batchnorms folded into convolutions" in text
    assert "fuse_activation: 57 activations fused" in text
    assert [r.name for r in log] == [p.name for p in pipeline(2)]
    assert all(r.seconds >= 0 for r in log)
    o0, log0 = optimize(net, 0)
    assert log0 == [] and len(o0.graph.nodes) == n_before


def test_training_level_keeps_batchnorm_and_dropout():
    net = graphconv.load(SPECS / "cifar_cnn.gc")
    opt, log = optimize(net, 3, training=True)
    assert [n.op for n in opt.graph.nodes] == [n.op for n in net.graph.nodes]


class _Broken(Pass):
    """Multiplies the first dense layer's weight by 2: a pass that changes the result."""

    name = "broken"
    summary = "a deliberately wrong pass"

    def run(self, program):
        r = PassResult()
        for n in program.graph.nodes:
            if n.op == "dense":
                w = n.params["weight"]
                program.weights[w.name] = program.weights[w.name] * 2
                r.count("weights doubled")
                break
        return r


class _Dangling(Pass):
    """Drops the first node, which others read: a pass that breaks the IR."""

    name = "dangling"
    summary = "drops a node others read"

    def run(self, program):
        program.graph.nodes.pop(0)
        r = PassResult()
        r.count("nodes dropped")
        return r


def test_verify_passes_names_the_first_pass_that_changed_the_result(monkeypatch):
    import graphconv.passes.manager as manager

    real = manager.registry
    monkeypatch.setattr(manager, "registry", lambda: {**real(), "broken": _Broken()})
    net = graphconv.load(SPECS / "lenet5.gc")
    with pytest.raises(PassVerificationError, match=r"pass broken changed the network's result: output 'logits' "
                                                    r"changed by up to"):
        optimize(net, passes=["dce", "broken", "cse"], verify_passes=True)
    optimize(net, passes=["dce", "broken"])  # without verification nobody notices


def test_verify_ir_names_a_pass_that_breaks_the_ir(monkeypatch):
    import graphconv.passes.manager as manager

    real = manager.registry
    monkeypatch.setattr(manager, "registry", lambda: {**real(), "dangling": _Dangling()})
    with pytest.raises(PassVerificationError, match="pass dangling left an invalid IR"):
        optimize(graphconv.load(SPECS / "lenet5.gc"), passes=["dangling"], verify_ir=True)


def test_unknown_pass():
    with pytest.raises(GraphconvError, match="unknown pass fold_everything; passes: remove_dropout"):
        optimize(graphconv.load(SPECS / "lenet5.gc"), passes=["fold_everything"])


def test_cli_pass_log(capsys):
    assert main(["compile", str(SPECS / "resnet50.gc"), "-O2", "--pass-log", "--set", "size=64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "fold_batchnorm: 53 batchnorms folded into convolutions" in out
    assert "fuse_activation: 49 activations fused; 16 residual adds fused" in out
    assert any(line.startswith("plan_memory: arena ") and "of activations" in line for line in out)
    assert out[-1] == "compiled resnet50 at -O2 (inference): 175 -> 57 nodes, 10 passes"


def test_cli_print_ir_after_and_verify(capsys, tmp_path):
    spec = str(SPECS / "cifar_cnn.gc")
    assert main(["compile", spec, "-O2", "--print-ir-after", "fuse_activation", "--verify-passes"]) == 0
    out = capsys.readouterr().out
    assert out.count("// IR after ") == 1 and "// IR after fuse_activation (" in out
    assert "epilogue=[relu]" in out
    assert out.rstrip().endswith("every pass verified on the reference executor")
    assert main(["compile", spec, "-O1", "--print-ir-after-all"]) == 0
    assert capsys.readouterr().out.count("// IR after ") == 5
    assert main(["compile", spec, "--print-ir-after", "nope"]) == 1
    assert "--print-ir-after: unknown pass 'nope'" in capsys.readouterr().err
    out_json = tmp_path / "opt.json"
    assert main(["compile", spec, "-o", str(out_json)]) == 0
    from graphconv.ir.serialize import loads
    g = loads(out_json.read_text())
    assert "memory_plan" in g.meta and not any(n.op == "batchnorm" for n in g.nodes)
    w = np.load(tmp_path / "opt.npz")
    assert set(w.files) == {k for k, p in g.params.items() if p.data is None}


def test_cli_export_onnx_optimized(tmp_path, capsys):
    import onnx
    out = tmp_path / "r.onnx"
    assert main(["export-onnx", str(SPECS / "resnet18.gc"), "-o", str(out), "-O", "2", "--set", "size=32"]) == 0
    model = onnx.load(str(out))
    types = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in types and {"Conv", "Add", "Relu"} <= types
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)


def test_cli_debug_mode_verifies_the_ir_between_passes(monkeypatch, capsys):
    import graphconv.passes.manager as manager

    real = manager.registry
    monkeypatch.setattr(manager, "registry", lambda: {**real(), "dangling": _Dangling()})
    spec = str(SPECS / "lenet5.gc")
    assert main(["compile", spec, "--passes", "dangling", "--debug"]) == 1
    assert "error: pass dangling left an invalid IR" in capsys.readouterr().err
