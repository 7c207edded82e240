"""The onnx package's backend node test cases for every op type graphconv imports: import, run on the reference
executor, compare with the expected outputs at the case's tolerances. Cases graphconv cannot take (1-d/3-d pooling,
integer dtypes, shapes without a batch dimension first, ...) are excluded with their reason; every selected case
must pass. `python tools/onnx_conformance.py` prints the full report."""

from __future__ import annotations

import pytest

from import_helpers import conformance_report


@pytest.fixture(scope="module")
def report():
    return conformance_report()


def test_conformance(report, capsys):
    passed = sorted(k for k, (s, _) in report.items() if s == "pass")
    failed = {k: d for k, (s, d) in report.items() if s == "fail"}
    excluded = {k: d for k, (s, d) in report.items() if s == "excluded"}
    selected = len(passed) + len(failed)
    with capsys.disabled():
        print(f"\nonnx node conformance: {len(passed)}/{selected} selected cases pass; {len(excluded)} excluded")
    assert not failed, failed
    assert len(passed) >= 100
    assert "test_conv_with_strides_padding" in passed and "test_batchnorm_example" in passed
