"""The spec language, feature by feature: what valid specs build.

Every test writes a small spec, builds it with `load_graph_text` / `load_graph` and checks the graph: node names and
ops, shapes, attributes, parameters and their roles. Malformed specs are in test_corpus.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphconv.errors import SpecError
from graphconv.ir.graph import Init
from graphconv.spec import check_spec, check_text, load_graph, load_graph_text, parse_value


def build(text: str, **kw):
    return load_graph_text(text, "t.gc", **kw)


def net(body: str, *, params: str = "", shape: str = "f32[N, 3, 8, 8]") -> str:
    """A network with one input x around `body` (indented two spaces per line)."""
    lines = "\n".join("  " + line if line.strip() else line for line in body.strip("\n").splitlines())
    return f"network n{params} {{\n  input x: {shape}\n{lines}\n}}\n"


def ops(g) -> list[tuple[str, str]]:
    return [(n.name, n.op) for n in g.nodes]


def shape(g, output: str = "y") -> tuple:
    return g.outputs[output].type.shape


def value_of(expr: str, prelude: str = ""):
    """Evaluate an expression of the language: it is the default of a network parameter, which the graph keeps in
    meta['params']."""
    g = build(f"{prelude}network n(v = {expr}) {{\n  input x: f32[N, 3, 8, 8]\n  output x\n}}\n")
    return g.meta["params"]["v"]


RESNET50 = """
network resnet50(num_classes = 1000, size = 224) {
  input image: f32[N, 3, size, size]
  features = image
    -> conv2d(64, 7, stride=2, padding=3, bias=false) as conv1 -> batchnorm as bn1 -> relu
    -> max_pool2d(3, stride=2, padding=1)
    -> stage(64, 3) as layer1
  logits = features -> global_avg_pool -> flatten -> dense(num_classes) as fc
  output logits
}
block stage(x, c, blocks, stride = 1) {
  return x -> bottleneck(c, stride) -> repeat blocks - 1 { bottleneck(c) }
}
block bottleneck(x, c, stride = 1, expansion = 4) {
  y = x -> conv2d(c, 1, bias=false) as conv1 -> batchnorm as bn1 -> relu
  if stride != 1 or channels(x) != c * expansion {
    shortcut = x -> conv2d(c * expansion, 1, stride=stride, bias=false) as down -> batchnorm as down_bn
  } else {
    shortcut = x
  }
  return add(y -> conv2d(c * expansion, 1) , shortcut) -> relu
}
"""


# -- chains, named values, DAGs, outputs --------------------------------------------------------------------------

def test_the_example_from_the_language_description_builds():
    g = build(RESNET50)
    assert shape(g, "logits") == ("N", 1000)
    names = [n.name for n in g.nodes]
    assert names[:4] == ["conv1", "bn1", "relu0", "max_pool2d0"]
    assert "layer1.bottleneck0.conv1" in names and "layer1.bottleneck2.relu1" in names
    assert "layer1.bottleneck0.down" in names and "layer1.bottleneck1.down" not in names  # only where shapes change
    assert "layer1.bottleneck0.conv1.weight" in g.params
    assert g.params["layer1.bottleneck0.bn1.running_mean"].role == "buffer"
    assert g.node("fc").attrs["units"] == 1000


def test_chains_continue_on_lines_starting_with_an_arrow_and_calls_span_lines():
    g = build(net("""
y = x
  -> conv2d(4,
            3,     # arguments may span lines inside the parentheses
            padding=1)

  # a comment and a blank line do not end the chain
  -> relu
  -> sigmoid
output y
"""))
    assert ops(g) == [("conv2d0", "conv2d"), ("relu0", "relu"), ("sigmoid0", "sigmoid")]
    assert shape(g) == ("N", 4, 8, 8)
    assert [v.name for v in g.node("relu0").inputs] == ["conv2d0"]


def test_a_line_not_starting_with_an_arrow_ends_the_chain():
    g = build(net("""
y = x -> relu
z = y -> sigmoid
output z
"""))
    assert ops(g) == [("relu0", "relu"), ("sigmoid0", "sigmoid")]


def test_named_values_build_a_residual_dag():
    g = build(net("""
