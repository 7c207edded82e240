"""Common subexpression elimination: which duplicates merge (parameter-free ops, convolutions sharing parameters,
commutative inputs, chains, graph outputs) and which never do (other attributes, other parameters, swapped inputs
of sub, random dropout in training); before and after agree on the reference executor; the zoo has nothing to
merge."""

from __future__ import annotations


import pytest

from graphconv.ir.graph import TensorType
from graphconv.ir.printer import print_graph
from graphconv.ir.verify import verify
from graphconv.ops import REGISTRY
from graphconv.passes.base import Program, prune_params
from graphconv.passes.cse import CommonSubexpressions

from .helpers import (ZOO, add_op, assert_same_function, graph_with_input, ops, program, run_pass, zoo_graph,
                      zoo_specs_covered)

CSE = CommonSubexpressions()
MERGED = "duplicate nodes merged"


def layout(g) -> list[tuple[str, str, list[str]]]:
    """Each node as (name, op, data input names), in order."""
    return [(n.name, n.op, [v.name for v in n.inputs]) for n in g.nodes]


def check_merge(prog: Program, merged: int) -> Program:
    """Run cse: `merged` duplicates go, the function stays, a second run has nothing to do."""
    new, result = run_pass(CSE, prog)
    assert result.changed is (merged > 0)
    assert result.counts == ({MERGED: merged} if merged else {})
    assert result.line() == (f"{merged} {MERGED}" if merged else "nothing to do")
    assert len(new.graph.nodes) == len(prog.graph.nodes) - merged
    if not prog.training:
        assert_same_function(prog, new)
    again, second = run_pass(CSE, new)
    assert not second.changed and second.counts == {} and second.line() == "nothing to do"
    assert print_graph(again.graph) == print_graph(new.graph)
    return new


# -- parameter-free ops --------------------------------------------------------------------------------------------

def test_duplicate_relu_merged_and_readers_redirected():
    g, x = graph_with_input()
    a = add_op(g, "a", "relu", [x])
    b = add_op(g, "b", "relu", [x])
    g.set_output("y", add_op(g, "s", "add", [a, b]))
    new = check_merge(program(g), 1)
    assert layout(new.graph) == [("a", "relu", ["x"]), ("s", "add", ["a", "a"])]
    assert "b" not in new.graph.values
    assert new.graph.outputs["y"] is new.graph.values["s"]


def test_pass_log_line():
    g, x = graph_with_input()
    g.set_output("y", add_op(g, "s", "add", [add_op(g, "a", "relu", [x]), add_op(g, "b", "relu", [x])]))
    _, result = run_pass(CSE, program(g))
    assert result.line() == "1 duplicate nodes merged"


def test_duplicate_max_pool_merged_different_attributes_kept():
    g, x = graph_with_input()
    p1 = add_op(g, "p1", "max_pool2d", [x], kernel=2)
    p2 = add_op(g, "p2", "max_pool2d", [x], kernel=2)
    p3 = add_op(g, "p3", "max_pool2d", [x], kernel=2, ceil_mode=True)  # the same shape here, other attributes
    p4 = add_op(g, "p4", "avg_pool2d", [x], kernel=2)  # same attributes, other op
    assert p3.type == p1.type == p4.type
    g.set_output("y", add_op(g, "s", "add", [p1, p2]))
    g.set_output("z", add_op(g, "t", "add", [p3, p4]))
    new = check_merge(program(g), 1)
    names = [n.name for n in new.graph.nodes]
    assert "p2" not in names and {"p1", "p3", "p4"} <= set(names)
    assert new.graph.node("s").inputs == [new.graph.values["p1"]] * 2


def test_different_attribute_values_not_merged():
    g, x = graph_with_input()
    a = add_op(g, "a", "leaky_relu", [x], alpha=0.1)
    b = add_op(g, "b", "leaky_relu", [x], alpha=0.2)
    c = add_op(g, "c", "clip", [x], min=0.0, max=6.0)
    d = add_op(g, "d", "clip", [x], min=0.0)  # max left out: None, not 6
    g.set_output("y", add_op(g, "s", "add", [a, b, c, d]))
    check_merge(program(g), 0)


def test_different_inputs_not_merged():
    g, x = graph_with_input()
    a = add_op(g, "a", "relu", [x])
    b = add_op(g, "b", "relu", [a])  # relu(relu(x)) is not relu(x) as a node
    g.set_output("y", add_op(g, "s", "add", [a, b]))
    check_merge(program(g), 0)


# -- commutativity -------------------------------------------------------------------------------------------------

