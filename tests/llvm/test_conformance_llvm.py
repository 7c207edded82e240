"""The onnx package's node test cases graphconv imports (tests/onnx/test_conformance.py), compiled by the llvm
backend: every selected case passes at the case's own tolerances. `python tools/onnx_conformance.py --backend llvm`
prints the full report."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "onnx"))
from import_helpers import conformance_report  # noqa: E402


def test_conformance_through_llvm(capsys):
    report = conformance_report("llvm")
    reference = conformance_report("reference")
    passed = sorted(k for k, (s, _) in report.items() if s == "pass")
    failed = {k: d for k, (s, d) in report.items() if s == "fail"}
    excluded = {k for k, (s, _) in report.items() if s == "excluded"}
    with capsys.disabled():
        print(f"\nonnx node conformance through llvm: {len(passed)}/{len(passed) + len(failed)} selected cases pass; "
              f"{len(excluded)} excluded")
    assert not failed, failed
    # the same cases are selected as on the reference executor
    assert excluded == {k for k, (s, _) in reference.items() if s == "excluded"}
    assert len(passed) >= 100