a = x -> conv2d(3, 3, padding=same) as c1 -> relu
b = x -> conv2d(3, 1) as c2
y = add(a, b) as sum -> relu
output y
"""))
    s = g.node("sum")
    assert s.op == "add" and [v.name for v in s.inputs] == ["relu0", "c2"]
    assert [v.name for v in g.node("c1").inputs] == [v.name for v in g.node("c2").inputs] == ["x"]
    assert shape(g) == ("N", 3, 8, 8)


def test_concat_of_four_branches():
    g = build(net("""
b1 = x -> conv2d(4, 1) as b1
b2 = x -> conv2d(8, 3, padding=1) as b2
b3 = x -> conv2d(16, 5, padding=2) as b3
b4 = x -> max_pool2d(3, stride=1, padding=1) as b4
y = concat(b1, b2, b3, b4) as cat
output y
"""))
    cat = g.node("cat")
    assert [v.name for v in cat.inputs] == ["b1", "b2", "b3", "b4"]
    assert shape(g) == ("N", 4 + 8 + 16 + 3, 8, 8)


def test_a_chain_step_receives_the_value_as_its_first_input():
    g = build(net("""
a = x -> conv2d(3, 1) as a
y = a -> add(x) as s
z = x -> concat(a, axis=1) as c
output y, z
"""))
    assert [v.name for v in g.node("s").inputs] == ["a", "x"]
    assert [v.name for v in g.node("c").inputs] == ["x", "a"]
    assert shape(g, "z") == ("N", 6, 8, 8)


def test_several_outputs_in_declaration_order():
    g = build(net("""