def test_add_and_mul_with_swapped_inputs_merged():
    g, x = graph_with_input()
    a = add_op(g, "a", "relu", [x])
    b = add_op(g, "b", "sigmoid", [x])
    s1 = add_op(g, "s1", "add", [a, b])
    s2 = add_op(g, "s2", "add", [b, a])
    m1 = add_op(g, "m1", "mul", [a, b])
    m2 = add_op(g, "m2", "mul", [b, a])
    g.set_output("y", add_op(g, "out", "concat", [s1, s2, m1, m2]))
    new = check_merge(program(g), 2)
    assert [n.name for n in new.graph.nodes] == ["a", "b", "s1", "m1", "out"]
    assert [v.name for v in new.graph.node("out").inputs] == ["s1", "s1", "m1", "m1"]


def test_sub_with_swapped_inputs_not_merged_same_order_merged():
    g, x = graph_with_input()
    a = add_op(g, "a", "relu", [x])
    b = add_op(g, "b", "sigmoid", [x])
    d1 = add_op(g, "d1", "sub", [a, b])
    d2 = add_op(g, "d2", "sub", [b, a])
    d3 = add_op(g, "d3", "sub", [a, b])
    q1 = add_op(g, "q1", "div", [a, b])
    q2 = add_op(g, "q2", "div", [b, a])
    g.set_output("y", add_op(g, "out", "concat", [d1, d2, d3, q1, q2]))
    new = check_merge(program(g), 1)
    assert "d3" not in new.graph.values and {"d1", "d2", "q1", "q2"} <= set(new.graph.values)
    assert [v.name for v in new.graph.node("out").inputs] == ["d1", "d2", "d1", "q1", "q2"]


def test_variadic_add_same_order_merged_other_order_not():
    # reordering three summands changes the rounding, so only the same order is the same computation
    g, x = graph_with_input()
    a = add_op(g, "a", "relu", [x])
    b = add_op(g, "b", "sigmoid", [x])
    c = add_op(g, "c", "tanh", [x])
    s1 = add_op(g, "s1", "add", [a, b, c])
    s2 = add_op(g, "s2", "add", [a, b, c])
    s3 = add_op(g, "s3", "add", [c, b, a])
    g.set_output("y", add_op(g, "out", "concat", [s1, s2, s3]))
    new = check_merge(program(g), 1)
    assert [v.name for v in new.graph.node("out").inputs] == ["s1", "s1", "s3"]


# -- parameters ----------------------------------------------------------------------------------------------------

def two_convs(share: bool):
    """Two 3x3 convolutions of x, each followed by relu, summed; with `share` the second reads the first's
    parameters (its own are pruned)."""
    g, x = graph_with_input()
    c1 = add_op(g, "c1", "conv2d", [x], out_channels=4, kernel=3, padding="same")
    c2 = add_op(g, "c2", "conv2d", [x], out_channels=4, kernel=3, padding="same")
    r1 = add_op(g, "r1", "relu", [c1])
    r2 = add_op(g, "r2", "relu", [c2])
    g.set_output("y", add_op(g, "s", "add", [r1, r2]))
    prog = program(g)
    if share:
        g.node("c2").params = dict(g.node("c1").params)
        assert prune_params(prog) == 2
        verify(g)
    return prog


def test_convolutions_sharing_parameters_merge_with_their_relus():
    prog = two_convs(share=True)
    new = check_merge(prog, 2)  # c2, then r2 (equal to r1 once it reads c1)
    assert layout(new.graph) == [("c1", "conv2d", ["x"]), ("r1", "relu", ["c1"]), ("s", "add", ["r1", "r1"])]
    assert sorted(new.graph.params) == ["c1.bias", "c1.weight"]
    assert sorted(new.weights) == ["c1.bias", "c1.weight"]


def test_convolutions_with_their_own_parameters_not_merged():
    check_merge(two_convs(share=False), 0)


def test_parameters_compared_by_value_identity():
    # dense layers reading the same parameter values merge; equal shapes with other parameter values do not
    g, x = graph_with_input(shape=(4,))
    d1 = add_op(g, "d1", "dense", [x], units=4)
    d2 = add_op(g, "d2", "dense", [x], units=4)
    g.node("d2").params = dict(g.node("d1").params)
    g.set_output("y", add_op(g, "s", "add", [d1, d2]))
    prog = program(g)
    prune_params(prog)
    check_merge(prog, 1)

    g, x = graph_with_input(shape=(4,))
    w1 = g.add_param("w1", TensorType((4, 4)), "trainable")
    w2 = g.add_param("w2", TensorType((4, 4)), "trainable")
    d1 = add_op(g, "d1", "dense", [x], units=4, bias=False)
    d2 = add_op(g, "d2", "dense", [x], units=4, bias=False)
    g.node("d1").params = {"weight": w1}
    g.node("d2").params = {"weight": w2}
    g.set_output("y", add_op(g, "s", "add", [d1, d2]))
    prog = program(g)
    prune_params(prog)
    check_merge(prog, 0)  # equal shapes, different parameter values


