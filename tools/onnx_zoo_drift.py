"""How far float32 results drift from float64 on every zoo spec, end to end: onnxruntime (float32) and graphconv's
reference executor (float32), each against the reference in float64, with the weights of tests/onnx/test_export_zoo.py
(seeded, calibrated). Prints the maximum absolute error and whether rtol 1e-4 / atol 1e-5 holds.

    python tools/onnx_zoo_drift.py [key ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "onnx"))

import graphconv  # noqa: E402
from graphconv.onnx.export import export_onnx  # noqa: E402
from test_export_helpers import ATOL, RTOL, session  # noqa: E402
from test_export_zoo import ZOO, _prepared  # noqa: E402


def main(keys: list[str]) -> None:
    print(f"{'spec':16} {'|out|max':>9} {'ort-f64':>9} {'ref32-f64':>9} {'ort-ref32':>9}  ort within rtol {RTOL:g}, "
          f"atol {ATOL:g} of f64 / of ref32")
    for key in keys or sorted(ZOO):
        net, inputs = _prepared(key)
        model = export_onnx(net)
        exact = graphconv.compile(net, dtype="float64").run(inputs)
        ref32 = graphconv.compile(net).run(inputs)
        ort = dict(zip(net.output_names, session(model, threads=2).run(None, inputs)))
        for name in exact:
            e, r, o = exact[name], ref32[name], ort[name]
            ok64 = np.allclose(o, e, rtol=RTOL, atol=ATOL)
            ok32 = np.allclose(o, r, rtol=RTOL, atol=ATOL)
            label = key if len(exact) == 1 else f"{key}:{name}"
            print(f"{label:16} {np.abs(e).max():9.3g} {np.abs(o - e).max():9.2e} {np.abs(r - e).max():9.2e} "
                  f"{np.abs(o - r).max():9.2e}  {'yes' if ok64 else 'NO'} / {'yes' if ok32 else 'NO'}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
