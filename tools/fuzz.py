"""Long fuzzing runs, beyond what the test suite runs.

    python tools/fuzz.py --differential 1000 [--start 0] [--wide] [--size 8]
    python tools/fuzz.py --mutations

--mutations: every token of every zoo spec deleted, doubled and replaced by a hostile token
(graphconv/testing/mutate.py); each mutated spec must load or fail with located SpecErrors within 2 s, and never
raise anything else. Exits 1 on any finding.

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
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--differential", type=int, metavar="N", help="how many random networks")
    mode.add_argument("--mutations", action="store_true", help="mutate every token of every zoo spec")
    p.add_argument("--start", type=int, default=0, metavar="S", help="the first seed (default 0)")
    p.add_argument("--wide", action="store_true", help="convolutions of 16-48 channels (blocked kernels)")
    p.add_argument("--size", type=int, default=8, help="input height and width (default 8)")
    args = p.parse_args(argv)
    if args.mutations:
        return fuzz_mutations()

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


def fuzz_mutations() -> int:
    """Every mutation of every zoo spec: a graph, or located SpecErrors within 2 s; anything else is a finding."""
    from pathlib import Path

    from graphconv.errors import SpecError
    from graphconv.spec import load_graph_text
    from graphconv.testing.mutate import mutations

    specs = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.gc"))
    cases = errors = findings = 0
    t0 = time.perf_counter()
    for spec in specs:
        for what, text in mutations(spec.read_text(), spec.name):
            cases += 1
            start = time.perf_counter()
            try:
                load_graph_text(text, spec.name)
            except SpecError as e:
                errors += 1
                if any(d.loc is None for d in e.diagnostics):
                    findings += 1
                    print(f"{what}: an error without a place: {e}")
            except Exception as e:  # noqa: BLE001 - the findings this mode looks for
                findings += 1
                print(f"{what}: {type(e).__name__}: {e}")
            if time.perf_counter() - start > 2.0:
                findings += 1
                print(f"{what}: took {time.perf_counter() - start:.1f} s")
    print(f"{cases} mutated specs from {len(specs)} zoo specs: {errors} refused with located errors, "
          f"{cases - errors - findings} still valid, {findings} findings, {time.perf_counter() - t0:.1f} s")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
