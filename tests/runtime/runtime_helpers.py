"""Hand-built graphs for the runtime tests, made the way the spec lowering makes them:
check_attrs -> resolve -> params -> infer -> ir_attrs."""

from __future__ import annotations

from graphconv.errors import SourceLoc
from graphconv.ir.graph import Graph, TensorType
from graphconv.ops.build import add_op  # noqa: F401  (the tests build graphs the way the lowering does)


def small_cnn(size: int = 8) -> Graph:
    """image [N, 3, size, size] -> conv 3x3 (pad 1) -> batchnorm -> relu -> max_pool 2 -> conv 3x3 stride 2 ->
    global_avg_pool -> flatten -> dense(5): output `logits`; a residual-free chain with one of each kind."""
    g = Graph("small_cnn")
    x = g.add_input("image", TensorType(("N", 3, size, size)))
    h = add_op(g, "conv1", "conv2d", [x], out_channels=4, kernel=3, padding=1,
               loc=SourceLoc("net.gc", 3, 5, 6))
    h = add_op(g, "bn1", "batchnorm", [h])
    h = add_op(g, "relu1", "relu", [h])
    h = add_op(g, "pool1", "max_pool2d", [h], kernel=2)
    h = add_op(g, "conv2", "conv2d", [h], out_channels=6, kernel=3, stride=2, padding=1, bias=False)
    h = add_op(g, "gap", "global_avg_pool", [h])
    h = add_op(g, "flat", "flatten", [h])
    h = add_op(g, "fc", "dense", [h], units=5)
    g.set_output("logits", h)
    return g


def two_in_two_out() -> Graph:
    """a [N, 2, 4, 4], b [N, 2, 4, 4] -> s = add(a, b) -> r = relu(s); outputs: sum s, act r; plus a dead node."""
    g = Graph("pair")
    a = g.add_input("a", TensorType(("N", 2, 4, 4)))
    b = g.add_input("b", TensorType(("N", 2, 4, 4)))
    s = add_op(g, "s", "add", [a, b])
    add_op(g, "dead", "relu", [a])
    r = add_op(g, "r", "relu", [s])
    g.set_output("sum", s)
    g.set_output("act", r)
    return g