def test_parameter_as_data_input_merged_by_identity():
    import numpy as np

    g, x = graph_with_input(shape=(4, 3))
    c = g.add_param("c", TensorType((4, 3)), "fixed", data=np.arange(12.0).reshape(4, 3))
    d = g.add_param("d", TensorType((4, 3)), "fixed", data=np.arange(12.0).reshape(4, 3))  # equal data, other value
    a1 = add_op(g, "a1", "add", [x, c])
    a2 = add_op(g, "a2", "add", [c, x])
    a3 = add_op(g, "a3", "add", [x, d])
    g.set_output("y", add_op(g, "out", "concat", [a1, a2, a3]))
    new = check_merge(program(g), 1)
    assert [v.name for v in new.graph.node("out").inputs] == ["a1", "a1", "a3"]
    assert sorted(new.graph.params) == ["c", "d"]


# -- epilogues -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("second, merged", [((("relu", (), None),), 2), ((("sigmoid", (), None),), 0), (None, 0)],
                         ids=["same", "other", "none"])
def test_epilogue_is_compared(second, merged):
    prog = two_convs(share=True)
    g = prog.graph
    g.node("c1").attrs["epilogue"] = (("relu", (), None),)
    if second is not None:
        g.node("c2").attrs["epilogue"] = second
    verify(g)
    check_merge(prog, merged)  # when c2 merges, r2 follows


# -- chains and outputs --------------------------------------------------------------------------------------------

def test_chain_of_duplicates_collapses_in_one_run():
    g, x = graph_with_input()
    a1 = add_op(g, "a1", "relu", [x])
    a2 = add_op(g, "a2", "relu", [x])
    b1 = add_op(g, "b1", "max_pool2d", [a1], kernel=2)
    b2 = add_op(g, "b2", "max_pool2d", [a2], kernel=2)
    c1 = add_op(g, "c1", "sigmoid", [b1])
    c2 = add_op(g, "c2", "sigmoid", [b2])
    g.set_output("y", add_op(g, "s", "mul", [c2, c1]))
    new = check_merge(program(g), 3)
    assert layout(new.graph) == [("a1", "relu", ["x"]), ("b1", "max_pool2d", ["a1"]), ("c1", "sigmoid", ["b1"]),
                                 ("s", "mul", ["c1", "c1"])]


def test_graph_output_of_a_removed_node_points_to_the_kept_one():
    g, x = graph_with_input()
    a = add_op(g, "a", "relu", [x])
    b = add_op(g, "b", "relu", [x])
    g.set_output("first", a)
    g.set_output("second", b)
    g.set_output("both", add_op(g, "s", "add", [a, b]))
    new = check_merge(program(g), 1)
    assert list(new.graph.outputs) == ["first", "second", "both"]
    assert new.graph.outputs["second"] is new.graph.outputs["first"] is new.graph.values["a"]


def test_nothing_to_do():
    g, x = graph_with_input()
    g.set_output("y", add_op(g, "b", "sigmoid", [add_op(g, "a", "relu", [x])]))
    new, result = run_pass(CSE, program(g))
    assert not result.changed and result.counts == {} and result.line() == "nothing to do"
    assert print_graph(new.graph) == print_graph(g)


# -- randomness ----------------------------------------------------------------------------------------------------

def two_dropouts(training: bool) -> Program:
    g, x = graph_with_input()
    a = add_op(g, "a", "dropout", [x], rate=0.5)
    b = add_op(g, "b", "dropout", [x], rate=0.5)
    g.set_output("y", add_op(g, "s", "add", [a, b]))
    return program(g, training=training)


def test_stochastic_op_not_merged_in_training(monkeypatch):
    # the pass decides by the op's `stochastic` property, not by its name
    monkeypatch.setattr(REGISTRY["dropout"], "stochastic", True, raising=False)
    new = check_merge(two_dropouts(training=True), 0)
    assert ops(new.graph) == ["dropout", "dropout", "add"]
    check_merge(two_dropouts(training=False), 1)  # inference: dropout is the identity, deterministic


def test_stochastic_property_is_read_from_the_op(monkeypatch):
    monkeypatch.setattr(REGISTRY["relu"], "stochastic", True, raising=False)
    g, x = graph_with_input()
    g.set_output("y", add_op(g, "s", "add", [add_op(g, "a", "relu", [x]), add_op(g, "b", "relu", [x])]))
    check_merge(program(g, training=True), 0)
    check_merge(program(g, training=False), 1)


def test_dropout_declares_itself_stochastic_and_is_not_merged_in_training():
    assert REGISTRY["dropout"].stochastic is True
    check_merge(two_dropouts(training=True), 0)


# -- the zoo -------------------------------------------------------------------------------------------------------

def test_zoo_is_covered():
    assert zoo_specs_covered()


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("spec", sorted(ZOO))
def test_zoo_has_nothing_to_merge(spec, training):
    g = zoo_graph(spec)
    before = print_graph(g)
    prog = Program(g, {}, training)
    result = CSE.run(prog)
    verify(g)
    assert not result.changed and result.counts == {}
    assert print_graph(g) == before
