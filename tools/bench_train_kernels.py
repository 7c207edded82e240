"""Time the LLVM backend's training kernels on the layer shapes of the training benchmarks: ResNet-18 (10 classes) at
3x32x32, batch 32, and LeNet-5 at batch 64, and print GFLOP/s beside this machine's peak.

    python tools/bench_train_kernels.py                    # every bench_* function below, threads 1 and 2
    python tools/bench_train_kernels.py weight --threads 2  # only the ones whose name contains "weight"

Each kernel is timed inside a graph that runs it REPEAT times in a row (the same inputs, its own output each time),
from the profiling build's per-layer cycle counts (`LLVMModel.profile`): the median over the copies after the
first, so waking the worker threads and Python's call overhead are not counted. Weight gradients live in the arena
and a `neg` reads each, as in a training step (where the optimizer update reads them); only the gradient's own
layers are timed. Each family of kernels adds a
`bench_<what>(threads, repeat)` function; `main` runs every one whose name matches the command line.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

PEAK_GFLOPS_PER_CORE = 116.0  # float32 FMA peak of one core of the reference machine (AVX-512)
REPEAT = 6


def profile_layers(graph, feed: dict, threads: int, repeat: int = 5, runs: int = 8,
                   cache: bool = True) -> list[tuple[str, float]]:
    """[(layer, milliseconds)] in execution order of a graph compiled at -O0 with `threads` (the work always
    split): for each layer the smallest of `runs` medians of `repeat` runs."""
    import graphconv
    from graphconv.llvm.runtime import LLVMModel
    from graphconv.network import Network

    LLVMModel.min_parallel_flops = 0
    model = graphconv.compile(Network(graph, {}), backend="llvm", threads=threads, opt_level=0, cache=cache)
    rows = [model.profile(feed, repeat=repeat) for _ in range(runs)]
    return [(name, min(r[k][1] for r in rows)) for k, (name, _) in enumerate(rows[0])]


# -- weight gradients (graphconv/llvm/kernels/train_conv_weight.py) ---------------------------------------------------

# (name, count in the network, batch, x shape, dy shape, conv attrs or None for dense)
WEIGHT_LAYERS = [
    ("resnet18.conv1 7x7/2", 1, 32, (3, 32, 32), (64, 16, 16), dict(kernel=(7, 7), stride=(2, 2), padding=(3,) * 4)),
    ("resnet18.layer1 3x3", 4, 32, (64, 8, 8), (64, 8, 8), dict(kernel=(3, 3), padding=(1,) * 4)),
    ("resnet18.layer2.0.conv1 /2", 1, 32, (64, 8, 8), (128, 4, 4),
     dict(kernel=(3, 3), stride=(2, 2), padding=(1,) * 4)),
    ("resnet18.layer2.0.down 1x1/2", 1, 32, (64, 8, 8), (128, 4, 4), dict(kernel=(1, 1), stride=(2, 2))),
    ("resnet18.layer2 3x3", 3, 32, (128, 4, 4), (128, 4, 4), dict(kernel=(3, 3), padding=(1,) * 4)),
    ("resnet18.layer3.0.conv1 /2", 1, 32, (128, 4, 4), (256, 2, 2),
     dict(kernel=(3, 3), stride=(2, 2), padding=(1,) * 4)),
    ("resnet18.layer3.0.down 1x1/2", 1, 32, (128, 4, 4), (256, 2, 2), dict(kernel=(1, 1), stride=(2, 2))),
    ("resnet18.layer3 3x3", 3, 32, (256, 2, 2), (256, 2, 2), dict(kernel=(3, 3), padding=(1,) * 4)),
    ("resnet18.layer4.0.conv1 /2", 1, 32, (256, 2, 2), (512, 1, 1),
     dict(kernel=(3, 3), stride=(2, 2), padding=(1,) * 4)),
    ("resnet18.layer4.0.down 1x1/2", 1, 32, (256, 2, 2), (512, 1, 1), dict(kernel=(1, 1), stride=(2, 2))),
    ("resnet18.layer4 3x3", 3, 32, (512, 1, 1), (512, 1, 1), dict(kernel=(3, 3), padding=(1,) * 4)),
    ("resnet18.fc", 1, 32, (512,), (10,), None),
    ("lenet5.c1 5x5", 1, 64, (1, 32, 32), (6, 28, 28), dict(kernel=(5, 5))),
    ("lenet5.c3 5x5", 1, 64, (6, 14, 14), (16, 10, 10), dict(kernel=(5, 5))),
    ("lenet5.f5", 1, 64, (400,), (120,), None),
    ("lenet5.f6", 1, 64, (120,), (84,), None),
    ("lenet5.f7", 1, 64, (84,), (10,), None),
]


def _weight_flops(x, dy, attrs, batch: int) -> tuple[float, float]:
    """(nominal, useful) FLOPs of one weight gradient: useful leaves out the products with padding (taps outside
    the input at some output positions), which the kernel never computes."""
    from graphconv.llvm.kernels.train_conv_weight import _range

    if attrs is None:
        n = 2.0 * batch * x[0] * dy[0] * int(np.prod(x[1:], dtype=np.int64))
        return n, n
    (kh, kw), (sh, sw) = attrs["kernel"], attrs.get("stride", (1, 1))
    top, left = attrs.get("padding", (0,) * 4)[:2]
    rows = sum(b - a for a, b in (_range(dy[1], x[1], sh, 1, top, i) for i in range(kh)))
    cols = sum(b - a for a, b in (_range(dy[2], x[2], sw, 1, left, j) for j in range(kw)))
    base = 2.0 * batch * x[0] * dy[0]
    return base * kh * kw * dy[1] * dy[2], base * rows * cols


def bench_weight_grads(threads=(1, 2), repeat: int = REPEAT) -> None:
    """conv2d_grad_weight and dense_grad_weight on the benchmark networks' layers: ms per call (both lowered steps:
    the transposition of dy, then the GEMM), GFLOP/s of the nominal and the useful FLOPs, % of the threads' peak."""
    from graphconv.ir.graph import Graph, TensorType
    from graphconv.ops.build import add_op

    print("weight gradients (conv2d_grad_weight, dense_grad_weight); GF/s: nominal / useful (no padding products)")
    head = f"{'layer':30s} {'MFLOP':>13s}"
    for t in threads:
        head += f" | {f'{t} thread' + ('s' if t > 1 else ''):>9s} {'GF/s':>13s} {'%peak':>5s}"
    print(head)
    totals = {"resnet18": {t: [0.0, 0.0] for t in threads}, "lenet5": {t: [0.0, 0.0] for t in threads}}
    for name, count, batch, xs, dys, attrs in WEIGHT_LAYERS:
        g = Graph("gw")
        x = g.add_input("x", TensorType(("N", *xs)))
        dy = g.add_input("dy", TensorType(("N", *dys)))
        op = "dense_grad_weight" if attrs is None else "conv2d_grad_weight"
        for r in range(repeat):  # dW in the arena, read by the next layer, as the optimizer update reads it
            g.set_output(f"dw{r}", add_op(g, f"use{r}", "neg", [add_op(g, f"gw{r}", op, [x, dy], **(attrs or {}))]))
        rng = np.random.default_rng(0)
        feed = {"x": rng.standard_normal((batch, *xs)).astype(np.float32),
                "dy": rng.standard_normal((batch, *dys)).astype(np.float32)}
        nominal, useful = _weight_flops(xs, dys, attrs, batch)
        line = f"{name:30s} {nominal / 1e6:6.1f}/{useful / 1e6:6.1f}"
        for t in threads:
            layers = profile_layers(g, feed, t)
            per_copy = [sum(ms for lname, ms in layers if lname.startswith(f"gw{r} ")) for r in range(repeat)]
            ms = float(np.median(per_copy[1:] if repeat > 1 else per_copy))
            line += (f" | {ms:7.3f}ms {nominal / ms / 1e6:6.1f}/{useful / ms / 1e6:6.1f} "
                     f"{100 * useful / ms / 1e6 / (PEAK_GFLOPS_PER_CORE * t):5.1f}")
            net = name.split(".")[0]
            totals[net][t][0] += count * ms
            totals[net][t][1] += count * useful
        print(line)
    for net, by in totals.items():
        parts = [f"{t} thread{'s' if t > 1 else ''}: {ms:.2f} ms ({fl / ms / 1e6:.0f} useful GF/s, floor "
                 f"{fl / 1e6 / (PEAK_GFLOPS_PER_CORE * t):.2f} ms)" for t, (ms, fl) in by.items()]
        print(f"  {net} weight gradients per step: " + "; ".join(parts))


