import math

import numpy as np

from graphconv.errors import SourceLoc
from graphconv.ir import format_value, print_graph
from graphconv.ir.graph import Graph, Init, TensorType

from irtest_helpers import add_op, rich, tiny

TINY = """\
graph tiny(%x: f32[N, 3, 8, 8]) {
  params: 3 (128 elements)
  param %conv.weight: f32[4, 3, 3, 3] trainable init=he_normal
  param %conv.bias: f32[4] trainable init=zeros
  param %proj.weight: f32[4, 4, 1, 1] trainable init=he_normal
  %conv = conv2d(%x, weight=%conv.weight, bias=%conv.bias) {out_channels=4, kernel=(3, 3), stride=(1, 1), \
padding=(1, 1, 1, 1), dilation=(1, 1), groups=1, bias=true, flip=false} : f32[N, 4, 8, 8]   # net.gc:3:5
  %act = relu(%conv) : f32[N, 4, 8, 8]   # net.gc:4:5
  %proj = conv2d(%act, weight=%proj.weight) {out_channels=4, kernel=(1, 1), stride=(1, 1), padding=(0, 0, 0, 0), \
dilation=(1, 1), groups=1, bias=false, flip=false} : f32[N, 4, 8, 8]
  %sum = add(%act, %proj) : f32[N, 4, 8, 8]   # net.gc:6:5
  return y=%sum
}
"""


def test_tiny_exact():
    assert print_graph(tiny()) == TINY


def test_without_locations_and_params():
    text = print_graph(tiny(), locations=False, params=False)
    assert "#" not in text and "param %" not in text
    assert "  params: 3 (128 elements)\n" in text
    assert text.splitlines()[2].startswith("  %conv = conv2d(")


def test_deterministic():
    a, b = rich(), rich()
    assert print_graph(a) == print_graph(a) == print_graph(b)
    # attribute insertion order does not matter: schema order is used
    n = a.node("frz")
    n.attrs = dict(reversed(list(n.attrs.items())))
    assert print_graph(a) == print_graph(b)


def test_rich_details():
    text = print_graph(rich())
    lines = text.splitlines()
    assert lines[0] == "graph rich(%image: f64[N, 2, 5, 5]) {"
    assert lines[1] == ('  meta: flags={3: "b", "a": true}, inf=-inf, init=normal(std=0.02), mix=[1, (2.5, none)], '
                        'name="réseau \\"x\\"", nan=nan, scale=0.1, sizes=(1, 2), width=2')
    assert lines[2] == "  params: 5 (71 elements: 18 trainable, 15 frozen, 38 fixed)"
    assert lines[3] == "  buffers: 1 (3 elements)"
    assert "  param %edge.bias: f64[2] fixed init=zeros data=[0.5, -1e-07]:float64" in lines
    assert ("  param %edge.weight: f64[2, 2, 3, 3] fixed init=he_normal "
            "data=<36 values [2, 2, 3, 3]:float64, min=0.0, max=5.0>") in lines
    assert "  param %frz.bias: f64[3] frozen init=constant(value=0.25)" in lines
    assert "  param %stats.running_mean: f64[3] buffer init=zeros" in lines
    assert lines[-2] == "  return feat=%r, edges=%edge"
    assert lines[-1] == "}"


def test_unknown_op_attrs_sorted_and_values():
    g = Graph("g")
    x = g.add_input("x", TensorType((1, 2)))
    g.add_node("n", "mystery", [x], {"zeta": 1, "alpha": (3,), "mid": 0.1 + 0.2, "s": "a\nb"}, x.type,
               loc=SourceLoc("f.gc", 1, 2))
    g.set_output("o", g.values["n"])
    line = print_graph(g).splitlines()[2]
    assert line == ('  %n = mystery(%x) {alpha=(3,), mid=0.30000000000000004, s="a\\nb", zeta=1} : f32[1, 2]'
                    '   # f.gc:1:2')


def test_format_value():
    assert format_value(np.float32(0.5)) == "0.5"
    assert format_value(np.int64(3)) == "3"
    assert format_value(1e-30) == "1e-30"
    assert format_value(math.inf) == "inf"
    assert format_value([True, None, "same"]) == '[true, none, "same"]'
    assert format_value(Init("normal", (("std", 0.01),))) == "normal(std=0.01)"
    assert format_value(np.array([[1.0, 2.0]], dtype=np.float32)) == "[[1.0, 2.0]]:float32"


def test_nodes_without_attrs_or_outputs():
    g = Graph("bare")
    x = g.add_input("x", TensorType((2,), "float64"))
    add_op(g, "r", "relu", [x])
    assert print_graph(g) == ("graph bare(%x: f64[2]) {\n  params: 0 (0 elements)\n  %r = relu(%x) : f64[2]\n"
                              "  return\n}\n")
