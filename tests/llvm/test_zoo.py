"""Every zoo spec through the llvm backend: the same outputs as the reference executor (rtol 1e-4, atol 1e-5) at
batch 1 and 3, for threads 1 and 2, at -O0, -O2 and -O3, and bit-identical across repeated runs.

The reference runs in float64, so the tolerance is all the backend's float32 rounding. ResNet-101/152 and GoogLeNet
with random weights amplify float32 rounding beyond atol 1e-5 whatever computes them (graphconv's own float32
reference misses the float64 result by more: tools/onnx_zoo_drift.py), so they are compiled in float64 — the same
kernels with double vectors — and compared end to end at the same tolerance. ResNet-50 is on the edge: on the inputs
below its float32 logits miss the float64 ones by 1.03e-5 in graphconv's float32 reference, 8.6e-6 in onnxruntime and
1.07e-5 here (at |y| <= 0.25), so it is checked in float64 too; its float32 kernels are the ones ResNet-18/34 and the
per-op tests check in float32."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import graphconv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "onnx"))
from test_export_helpers import calibrate  # noqa: E402
from test_export_zoo import END_TO_END_TOO_CHAOTIC, SPECS, ZOO  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
FLOAT64_END_TO_END = END_TO_END_TOO_CHAOTIC | {"resnet50"}


def _net(key: str):
    spec, params = ZOO[key]
    net = graphconv.load(SPECS / f"{spec}.gc", seed=0, **params)
    calibrate(net, {v.name: np.random.default_rng(1).standard_normal(v.type.concrete(8)) for v in net.graph.inputs})
    return net


# The default suite runs every spec at -O3 (what users get; ResNet-101/152, deeper copies of ResNet-50's blocks,
# only in the slow run) and a representative set at -O0 and -O2 as well; the whole matrix runs with the slow tests
# (tools/run_slow_tests.sh).
FAST_LEVELS = {"lenet5", "sobel", "cifar_cnn", "alexnet-lrn", "resnet18", "mobilenet_v2"}
DEEP_COPIES = {"resnet101", "resnet152"}
CASES = [pytest.param(key, level, marks=() if (level == 3 and key not in DEEP_COPIES) or key in FAST_LEVELS
                      else pytest.mark.slow)
         for key in sorted(ZOO) for level in (0, 2, 3)]


@pytest.mark.parametrize("key,level", CASES)
def test_zoo_matches_reference(key, level):
    net = _net(key)
    dtype = "float64" if key in FLOAT64_END_TO_END else "float32"
    refs = {}
    for threads in (1, 2):
        model = graphconv.compile(net, backend="llvm", threads=threads, opt_level=level, dtype=dtype)
        for batch in (1, 3):
            rng = np.random.default_rng(batch)
            xs = {v.name: rng.standard_normal(v.type.concrete(batch)) for v in net.graph.inputs}
            if batch not in refs:
                refs[batch] = graphconv.compile(net, dtype="float64").run(xs)
            got = model.run({k: v.astype(dtype) for k, v in xs.items()})
            for name, want in refs[batch].items():
                np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=ATOL,
                                           err_msg=f"{key} {name} -O{level} threads={threads} batch={batch}")
            again = model.run({k: v.astype(dtype) for k, v in xs.items()})
            for name in got:
                assert np.array_equal(got[name], again[name]), f"{key} {name}: repeated run differs"