# -- input gradients (graphconv/llvm/kernels/train_conv_input.py) ----------------------------------------------------

# (name, count in the network, batch, x shape, dy shape, conv attrs or None for dense); the stems (conv1, c1) read
# the image, whose gradient no training step computes
INPUT_LAYERS = [
    ("resnet18.layer1 3x3", 4, 32, (64, 8, 8), (64, 8, 8), dict(kernel=(3, 3), padding=(1,) * 4)),
    ("resnet18.layer2.0.conv1 /2", 1, 32, (64, 8, 8), (128, 4, 4),
     dict(kernel=(3, 3), stride=(2, 2), padding=(1,) * 4)),
    ("resnet18.layer2.0.down 1x1/2", 1, 32, (64, 8, 8), (128, 4, 4), dict(kernel=(1, 1), stride=(2, 2))),
    ("resnet18.layer2 3x3", 3, 32, (128, 4, 4), (128, 4, 4), dict(kernel=(3, 3), padding=(1,) * 4)),
    ("resnet18.layer3.0.conv1 /2", 1, 32, (128, 4, 4), (256, 2, 2),
     dict(kernel=(3, 3), stride=(2, 2), padding=(1,) * 4)),
    ("resnet18.layer3.0.down 1x1/2", 1, 32, (128, 4, 4), (256, 2, 2), dict(kernel=(1, 1), stride=(2, 2))),
    ("resnet18.layer3 3x3", 3, 32, (256, 2, 2), (256, 2, 2), dict(kernel=(3, 3), padding=(1,) * 4)),
    ("resnet18.layer4.0.conv1 /2", 1, 32, (256, 2, 2), (512, 1, 1),
     dict(kernel=(3, 3), stride=(2, 2), padding=(1,) * 4)),
    ("resnet18.layer4.0.down 1x1/2", 1, 32, (256, 2, 2), (512, 1, 1), dict(kernel=(1, 1), stride=(2, 2))),
    ("resnet18.layer4 3x3", 3, 32, (512, 1, 1), (512, 1, 1), dict(kernel=(3, 3), padding=(1,) * 4)),
    ("resnet18.fc", 1, 32, (512,), (10,), None),
    ("lenet5.c3 5x5", 1, 64, (6, 14, 14), (16, 10, 10), dict(kernel=(5, 5))),
    ("lenet5.f5", 1, 64, (400,), (120,), None),
    ("lenet5.f6", 1, 64, (120,), (84,), None),
    ("lenet5.f7", 1, 64, (84,), (10,), None),
]


