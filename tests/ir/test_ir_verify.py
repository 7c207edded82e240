import numpy as np
import pytest

from graphconv.errors import GraphconvError
from graphconv.ir import IRError, lint, verify
from graphconv.ir.graph import Graph, Init, Param, TensorType, Value

from irtest_helpers import add_op, rich, tiny


def one(problems, *fragments):
    """Exactly one problem, containing every fragment."""
    assert len(problems) == 1, problems
    for f in fragments:
        assert f in problems[0], problems
    return problems[0]


def some(problems, *fragments):
    assert any(all(f in p for f in fragments) for p in problems), problems


@pytest.mark.parametrize("make", [tiny, rich, lambda: tiny("float64"), lambda: tiny(batch=2)])
def test_good_graphs_pass(make):
    g = make()
    assert lint(g) == []
    verify(g)


def test_empty_graph_and_dead_nodes_are_fine():
    assert lint(Graph("empty")) == []
    g = tiny()
    add_op(g, "unused", "relu", [g.values["x"]])
    g.outputs.clear()
    assert lint(g) == []


def test_verify_raises_internal_error_listing_all_problems():
    g = tiny()
    g.node("act").op = "nope"
    g.outputs["z"] = Value("ghost", TensorType((1,)), "node")
    with pytest.raises(IRError) as ei:
        verify(g)
    e = ei.value
    assert not isinstance(e, GraphconvError)
    assert len(e.problems) == 2
    assert "2 problems" in str(e) and "nope" in str(e) and "ghost" in str(e) and "'tiny'" in str(e)


# -- names and values --

def test_duplicate_value_name():
    g = tiny()
    g.inputs.append(Value("act", TensorType(("N", 4, 8, 8)), "input"))
    some(lint(g), "'act'", "more than once")


def test_duplicate_node_name():
    g = tiny()
    n = g.node("proj")
    n.name = "conv"
    some(lint(g), "node name 'conv'")


def test_value_missing_from_values():
    g = tiny()
    del g.values["act"]
    p = lint(g)
    some(p, "%act is missing from graph.values")
    some(p, "node proj", "not a value of this graph")


def test_stray_value_in_values():
    g = tiny()
    g.values["stray"] = Value("stray", TensorType((1,)), "node")
    one(lint(g), "%stray", "no input, parameter or node output")


def test_values_entry_is_other_object():
    g = tiny()
    g.values["x"] = Value("x", TensorType(("N", 3, 8, 8)), "input")
    some(lint(g), "graph.values['x'] is a different object")


def test_wrong_kind_and_producer():
    g = tiny()
    g.values["x"].kind = "node"
    one(lint(g), "%x has kind 'node'", "input")
    g = tiny()
    g.node("act").output.producer = g.node("conv")
    one(lint(g), "node act", "producer")


def test_output_not_named_after_node():
    g = tiny()
    g.node("act").name = "activation"
    some(lint(g), "node activation", "%act")


# -- references, order, cycles --

def test_foreign_input():
    g = tiny()
    g.node("act").inputs[0] = Value("conv", TensorType(("N", 4, 8, 8)), "node")
    one(lint(g), "node act", "input 0 %conv is not a value of this graph")


def test_not_topological():
    g = tiny()
    g.nodes[1], g.nodes[2] = g.nodes[2], g.nodes[1]  # proj before act
    one(lint(g), "node proj", "%act is used before it is defined")
    g.toposort()
    assert lint(g) == []


def test_cycle_reports_members():
    g = tiny()
    conv, s = g.node("conv"), g.node("sum")
    conv.inputs[0] = s.output  # conv reads sum, which depends on conv
    conv.output.type = TensorType(("N", 4, 8, 8))
    p = lint(g)
    cyc = [q for q in p if "cycle" in q]
    assert len(cyc) == 1, p
    for name in ("%conv", "%act", "%proj", "%sum"):
        assert name in cyc[0]
    assert "%x" not in cyc[0]


def test_self_loop():
    g = tiny()
    act = g.node("act")
    act.inputs[0] = act.output
    p = lint(g)
    some(p, "node act", "its own output")
    some(p, "cycle among %act")


def test_node_param_must_be_param_value():
    g = tiny()
    g.node("proj").params["weight"] = g.values["x"]
    p = lint(g)
    some(p, "node proj", "'weight'", "input value, not a parameter")


# -- parameters --

def test_param_value_without_param():
    g = tiny()
    del g.params["conv.bias"]
    one(lint(g), "%conv.bias", "without a Param")


