#!/usr/bin/env python
"""Print the ONNX node conformance report of graphconv's importer: every onnx backend node test case whose op
types graphconv imports, with pass / fail / excluded (and why)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "onnx"))

from import_helpers import conformance_report  # noqa: E402


def main() -> int:
    report = conformance_report()
    by = {"pass": [], "fail": [], "excluded": []}
    for name, (status, detail) in sorted(report.items()):
        by[status].append((name, detail))
    for status in ("fail", "excluded", "pass"):
        print(f"== {status} ({len(by[status])})")
        for name, detail in by[status]:
            print(f"  {name}" + (f": {detail}" if detail else ""))
    selected = len(by["pass"]) + len(by["fail"])
    print(f"\n{len(by['pass'])}/{selected} selected cases pass; {len(by['excluded'])} excluded")
    return 1 if by["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
