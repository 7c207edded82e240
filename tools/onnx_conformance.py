#!/usr/bin/env python
"""Print the ONNX node conformance report of graphconv's importer: every onnx backend node test case whose op
types graphconv imports, with pass / fail / excluded (and why).

    python tools/onnx_conformance.py                  # on the reference executor
    python tools/onnx_conformance.py --backend llvm   # compiled by the llvm backend"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "onnx"))

from import_helpers import conformance_report  # noqa: E402


def main() -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("reference", "llvm"), default="reference")
    report = conformance_report(p.parse_args().backend)
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