def test_param_not_in_values():
    g = tiny()
    v = Value("extra.w", TensorType((2,)), "param")
    g.params["extra.w"] = Param(v, "trainable", Init("zeros"))
    one(lint(g), "%extra.w is missing from graph.values")


def test_param_keyed_by_other_name():
    g = tiny()
    g.params["other"] = g.params.pop("conv.bias")
    p = lint(g)
    some(p, "graph.params['other'] describes %conv.bias")
    some(p, "%conv.bias is a parameter value without a Param")


def test_unknown_role():
    g = tiny()
    g.params["conv.bias"].role = "sticky"
    one(lint(g), "unknown role 'sticky'")


def test_fixed_param_needs_data_of_right_shape():
    g = tiny()
    g.params["conv.bias"].role = "fixed"
    one(lint(g), "%conv.bias", "fixed parameter has no data")
    g.params["conv.bias"].data = np.zeros(3)
    one(lint(g), "%conv.bias", "data has shape [3]")
    g.params["conv.bias"].data = np.zeros(4)
    assert lint(g) == []


def test_param_shape_must_be_static():
    g = tiny()
    g.params["conv.bias"].value.type = TensorType(("N",))
    some(lint(g), "%conv.bias", "static")


def test_buffer_role_must_match_op():
    g = tiny()
    g.params["conv.weight"].role = "buffer"
    one(lint(g), "node conv", "'weight'", "role 'buffer'")


# -- types --

def test_bad_dtype():
    g = tiny()
    g.values["x"].type = TensorType(("N", 3, 8, 8), "float16")
    some(lint(g), "%x", "dtype 'float16'")


def test_bad_dims():
    g = tiny()
    g.values["x"].type = TensorType(("N", 3, -8, 8))
    some(lint(g), "%x", "negative dimension")
    g.values["x"].type = TensorType(("N", 3.0, 8, 8))
    some(lint(g), "%x", "neither an integer nor a symbol")


# -- ops --

def test_unknown_op():
    g = tiny()
    g.node("act").op = "softmaxx"
    one(lint(g), "node act", "unknown op 'softmaxx'")


def test_arity():
    g = tiny()
    g.node("act").inputs.append(g.values["x"])
    one(lint(g), "node act", "relu takes 1 input", "has 2")
    g = tiny()
    del g.node("sum").inputs[1]
    one(lint(g), "node sum", "at least 2")


def test_output_type_mismatch():
    g = tiny()
    g.node("act").output.type = TensorType(("N", 4, 8, 9))
    p = lint(g)
    some(p, "node act", "output type is f32[N, 4, 8, 9]", "infers f32[N, 4, 8, 8]")


def test_attrs_mismatch_output_and_params():
    g = tiny()
    g.node("conv").attrs["kernel"] = (5, 5)
    p = lint(g)
    assert len(p) == 2, p
    some(p, "node conv", "output type", "infers f32[N, 4, 6, 6]")
    some(p, "node conv", "'weight'", "[4, 3, 3, 3]", "needs [4, 3, 5, 5]")


def test_inference_failure_is_reported():
    g = tiny()
    del g.node("conv").attrs["stride"]
    some(lint(g), "node conv", "shape inference fails", "KeyError")
    g = tiny()
    g.node("conv").attrs["kernel"] = (20, 20)
    some(lint(g), "node conv", "shape inference fails", "does not fit")


def test_missing_and_extra_node_params():
    g = tiny()
    del g.node("conv").params["bias"]
    one(lint(g), "node conv", "missing parameter 'bias'")
    g = tiny()
    g.node("proj").params["bias"] = g.values["conv.bias"]
    one(lint(g), "node proj", "parameter 'bias' is not one conv2d declares")


def test_fixed_weight_conv_is_consistent():
    # ir_attrs strips the weight literal; lint must supply neutral values for params()
    g = Graph("fixed")
    x = g.add_input("x", TensorType((1, 1, 4, 4)))
    add_op(g, "k", "conv2d", [x], out_channels=1, weight=np.ones((1, 1, 2, 2)), bias=[0.5])
    assert "weight" not in g.node("k").attrs and g.node("k").attrs["bias"] is True
    assert g.params["k.weight"].role == "fixed" and g.params["k.bias"].role == "fixed"
    assert lint(g) == []


# -- outputs --

def test_outputs_must_be_graph_values():
    g = tiny()
    g.outputs["y"] = Value("sum", TensorType(("N", 4, 8, 8)), "node")
    one(lint(g), "output 'y'", "not a value of this graph")
    g = tiny()
    g.outputs[""] = g.values["act"]
    one(lint(g), "output name ''")
