"""Differential test of the whole optimizer: seeded random networks (chains and branches of convolutions,
batchnorms, activations, residual adds, concats, pools, 1×1 convolutions, dense heads, dropouts and identities) at
-O1, -O2 and -O3 give the same outputs as unoptimized on the reference executor, and their IR verifies after every
pass. Weights are float64 and the runs float64, so any difference is the optimizer's."""

from __future__ import annotations

import numpy as np
import pytest

import graphconv
from graphconv.ir.graph import Graph, TensorType
from graphconv.ops.build import add_op
from graphconv.passes import optimize

ACTS = [("relu", {}), ("clip", {"min": 0.0, "max": 6.0}), ("sigmoid", {}), ("tanh", {}),
        ("leaky_relu", {"alpha": 0.1})]


def random_network(seed: int):
    rng = np.random.default_rng(seed)
    g = Graph(f"random{seed}")
    x = g.add_input("x", TensorType(("N", int(rng.choice([3, 4, 8, 16])), 12, 12), "float64"))
    live = [x]
    k = 0

    def name(op):
        nonlocal k
        k += 1
        return f"{op}{k}"

    for _ in range(int(rng.integers(4, 16))):
        v = live[-1] if rng.random() < 0.7 else live[int(rng.integers(len(live)))]  # mostly a chain, some branches
        c, h = int(v.type.shape[1]), int(v.type.shape[2])
        choice = rng.integers(10)
        if choice <= 2:
            kernel = int(rng.choice([1, 1, 3]))
            y = add_op(g, name("conv"), "conv2d", [v], out_channels=int(rng.choice([4, 8, 16])), kernel=kernel,
                       padding=kernel // 2, bias=bool(rng.integers(2)))
        elif choice == 3:
            y = add_op(g, name("bn"), "batchnorm", [v])
        elif choice == 4:
            op, attrs = ACTS[int(rng.integers(len(ACTS)))]
            y = add_op(g, name(op), op, [v], **attrs)
        elif choice == 5:
            same = [u for u in live if u.type == v.type and u is not v]
            if not same:
                continue
            y = add_op(g, name("add"), "add", [v, same[int(rng.integers(len(same)))]])
        elif choice == 6 and h >= 4:
            op = ["max_pool2d", "avg_pool2d"][int(rng.integers(2))]
            extra = {"count_include_pad": bool(rng.integers(2))} if op == "avg_pool2d" else {}
            y = add_op(g, name(op), op, [v], kernel=int(rng.choice([2, 3])), stride=2, padding=1,
                       ceil_mode=bool(rng.integers(2)), **extra)
        elif choice == 7:
            same = [u for u in live if u.type.shape[2:] == v.type.shape[2:] and u.type.rank == 4 and u is not v]
            if not same:
                continue
            y = add_op(g, name("concat"), "concat", [v, same[int(rng.integers(len(same)))]])
        elif choice == 8:
            y = add_op(g, name("dropout"), "dropout", [v], rate=0.3)
        else:
            y = add_op(g, name("identity"), "identity", [v])
        live.append(y)
    tail = live[-1]
    if rng.integers(2):
        tail = add_op(g, name("gap"), "global_avg_pool", [tail])
    tail = add_op(g, name("flatten"), "flatten", [tail])
    tail = add_op(g, name("fc"), "dense", [tail], units=5)
    if rng.integers(2):
        tail = add_op(g, name("fc"), "dense", [tail], units=3)
    g.set_output("logits", tail)
    if rng.integers(2) and len(live) > 2:  # a second output from the middle
        g.set_output("mid", live[len(live) // 2])
    net = graphconv.Network(g, seed=seed)
    w = {}
    for k_, arr in net.weights.items():  # batchnorm statistics that are not the identity
        if k_.endswith(("running_var", "running_mean")) or (k_.endswith(".weight") and arr.ndim == 1):
            lo, hi = (0.5, 2.0) if k_.endswith(("running_var", ".weight")) else (-1.0, 1.0)
            arr = rng.uniform(lo, hi, arr.shape)
        w[k_] = np.asarray(arr, np.float64)
    net.weights = w
    return net


@pytest.mark.parametrize("seed", range(150))
def test_random_network_keeps_its_function(seed):
    net = random_network(seed)
    x = {"x": np.random.default_rng(seed + 1000).standard_normal((2, *net.graph.inputs[0].type.shape[1:]))}
    want = graphconv.compile(net, dtype="float64").run(x)
    for level, target in ((1, "reference"), (2, "reference"), (3, "reference"), (3, "llvm")):
        opt, _ = optimize(net, level, target=target, verify_ir=True)
        got = graphconv.compile(opt, dtype="float64").run(x)
        assert list(got) == list(want)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-9 * max(1.0, np.abs(want[k]).max()),
                                       err_msg=f"{k} at -O{level} for {target}")