feat = x -> conv2d(4, 3) as conv
logits = feat -> global_avg_pool -> flatten -> dense(10) as fc
probs = logits -> softmax
output logits, feat
output probs
"""))
    assert list(g.outputs) == ["logits", "feat", "probs"]
    assert shape(g, "logits") == ("N", 10)
    assert shape(g, "feat") == ("N", 4, 6, 6)
    assert g.outputs["feat"] is g.node("conv").output


def test_an_input_can_be_an_output_and_inputs_can_be_several():
    g = build("network n {\n  input a: f32[N, 3, 8, 8]\n  input b: f32[N, 3, 8, 8]\n  s = add(a, b)\n"
              "  output s, a\n}\n")
    assert [v.name for v in g.inputs] == ["a", "b"]
    assert g.outputs["a"] is g.inputs[0]


# -- blocks -----------------------------------------------------------------------------------------------------

BLOCK = """
block unit(x, c, k = 3, stride = 1, act = true) {
  y = x -> conv2d(c, k, stride=stride, padding=k // 2) as conv
  if act {
    y2 = y -> relu
  } else {
    y2 = y
  }
  return y2
}
"""


def test_blocks_with_defaults_positional_and_keyword_arguments():
    g = build(net("""
a = x -> unit(4) as u1
b = x -> unit(4, 5) as u2
c = x -> unit(4, stride=2) as u3
d = x -> unit(c=6, k=1, act=false) as u4
e = unit(x, 2, 1, 2) as u5
output a, b, c, d, e
""") + BLOCK)
    conv = {u: g.node(f"{u}.conv").attrs for u in ("u1", "u2", "u3", "u4", "u5")}
    assert conv["u1"]["kernel"] == (3, 3) and conv["u1"]["stride"] == (1, 1) and conv["u1"]["out_channels"] == 4
    assert conv["u2"]["kernel"] == (5, 5) and conv["u2"]["padding"] == (2, 2, 2, 2)
    assert conv["u3"]["stride"] == (2, 2)
    assert conv["u4"]["kernel"] == (1, 1) and conv["u4"]["out_channels"] == 6
    assert conv["u5"]["out_channels"] == 2 and conv["u5"]["stride"] == (2, 2)
    assert "u4.relu0" not in {n.name for n in g.nodes} and "u1.relu0" in {n.name for n in g.nodes}
    assert shape(g, "c") == ("N", 4, 4, 4)


def test_block_defaults_may_use_earlier_parameters_and_file_constants():
    g = build("let WIDE = 2\n" + net("""
y = x -> b(3) as blk
output y
""") + "block b(x, c, d = c * WIDE) {\n  return x -> conv2d(d, 1) as conv\n}\n")
    assert g.node("blk.conv").attrs["out_channels"] == 6


def test_blocks_see_file_constants_not_their_callers_names():
    g = build("let C = 5\n" + net("""
let C = 7
y = x -> b
output y
""") + "block b(x) {\n  return x -> conv2d(C, 1)\n}\n")
    assert shape(g) == ("N", 5, 8, 8)


def test_multi_return_blocks():
    g = build(net("""
lo, hi = x -> split(2) as sp
y = add(lo, hi)
output y, lo
""") + "block split(x, c) {\n  return x -> conv2d(c, 1) as a, x -> conv2d(c, 3, padding=1) as b\n}\n")
    assert [v.name for v in g.node("add0").inputs] == ["sp.a", "sp.b"]
    assert shape(g, "lo") == ("N", 2, 8, 8)


def test_a_block_may_return_early_from_an_if():
    g = build(net("""
y = x -> pick(true) as p
z = x -> pick(false) as q
output y, z
""") + "block pick(x, fast) {\n  if fast {\n    return x -> relu\n  }\n  return x -> sigmoid -> tanh\n}\n")
    assert [op for _, op in ops(g)] == ["relu", "sigmoid", "tanh"]


def test_blocks_calling_blocks_nest_their_names():
    g = build(net("""
y = x -> outer as o -> outer
output y
""") + "block outer(x) {\n  return x -> inner -> inner as second\n}\n"
          "block inner(x) {\n  return x -> tanh as t -> tanh\n}\n")
    assert [n for n, _ in ops(g)] == [
        "o.inner0.t", "o.inner0.tanh0", "o.second.t", "o.second.tanh0",
        "outer0.inner0.t", "outer0.inner0.tanh0", "outer0.second.t", "outer0.second.tanh0",
    ]


# -- repeat -----------------------------------------------------------------------------------------------------

def test_repeat_applies_its_steps_in_sequence():
    g = build(net("""
y = x -> repeat 3 { conv2d(3, 3, padding=1) -> relu }
output y
"""))
    assert [n for n, _ in ops(g)] == ["conv2d0", "relu0", "conv2d1", "relu1", "conv2d2", "relu2"]
    assert [v.name for v in g.node("conv2d1").inputs] == ["relu0"]


def test_repeat_zero_is_the_identity():
    g = build(net("""
y = x -> repeat 0 { conv2d(3, 3) -> relu }
output y
"""))
    assert g.nodes == [] and g.outputs["y"] is g.inputs[0]


def test_nested_repeat_and_a_computed_count():
    g = build(net("""
y = x -> repeat k - 1 { repeat 2 { relu } -> sigmoid }
output y
""", params="(k = 4)"))
    assert [op for _, op in ops(g)] == ["relu", "relu", "sigmoid"] * 3


def test_repeat_of_a_block_numbers_the_block_instances():
    g = build(net("""
y = x -> stage(3) as layer1
output y
""") + "block stage(x, n) {\n  return x -> unit -> repeat n - 1 { unit }\n}\n"
          "block unit(x) {\n  return x -> conv2d(3, 3, padding=1) as conv1 -> relu\n}\n")
    assert [n for n, op in ops(g) if op == "conv2d"] == [
        "layer1.unit0.conv1", "layer1.unit1.conv1", "layer1.unit2.conv1"]
    assert "layer1.unit2.conv1.weight" in g.params and "layer1.unit2.conv1.bias" in g.params


# -- network parameters and overrides ------------------------------------------------------------------------------

CLASSIFIER = """network clf(num_classes = 1000, size = 32, width = 8) {
  input image: f32[N, 3, size, size]
  logits = image -> conv2d(width, 3, padding=same) as conv -> global_avg_pool -> flatten -> dense(num_classes) as fc
  output logits
}
"""


def test_network_parameters_defaults_and_overrides(tmp_path):
    path = tmp_path / "clf.gc"
    path.write_text(CLASSIFIER)
    g = load_graph(str(path))
    assert shape(g, "logits") == ("N", 1000)
    assert g.meta["params"] == {"num_classes": 1000, "size": 32, "width": 8}
    assert g.meta["source"] == str(path)
    g = load_graph(str(path), {"num_classes": 10, "size": 64})
    assert shape(g, "logits") == ("N", 10)
    assert g.inputs[0].type.shape == ("N", 3, 64, 64)
    assert g.meta["params"] == {"num_classes": 10, "size": 64, "width": 8}


def test_an_override_of_an_unknown_parameter_is_an_error(tmp_path):
    path = tmp_path / "clf.gc"
    path.write_text(CLASSIFIER)
    with pytest.raises(SpecError) as info:
        load_graph(str(path), {"num_clases": 10})
    (d,) = info.value.diagnostics
    assert "has no parameter 'num_clases'" in d.message
    assert d.hint == "did you mean 'num_classes'?"
    assert (d.loc.path, d.loc.line, d.loc.col) == (str(path), 1, 9)


@pytest.mark.parametrize("value, message", [
    (10 ** 100, "out-of-range"),
    (float("inf"), "out-of-range"),
    (None, "unsupported"),
    ("big", "a dimension must be an integer"),
    (0, "a dimension must be an integer from 1"),
])
def test_bad_override_values_are_located_errors(tmp_path, value, message):
    path = tmp_path / "clf.gc"
    path.write_text(CLASSIFIER)
    with pytest.raises(SpecError) as info:
        load_graph(str(path), {"size": value})
    assert message in info.value.diagnostics[0].message
    assert info.value.diagnostics[0].loc.path == str(path)


def test_a_parameter_without_default_must_be_given():
    text = "network n(c) {\n  input x: f32[N, 3, 8, 8]\n  y = x -> conv2d(c, 1)\n  output y\n}\n"
    assert shape(build(text, params={"c": 5})) == ("N", 5, 8, 8)
    with pytest.raises(SpecError, match="has no default and was not given"):
        build(text)


# -- constants and arithmetic --------------------------------------------------------------------------------------

def test_let_constants_at_file_level_and_in_bodies():
    g = build("let BASE = 4\nlet WIDE = BASE * 2\n" + net("""
let c = WIDE + 1
y = x -> conv2d(c, 1)
output y
"""))
    assert shape(g) == ("N", 9, 8, 8)


@pytest.mark.parametrize("expr, expected", [
    ("7 // 2", 3), ("7 / 2", 3.5), ("7 % 3", 1), ("-7 // 2", -4), ("-7 % 3", 2),
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("10 - 4 - 3", 3), ("2 * 3 // 4", 1), ("12 // 4 * 3", 9),
    ("8 / 4 / 2", 1.0), ("7 % 4 * 2", 6), ("1 + 7 % 4", 4), ("-2 * 3", -6), ("- -3", 3), ("2 - -3", 5),
    ("0.5 * 4", 2.0), ("1e3", 1000.0), (".5 + 1", 1.5),
    ("1 < 2", True), ("2 <= 2", True), ("3 > 4", False), ("3 >= 4", False), ("1 == 1.0", True), ("1 != 2", True),
    ('"a" == "a"', True), ('"a" == 1', False), ("[1, 2] == [1, 2]", True),
    ("1 + 2 == 3 and 2 * 2 == 4", True), ("not 1 > 2", True), ("not true and false", False),
    ("not (true and false)", True), ("true or false and false", True), ("(true or false) and false", False),
    ("false or not false", True),
    ("[1, 2] + [3]", [1, 2, 3]), ('"ed" + "ge"', "edge"), ("[]", []), ("[[1], [2, 3]]", [[1], [2, 3]]),
    ("min(3, 1, 2)", 1), ("max([3, 5])", 5), ("abs(-4)", 4), ("int(3.9)", 3), ("int(-3.9)", -3), ("float(2)", 2.0),
    ("round(2.5)", 2), ("ceil(2.1)", 3), ("floor(-2.1)", -3), ("len([1, 2, 3])", 3),
    ("make_divisible(32 * 0.75)", 24), ("make_divisible(10, 4)", 12),
    ("same", "same"), ("he_normal", "he_normal"),
])
def test_arithmetic_comparisons_and_logic(expr, expected):
    v = value_of(expr)
    assert v == expected and type(v) is type(expected)


def test_tensor_shape_functions():
    g = build(net("""
let c = channels(x) * 2
let h = height(x) + width(x)
let r = rank(x)
let s = len(shape(x))
y = x -> conv2d(c + h + r + s, 1)
output y
""", shape="f32[N, 3, 5, 7]"))
    assert shape(g) == ("N", 6 + 12 + 4 + 4, 5, 7)


# -- if / else ------------------------------------------------------------------------------------------------------

IF_ELSE = net("""
if mode == "relu" {
  y = x -> relu
} else if mode == "tanh" {
  y = x -> tanh
} else if mode == "none" {
  y = x
} else {
  y = x -> sigmoid
}
output y
""", params='(mode = "relu")')


@pytest.mark.parametrize("mode, expected", [("relu", ["relu"]), ("tanh", ["tanh"]), ("none", []),
                                            ("other", ["sigmoid"])])
def test_if_else_if_else(mode, expected):
    g = build(IF_ELSE, params={"mode": mode})
    assert [op for _, op in ops(g)] == expected


def test_if_without_else_and_outputs_inside_if():
    g = build(net("""
y = x -> relu
if extra {
  z = y -> sigmoid
  output y, z
} else {
  output y
}
""", params="(extra = false)"))
    assert list(g.outputs) == ["y"]
    g = build(net("""
y = x -> relu
if extra {
  z = y -> sigmoid
  output y, z
} else {
  output y
}
""", params="(extra = false)"), params={"extra": True})
    assert list(g.outputs) == ["y", "z"]


# -- includes -------------------------------------------------------------------------------------------------------

def test_includes_nested_and_diamond_loaded_once(tmp_path):
    (tmp_path / "lib" / "deeper").mkdir(parents=True)
    (tmp_path / "lib" / "common.gc").write_text(
        '# shared by a.gc and b.gc\ninclude "deeper/base.gc"\nlet WIDTH = BASE * 2\n'
        'block unit(x) {\n  return x -> conv2d(WIDTH, 1) as conv\n}\n')
    (tmp_path / "lib" / "deeper" / "base.gc").write_text("let BASE = 3\n")
    (tmp_path / "lib" / "a.gc").write_text('include "common.gc"\nblock left(x) {\n  return x -> unit\n}\n')
    (tmp_path / "lib" / "b.gc").write_text('include "./common.gc"\nblock right(x) {\n  return x -> unit -> relu\n}\n')
    (tmp_path / "main.gc").write_text('include "lib/a.gc"\ninclude "lib/b.gc"\n' + net("""
y = add(x -> left, x -> right)
output y
"""))
    g, diags, sources = check_spec(str(tmp_path / "main.gc"))
    assert diags == []
    assert shape(g) == ("N", 6, 8, 8)
    assert sorted(sources) == sorted(str(p) for p in [
        tmp_path / "main.gc", tmp_path / "lib/a.gc", tmp_path / "lib/b.gc", tmp_path / "lib/common.gc",
        tmp_path / "lib/deeper/base.gc"])


def test_an_include_may_go_up_while_staying_inside_the_project(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "shared.gc").write_text("let C = 5\n")
    (tmp_path / "lib" / "a.gc").write_text('include "../shared.gc"\n')
    (tmp_path / "main.gc").write_text('include "lib/a.gc"\n' + net("y = x -> conv2d(C, 1)\noutput y"))
    assert shape(load_graph(str(tmp_path / "main.gc"))) == ("N", 5, 8, 8)


def test_check_text_resolves_includes_against_root(tmp_path):
    (tmp_path / "c.gc").write_text("let C = 2\n")
    g = load_graph_text('include "c.gc"\n' + net("y = x -> conv2d(C, 1)\noutput y"), root=str(tmp_path))
    assert shape(g) == ("N", 2, 8, 8)


# -- layer naming -----------------------------------------------------------------------------------------------

def test_default_names_count_per_op_and_as_names_a_layer():
    g = build(net("""
y = x -> conv2d(3, 1) -> relu -> conv2d(3, 1) as mine -> conv2d(3, 1) -> relu -> relu6 -> relu6
output y
"""))
    assert [n for n, _ in ops(g)] == ["conv2d0", "relu0", "mine", "conv2d1", "relu1", "relu6_0", "relu6_1"]
    assert [v.name for v in g.nodes[1].inputs] == ["conv2d0"]
    assert sorted(g.params) == ["conv2d0.bias", "conv2d0.weight", "conv2d1.bias", "conv2d1.weight",
                                "mine.bias", "mine.weight"]


def test_parameter_names_of_a_batchnorm_in_a_block():
    g = build(net("y = x -> b as blk\noutput y") + "block b(x) {\n  return x -> batchnorm as bn\n}\n")
    assert {name: p.role for name, p in g.params.items()} == {
        "blk.bn.weight": "trainable", "blk.bn.bias": "trainable",
        "blk.bn.running_mean": "buffer", "blk.bn.running_var": "buffer"}


def test_nodes_remember_where_they_are_written():
    g = build(net("y = x -> relu\n\nz = y -> conv2d(2, 1) as c\noutput z"))
    assert (g.node("relu0").loc.line, g.node("relu0").loc.col) == (3, 12)
    assert (g.node("c").loc.line, g.node("c").loc.col) == (5, 12)
    assert g.node("c").loc.path == "t.gc"


# -- convolutions, padding, parameters ---------------------------------------------------------------------------

@pytest.mark.parametrize("call, out_hw, padding", [
    ("conv2d(2, 3, padding=same)", (9, 9), (1, 1, 1, 1)),
    ("conv2d(2, 4, padding=same)", (9, 9), (1, 1, 2, 2)),
    ("conv2d(2, 3, stride=2, padding=same)", (5, 5), (1, 1, 1, 1)),
    ('conv2d(2, 3, padding="same")', (9, 9), (1, 1, 1, 1)),
    ("conv2d(2, 3, padding=valid)", (7, 7), (0, 0, 0, 0)),
    ("conv2d(2, 3)", (7, 7), (0, 0, 0, 0)),
    ("conv2d(2, 3, padding=2)", (11, 11), (2, 2, 2, 2)),
    ("conv2d(2, 3, padding=[1, 0])", (9, 7), (1, 0, 1, 0)),
    ("conv2d(2, 3, padding=[1, 2, 3, 4])", (11, 13), (1, 2, 3, 4)),
    ("conv2d(2, [3, 5], stride=[1, 2], padding=same)", (9, 5), (1, 2, 1, 2)),
    ("max_pool2d(3, stride=2, padding=same)", (5, 5), None),
])
def test_padding_same_valid_and_explicit(call, out_hw, padding):
    g = build(net(f"y = x -> {call} as layer\noutput y", shape="f32[N, 2, 9, 9]"))
    assert shape(g)[2:] == out_hw
    if padding is not None:
        assert g.node("layer").attrs["padding"] == padding


def test_fixed_filter_literals_are_fixed_parameters_with_their_data():
    g = build("let K = [[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]]]\n" + net("""
y = x -> conv2d(1, weight=K, bias=[0.5]) as sobel
output y
""", shape="f32[N, 1, 8, 8]"))
    w, b = g.params["sobel.weight"], g.params["sobel.bias"]
    assert w.role == "fixed" and b.role == "fixed"
    assert w.value.type.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(w.data, np.array([[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]]]))
    np.testing.assert_array_equal(b.data, [0.5])
    assert g.node("sobel").attrs["kernel"] == (3, 3)
    assert g.num_params() == 10 and g.num_params(trainable_only=True) == 0


def test_frozen_layers_have_frozen_parameters():
    g = build(net("y = x -> conv2d(2, 1, frozen=true) as c -> batchnorm(frozen=true) as bn -> conv2d(2, 1) as t\n"
                  "output y"))
    roles = {name: p.role for name, p in g.params.items()}
    assert roles["c.weight"] == roles["c.bias"] == "frozen"
    assert roles["bn.weight"] == roles["bn.bias"] == "frozen"
    assert roles["bn.running_mean"] == "buffer"
    assert roles["t.weight"] == "trainable"
    assert g.num_params(trainable_only=True) == 2 * 2 + 2


def test_initializers_bare_and_with_arguments():
    g = build(net("""
y = x
  -> conv2d(2, 1) as default
  -> conv2d(2, 1, init=glorot_uniform, bias_init=ones) as bare
  -> conv2d(2, 1, init=normal(std=0.02), bias_init=constant(0.1)) as args
  -> conv2d(2, 1, init=normal(0.5)) as positional
  -> conv2d(2, 1, init=he_normal(mode=fan_out)) as mode
  -> conv2d(2, 1, init="he_uniform") as string
output y
"""))
    init = {name: p.init for name, p in g.params.items()}
    assert init["default.weight"] == Init("he_normal") and init["default.bias"] == Init("zeros")
    assert init["bare.weight"] == Init("glorot_uniform") and init["bare.bias"] == Init("ones")
    assert init["args.weight"] == Init("normal", (("std", 0.02),))
    assert init["args.bias"] == Init("constant", (("value", 0.1),))
    assert init["positional.weight"] == Init("normal", (("std", 0.5),))
    assert init["mode.weight"] == Init("he_normal", (("mode", "fan_out"),))
    assert init["string.weight"] == Init("he_uniform")


def test_initializers_can_be_named_values():
    g = build(net("let w = normal(std=0.1)\ny = x -> conv2d(2, 1, init=w) as c\noutput y"))
    assert g.params["c.weight"].init == Init("normal", (("std", 0.1),))


def test_relu6_is_an_alias_of_clip():
    g = build(net("y = x -> relu6 as r\noutput y"))
    assert g.node("r").op == "clip"
    assert g.node("r").attrs == {"min": 0.0, "max": 6.0}


def test_depthwise_convolutions():
    g = build(net("""
y = x -> conv2d(kernel=3, depthwise=true, padding=1) as dw -> conv2d(6, 3, depthwise=true, padding=1) as dw2
z = x -> conv2d(3, 3, groups=3) as grouped
output y, z
"""))
    dw, dw2 = g.node("dw"), g.node("dw2")
    assert dw.attrs["groups"] == 3 and dw.attrs["out_channels"] == 3
    assert g.params["dw.weight"].value.type.shape == (3, 1, 3, 3)
    assert dw2.attrs["groups"] == 3 and g.params["dw2.weight"].value.type.shape == (6, 1, 3, 3)
    assert shape(g) == ("N", 6, 8, 8)
    assert g.node("grouped").attrs["groups"] == 3


def test_kx1_then_1xk_separable_convolutions():
    g = build(net("""
y = x -> conv2d(8, [7, 1], padding=[3, 0]) as v -> conv2d(8, [1, 7], padding=[0, 3]) as h
output y
""", shape="f32[N, 3, 17, 17]"))
    assert g.node("v").attrs["kernel"] == (7, 1) and g.node("h").attrs["kernel"] == (1, 7)
    assert g.params["v.weight"].value.type.shape == (8, 3, 7, 1)
    assert g.params["h.weight"].value.type.shape == (8, 8, 1, 7)
    assert g.node("v").output.type.shape == ("N", 8, 17, 17)
    assert shape(g) == ("N", 8, 17, 17)


def test_f64_inputs_make_f64_values_and_parameters():
    g = build(net("y = x -> conv2d(2, 3) -> batchnorm -> relu\noutput y", shape="f64[N, 3, 8, 8]"))
    assert all(n.output.type.dtype == "float64" for n in g.nodes)
    assert all(p.value.type.dtype == "float64" for p in g.params.values())


def test_a_fixed_batch_size():
    g = build(net("y = x -> conv2d(2, 3) -> flatten\noutput y", shape="f32[4, 3, 8, 8]"))
    assert g.inputs[0].type.shape == (4, 3, 8, 8)
    assert shape(g) == (4, 2 * 6 * 6)


def test_windows_line_endings_and_tabs():
    text = net("y = x -> conv2d(2, 3)\n\t\t-> relu\noutput y").replace("\n", "\r\n")
    g = build(text)
    assert [op for _, op in ops(g)] == ["conv2d", "relu"]


def test_check_text_and_check_spec_report_no_diagnostics_for_valid_specs(tmp_path):
    g, diags, sources = check_text(RESNET50, "r.gc")
    assert g is not None and diags == [] and list(sources) == ["r.gc"]
    (tmp_path / "r.gc").write_text(RESNET50)
    g2, diags, _ = check_spec(str(tmp_path / "r.gc"), {"num_classes": 7})
    assert diags == [] and shape(g2, "logits") == ("N", 7)


# -- parse_value (--set k=v) ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("3", 3), ("0", 0), ("-3", -3), ("0.5", 0.5), ("-0.5", -0.5), ("1e3", 1000.0), ("2.5e-1", 0.25),
    ("true", True), ("false", False), ('"s"', "s"), ('"a b"', "a b"), ('"tab\\there"', "tab\there"),
    ("same", "same"), ("fan_out", "fan_out"), ("anything", "anything"),
    ("[1, 2]", [1, 2]), ("[1, [2, -3.5]]", [1, [2, -3.5]]), ("[]", []), ('["a", true]', ["a", True]),
    ("(3)", 3), ("  7  ", 7),
])
def test_parse_value(text, expected):
    v = parse_value(text)
    assert v == expected and type(v) is type(expected)


@pytest.mark.parametrize("text", ["", "1 +", "a b", "[1,", "[1 2]", "3 + 4", "x -> relu", "f(1)", '"a\\q"',
                                  '"open', "-true", "-x", "1 2", "$", "{}", "let"])
def test_parse_value_rejects_garbage(text):
    with pytest.raises(ValueError, match="not a value"):
        parse_value(text)


def test_a_line_break_between_a_keyword_argument_and_its_equals_sign():
    """Newlines are ignored inside ( ): also between `name` and `=` of a keyword argument."""
    from graphconv.spec import load_graph_text

    g = load_graph_text("network t() {\n  input x: f32[N, 3, 8, 8]\n  y = x -> conv2d(4, 3, padding\n"
                        "     = 1) -> relu\n  output y\n}\n")
    assert g.nodes[0].attrs["padding"] == (1, 1, 1, 1)


def test_min_and_max_of_one_number_are_that_number():
    """A mutation fuzz case: `max(1.0)` once raised TypeError out of the evaluator."""
    from graphconv.spec import load_graph_text

    g = load_graph_text("network t() {\n  input x: f32[N, 3, 8, 8]\n  y = x -> conv2d(max(4), min(2) + 1)\n"
                        "  output y\n}\n")
    assert g.nodes[0].attrs["out_channels"] == 4 and g.nodes[0].attrs["kernel"] == (3, 3)


def test_every_bad_attribute_of_a_call_is_reported_at_once():
    """A missing required attribute no longer hides a bad value or an unknown name in the same call."""
    from graphconv.spec import check_text

    text = 'network t() {\n  input x: f32[N, 8, 16, 16]\n  y = x -> max_pool2d(stride="x", paddin=1)\n  output y\n}\n'
    _, diags, _ = check_text(text, "t.gc")
    got = [(d.loc.line, d.loc.col, d.message) for d in diags]
    assert got == [(3, 12, "max_pool2d: missing required attribute 'kernel'"),
                   (3, 23, "max_pool2d: attribute 'stride': expected an integer or a list of 2 integers >= 1, "
                           "got 'x'"),
                   (3, 35, "'max_pool2d' has no attribute 'paddin'")]
