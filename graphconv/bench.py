"""Benchmark: graphconv's LLVM backend beside onnxruntime, in one process, on the same model and thread count.

    graphconv bench [MODEL ...] [--batch 1,8] [--threads 2] [--min-time 2] [--json]
    python tools/bench.py ...                      (the same)

For each model (a zoo spec name such as resnet50, or a path to a spec or an .onnx file) and batch size it builds the
network with seeded weights, compiles it with the llvm backend (timed with the compile cache off), exports the same
network to ONNX and opens an onnxruntime CPU session with the same number of intra-op threads, checks that both agree,
then times both with a warm-up and the median of blocks of runs that alternate between the two (so drift on the
machine hits both alike; the first run of a block is not counted, see _time_pair) for at least `min_time` seconds
each. Printed per row: both medians, the ratio graphconv /
onnxruntime (below 1 is faster), graphconv's GFLOP/s (2 FLOP per multiply-accumulate), the compile time, and the
memory graphconv's run needs (weights blob + arena + outputs) with the process's peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ZOO = ["lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "mobilenet_v2"]
SPECS = Path(__file__).resolve().parent.parent / "specs"


@dataclass
class Row:
    model: str
    batch: int
    threads: int
    graphconv_ms: float
    onnxruntime_ms: float
    ratio: float
    gflops: float
    compile_s: float
    memory_mb: float
    peak_rss_mb: float
    max_abs_diff: float
    runs: int


def _spec_path(model: str) -> str:
    if os.path.exists(model):
        return model
    path = SPECS / f"{model}.gc"
    if not path.exists():
        from .errors import GraphconvError

        raise GraphconvError(f"no model {model!r}: give a zoo name ({', '.join(ZOO)}) or a spec/.onnx path")
    return str(path)


def _time_pair(fa, fb, min_time: float, warmup: int = 3, block: float = 0.25) -> tuple[list[float], list[float]]:
    """Alternate blocks of about `block` seconds of fa and of fb until each has run for min_time seconds; per-call
    times of each. The first call of a block is not counted: onnxruntime's threads keep spinning for a while after a
    run and would steal the cores from whatever runs next (and a block's first call pays for that)."""
    for _ in range(warmup):
        fa()
        fb()
    ta: list[float] = []
    tb: list[float] = []
    while sum(ta) < min_time or sum(tb) < min_time or len(ta) < 5 or len(tb) < 5:
        for f, out in ((fa, ta), (fb, tb)):
            f()
            spent = 0.0
            calls = 0
            while spent < block or calls < 2:
                t0 = time.perf_counter()
                f()
                dt = time.perf_counter() - t0
                out.append(dt)
                spent += dt
                calls += 1
    return ta, tb


def bench_model(model: str, batch: int, threads: int, min_time: float, opt_level: int = 3,
                profile: int = 0) -> Row:
    import onnxruntime as ort

    import graphconv
    from .llvm.runtime import LLVMModel
    from .onnx.export import export_onnx
    from .summary import summarize

    net = graphconv.load(_spec_path(model), seed=0)
    macs = summarize(net.graph)["total_macs"]
    t0 = time.perf_counter()
    gc_model = LLVMModel(net, "float32", threads=threads, opt_level=opt_level, cache=False)
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    xs = {v.name: rng.standard_normal(v.type.concrete(batch)).astype(np.float32) for v in net.graph.inputs}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        export_onnx(net, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ours = gc_model.run(xs)
    theirs = dict(zip(names, sess.run(None, xs)))
    diff = max(float(np.max(np.abs(ours[k] - theirs[k]))) for k in names)
    ta, tb = _time_pair(lambda: gc_model.run(xs), lambda: sess.run(None, xs), min_time)
    gc_ms = statistics.median(ta) * 1e3
    ort_ms = statistics.median(tb) * 1e3
    if profile:
        layers = gc_model.profile(xs)
        total = sum(ms for _, ms in layers)
        print(f"  {model} batch {batch}: {len(layers)} layers, {total:.3f} ms in layers; slowest:")
        for name, ms in sorted(layers, key=lambda t: -t[1])[:profile]:
            print(f"    {ms:8.3f} ms {100 * ms / total:5.1f}%  {name}")
    lay = gc_model.layout
    memory = lay.blob_bytes + lay.arena_bytes(batch, threads) + sum(a.nbytes for a in ours.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Row(model, batch, threads, gc_ms, ort_ms, gc_ms / ort_ms, 2 * macs * batch / (gc_ms * 1e-3) / 1e9,
               compile_s, memory / 2**20, peak, diff, len(ta))


def format_table(rows: list[Row]) -> str:
    head = (f"{'model':<14}{'batch':>6}{'thr':>4}{'graphconv ms':>14}{'onnxrt ms':>11}{'ratio':>7}{'GFLOP/s':>9}"
            f"{'compile s':>11}{'mem MiB':>9}{'peak RSS':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.model:<14}{r.batch:>6}{r.threads:>4}{r.graphconv_ms:>14.3f}{r.onnxruntime_ms:>11.3f}"
                     f"{r.ratio:>7.2f}{r.gflops:>9.1f}{r.compile_s:>11.2f}{r.memory_mb:>9.1f}{r.peak_rss_mb:>10.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="graphconv bench", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def add_arguments(p) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"zoo names or spec paths (default: {' '.join(ZOO)})")
    p.add_argument("--batch", default="1,8", metavar="B1,B2", help="batch sizes (default 1,8)")
    p.add_argument("--threads", type=int, default=2, metavar="T", help="threads for both runtimes (default 2)")
    p.add_argument("--min-time", type=float, default=2.0, metavar="S",
                   help="seconds of timed runs per runtime and row (default 2)")
    p.add_argument("-O", dest="opt_level", type=int, default=3, choices=(0, 1, 2, 3), metavar="LEVEL",
                   help="graphconv's optimization level (default 3)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="also print graphconv's K slowest layers per row (from a build that times each layer)")
    p.add_argument("--train", action="store_true",
                   help="time training steps beside PyTorch instead (lenet5 batch 64, resnet18 32x32 batch 32; "
                        "needs torch)")
    p.add_argument("--train-backend", default="llvm", choices=("llvm", "onnx", "reference"),
                   help="graphconv backend of the training benchmark (default llvm)")


def run(args) -> int:
    if getattr(args, "train", False):
        return run_train(args)
    batches = [int(b) for b in str(args.batch).split(",") if b.strip()]
    rows = []
    for model in args.models or ZOO:
        for b in batches:
            row = bench_model(model, b, args.threads, args.min_time, args.opt_level, args.profile)
            rows.append(row)
            if not args.json:
                print(format_table([row]).splitlines()[-1] if len(rows) > 1 else format_table([row]), flush=True)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


def run_train(args) -> int:
    from .bench_train import TRAIN_MODELS, bench_train, format_train_table

    rows = []
    for model in args.models or list(TRAIN_MODELS):
        row = bench_train(model, args.threads, args.min_time, args.train_backend)
        rows.append(row)
        if not args.json:
            table = format_train_table([row])
            print(table.splitlines()[-1] if len(rows) > 1 else table, flush=True)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
