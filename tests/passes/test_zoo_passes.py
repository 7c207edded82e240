"""Every zoo spec through the -O2 pipeline: the IR verifies after every pass, the reference executor gives the same
outputs before and after (rtol 1e-4, atol 1e-5, with float64 weights run in float64 so that only the transformation
is measured: rounding the folded weights to float32, or two float32 evaluations of the deep nets, differ by more than
that, see tools/onnx_zoo_drift.py; the per-pass tests compare in float32 on small graphs), and the optimized graph
exported to ONNX still uses standard ops only, each node of it (fused ones as Conv, Add, Relu) matches the reference
on onnxruntime's own inputs, and end to end it matches the unoptimized export where float32 drift allows. Random weights are made numerically
sane with the batchnorm calibration of the ONNX zoo tests (a deep random network otherwise amplifies the rounding
of folded weights without bound)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import graphconv
from graphconv.onnx.export import export_onnx
from graphconv.passes import format_log, optimize

from .helpers import SPECS, ZOO, zoo_specs_covered  # noqa: E402  (puts tests/onnx on the path)

from test_export_helpers import calibrate, check_valid, per_node_check  # noqa: E402
from test_export_zoo import END_TO_END_TOO_CHAOTIC  # noqa: E402

STANDARD_DOMAINS = {"", "ai.onnx"}


def test_every_spec_is_covered():
    assert zoo_specs_covered()


def _net(key, dtype=np.float32):
    spec, params = ZOO[key]
    net = graphconv.load(SPECS / f"{spec}.gc", seed=0, **params)
    calib = {v.name: np.random.default_rng(1).standard_normal(v.type.concrete(8)) for v in net.graph.inputs}
    calibrate(net, calib)
    net.weights = {k: v.astype(dtype) for k, v in net.weights.items()}
    return net


# ResNet-101/152 repeat ResNet-50's blocks more often: the slow run (tools/run_slow_tests.sh) checks them
@pytest.mark.parametrize("level, target", [(2, "reference"), (3, "reference"), (3, "llvm")])
@pytest.mark.parametrize("spec", [pytest.param(s, marks=pytest.mark.slow if s in ("resnet101", "resnet152") else ())
                                  for s in sorted(ZOO)])
def test_optimization_keeps_the_function(spec, level, target):
    # float64 weights: folded weights are then not rounded to float32, so only the transformation is measured
    net = _net(spec, np.float64)
    opt, log = optimize(net, level, target=target, verify_ir=True)
    assert len(opt.graph.nodes) <= len(net.graph.nodes)
    assert not any(n.op in ("batchnorm", "dropout", "identity") for n in opt.graph.nodes), format_log(log)
    rng = np.random.default_rng(0)
    x = {v.name: rng.standard_normal(v.type.concrete(2)) for v in net.graph.inputs}
    want = graphconv.compile(net, dtype="float64").run(x)
    got = graphconv.compile(opt, dtype="float64").run(x)
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # the original network is untouched
    assert any(n.op == "batchnorm" for n in net.graph.nodes) == ("batchnorm" in {n.op for n in _net(spec).graph.nodes})


@pytest.mark.parametrize("spec", ["resnet18", "resnet50", "googlenet", "mobilenet_v2", "vgg16"])
def test_optimized_onnx_export_is_standard_and_matches(spec):
    net = _net(spec)
    opt, _ = optimize(net, 2)
    plain, fused = export_onnx(net), export_onnx(opt)
    check_valid(fused)
    assert {n.domain for n in fused.graph.node} <= STANDARD_DOMAINS
    assert {n.op_type for n in fused.graph.node} <= {n.op_type for n in plain.graph.node} | {"Add", "Relu", "Clip"}
    assert "BatchNormalization" not in {n.op_type for n in fused.graph.node}
    x = {v.name: np.random.default_rng(2).standard_normal(v.type.concrete(2)).astype(np.float32)
         for v in net.graph.inputs}

    def run(model):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in model.graph.output], sess.run(None, x)))

    assert per_node_check(opt, fused, x) == len(opt.graph.nodes)
    a, b = run(plain), run(fused)
    assert list(a) == list(b) == net.output_names
    for k in a:
        if spec in END_TO_END_TOO_CHAOTIC or spec == "mobilenet_v2":  # float32 drift (tools/onnx_zoo_drift.py)
            continue
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert len(fused.graph.node) < len(plain.graph.node)
    onnx.checker.check_model(fused, full_check=True)


@pytest.mark.parametrize("spec", ["resnet18", "googlenet-aux", "vgg16", "lenet5"])
def test_o3_export_is_standard_and_every_node_matches(spec):
    """-O3's lowered and fused nodes (window sums and maxima, means, channel matmuls, pooled epilogues) export as
    standard ONNX, each node checked against the reference on onnxruntime's own inputs."""
    net = _net(spec)
    opt, log = optimize(net, 3)
    model = export_onnx(opt)
    check_valid(model)
    assert {n.domain for n in model.graph.node} <= STANDARD_DOMAINS
    x = {v.name: np.random.default_rng(3).standard_normal(v.type.concrete(2)).astype(np.float32)
         for v in net.graph.inputs}
    assert per_node_check(opt, model, x) == len(opt.graph.nodes)
