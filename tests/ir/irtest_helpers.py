"""Hand-built graphs for the IR tests, made the way the spec builder makes them:
check_attrs -> resolve -> params -> infer -> ir_attrs."""

from __future__ import annotations

import numpy as np

from graphconv.errors import SourceLoc
from graphconv.ir.graph import Graph, TensorType
from graphconv.ops.build import add_op  # noqa: F401  (the tests build graphs the way the lowering does)


def tiny(dtype: str = "float32", batch="N") -> Graph:
    """x -> conv (3x3 same) -> relu -> conv 1x1 (no bias) -> add(relu, conv1x1) -> y."""
    g = Graph("tiny")
    x = g.add_input("x", TensorType((batch, 3, 8, 8), dtype))
    c = add_op(g, "conv", "conv2d", [x], loc=SourceLoc("net.gc", 3, 5, 6), out_channels=4, kernel=3,
               padding="same")
    r = add_op(g, "act", "relu", [c], loc=SourceLoc("net.gc", 4, 5, 4))
    p = add_op(g, "proj", "conv2d", [r], out_channels=4, kernel=1, bias=False)
    s = add_op(g, "sum", "add", [r, p], loc=SourceLoc("net.gc", 6, 5, 3))
    g.set_output("y", s)
    return g


def rich() -> Graph:
    """Every parameter role, fixed data (weight and bias literals), frozen layers, a buffer, float64, metadata,
    a dead node, two outputs."""
    from graphconv.ir.graph import Init

    g = Graph("rich")
    g.meta = {"width": 2, "scale": 0.1, "name": "r\u00e9seau \"x\"", "sizes": (1, 2), "mix": [1, (2.5, None)],
              "init": Init("normal", (("std", 0.02),)), "flags": {"a": True, 3: "b"}, "nan": float("nan"),
              "inf": float("-inf")}
    x = g.add_input("image", TensorType(("N", 2, 5, 5), "float64"))
    k = np.arange(2 * 2 * 3 * 3, dtype=np.float64).reshape(2, 2, 3, 3) / 7.0
    a = add_op(g, "edge", "conv2d", [x], out_channels=2, weight=k, bias=[0.5, -1e-7], stride=2, padding=[1, 0, 1, 2])
    b = add_op(g, "frz", "conv2d", [a], out_channels=3, kernel=[1, 2], frozen=True, init=Init("normal", (("std", 0.01),)),
               bias_init=Init("constant", (("value", 0.25),)), dilation=1)
    dw = add_op(g, "dw", "conv2d", [x], depthwise=True, kernel=3, bias=False, flip=True)  # dead
    del dw
    r = add_op(g, "r", "relu", [b])
    g.add_param("stats.running_mean", TensorType((3,), "float64"), "buffer", Init("zeros"))
    g.set_output("feat", r)
    g.set_output("edges", a)
    return g
