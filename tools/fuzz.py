"""Long fuzzing runs, beyond what the test suite runs.

    python tools/fuzz.py --differential 1000 [--start 0] [--wide] [--size 8]

--differential N: N random networks (graphconv/testing/random_cnn.py, seeds start..start+N-1) through the reference
executor in float64 and the llvm backend (-O0/-O2/-O3, 1 and 2 threads) and onnxruntime in float32
(graphconv/testing/differential.py); prints every disagreement with its seed and the network's layers, and exits 1
if there was any. --wide draws convolutions of 16, 32, 48 and 17 channels, which reach the blocked NCHW16c kernels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--differential", type=int, metavar="N", required=True, help="how many random networks")
    p.add_argument("--start", type=int, default=0, metavar="S", help="the first seed (default 0)")
    p.add_argument("--wide", action="store_true", help="convolutions of 16-48 channels (blocked kernels)")
    p.add_argument("--size", type=int, default=8, help="input height and width (default 8)")
    args = p.parse_args(argv)

    from tqdm import tqdm

    from graphconv.llvm.runtime import LLVMModel
    from graphconv.testing.differential import compare
    from graphconv.testing.random_cnn import NARROW, WIDE, random_cnn

    LLVMModel.min_parallel_flops = 0  # small networks too: split every layer between the threads asked for
    widths = WIDE if args.wide else NARROW
    failed, t0 = 0, time.perf_counter()
    seeds = range(args.start, args.start + args.differential)
    for seed in tqdm(seeds, unit="net", disable=None):
        case = None
        try:
            case = random_cnn(seed, dtype="float32", size=args.size, widths=widths)
            problems = [m.line() for m in compare(case)]
        except Exception as e:  # noqa: BLE001 - a crash of the generator or of a backend is a finding too
            problems = [f"{'generating' if case is None else 'running'} it raised {type(e).__name__}: {e}"]
        for line in problems:
            failed += 1
            layers = "\n          ".join(case.description) if case is not None else "(not generated)"
            tqdm.write(f"seed {seed}: {line}\n  layers: {layers}")
    print(f"{len(seeds)} random networks (seeds {seeds.start}..{seeds.stop - 1}, {'wide' if args.wide else 'narrow'},"
          f" {args.size}x{args.size}): {failed} disagreements, {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