def _input_flops(x, dy, attrs, batch: int) -> tuple[float, float]:
    """(nominal, useful) FLOPs of one input gradient: useful counts only the taps that meet dy (no padding)."""
    from graphconv.llvm.kernels.train_conv_input import _Axis

    if attrs is None:
        n = 2.0 * batch * x[0] * dy[0]
        return n, n
    (kh, kw), (sh, sw) = attrs["kernel"], attrs.get("stride", (1, 1))
    top, left = attrs.get("padding", (0,) * 4)[:2]
    rows = sum(len(_Axis(x[1], dy[1], kh, sh, 1, top, True).taps(i)) for i in range(x[1]))
    cols = sum(len(_Axis(x[2], dy[2], kw, sw, 1, left, True).taps(j)) for j in range(x[2]))
    base = 2.0 * batch * x[0] * dy[0]
    return base * kh * kw * dy[1] * dy[2], base * rows * cols


def bench_input_grads(threads=(1, 2), repeat: int = REPEAT) -> None:
    """conv2d_grad_input and dense_grad_input on the benchmark networks' layers: ms per call (the kernel packs the
    weight blocks it reads on every call: included), GFLOP/s of the nominal and the useful FLOPs, % of the threads'
    peak, and per network the total beside the floor (useful FLOPs at peak). The weight is a graph input here: the
    kernel reads a parameter the same way (it packs from the weight itself, which a training step updates)."""
    from graphconv.ir.graph import Graph, TensorType
    from graphconv.ops.build import add_op

    print("input gradients (conv2d_grad_input, dense_grad_input); GF/s: nominal / useful (no padding products)")
    head = f"{'layer':30s} {'MFLOP':>13s}"
    for t in threads:
        head += f" | {f'{t} thread' + ('s' if t > 1 else ''):>9s} {'GF/s':>13s} {'%peak':>5s}"
    print(head)
    totals = {"resnet18": {t: [0.0, 0.0] for t in threads}, "lenet5": {t: [0.0, 0.0] for t in threads}}
    for name, count, batch, xs, dys, attrs in INPUT_LAYERS:
        g = Graph("gi")
        dy = g.add_input("dy", TensorType(("N", *dys)))
        if attrs is None:
            w = g.add_input("w", TensorType((dys[0], xs[0])))
        else:
            w = g.add_input("w", TensorType((dys[0], xs[0], *attrs["kernel"])))
        for r in range(repeat):
            if attrs is None:
                out = add_op(g, f"gi{r}", "dense_grad_input", [dy, w])
            else:
                geo = {k: v for k, v in attrs.items() if k != "kernel"}
                out = add_op(g, f"gi{r}", "conv2d_grad_input", [dy, w], size=xs[1:], **geo)
            g.set_output(f"dx{r}", out)
        rng = np.random.default_rng(0)
        feed = {"dy": rng.standard_normal((batch, *dys)).astype(np.float32),
                "w": rng.standard_normal(tuple(w.type.shape)).astype(np.float32)}
        nominal, useful = _input_flops(xs, dys, attrs, batch)
        line = f"{name:30s} {nominal / 1e6:6.1f}/{useful / 1e6:6.1f}"
        for t in threads:
            layers = profile_layers(g, feed, t)
            rows = layers.items() if isinstance(layers, dict) else layers
            per_copy = [sum(ms for lname, ms in rows if lname.startswith(f"gi{r} ")) for r in range(repeat)]
            ms = float(np.median(per_copy[1:] if repeat > 1 else per_copy))
            line += (f" | {ms:7.3f}ms {nominal / ms / 1e6:6.1f}/{useful / ms / 1e6:6.1f} "
                     f"{100 * useful / ms / 1e6 / (PEAK_GFLOPS_PER_CORE * t):5.1f}")
            net = name.split(".")[0]
            totals[net][t][0] += count * ms
            totals[net][t][1] += count * useful
        print(line)
    for net, by in totals.items():
        parts = [f"{t} thread{'s' if t > 1 else ''}: {ms:.2f} ms ({fl / ms / 1e6:.0f} useful GF/s, floor "
                 f"{fl / 1e6 / (PEAK_GFLOPS_PER_CORE * t):.2f} ms)" for t, (ms, fl) in by.items()]
        print(f"  {net} input gradients per step: " + "; ".join(parts))


# (new bench_<what>(threads, repeat) functions go above this line: main finds them by name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("only", nargs="*", help="run the bench_* functions whose name contains one of these")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=REPEAT)
    args = ap.parse_args(argv)
    fns = [(k, v) for k, v in sorted(globals().items()) if k.startswith("bench_") and callable(v)]
    for name, fn in fns:
        if args.only and not any(w in name for w in args.only):
            continue
        fn(threads=tuple(args.threads), repeat=args.repeat)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
