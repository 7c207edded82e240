"""Constant folding: nodes reading only constant parameters become fixed parameters (chains in one run, epilogues,
graph outputs); nodes reading the input, trainable parameters in training, random ops in training, oversized and
dead nodes stay; before and after agree on the reference executor; the zoo has nothing to fold."""

from __future__ import annotations


import numpy as np
import pytest

from graphconv.ir.graph import TensorType
from graphconv.ir.printer import print_graph
from graphconv.ir.verify import verify
from graphconv.ops import REGISTRY
from graphconv.passes import fold_constants
from graphconv.passes.base import Program
from graphconv.passes.fold_constants import FoldConstants

from .helpers import (ZOO, add_op, assert_same_function, graph_with_input, ops, program, run_pass, zoo_graph,
                      zoo_specs_covered)

FOLD = FoldConstants()
FOLDED, PRUNED = "constant nodes folded", "parameters pruned"
C = np.arange(12.0).reshape(4, 3) - 5.0  # negative entries, so relu does something


def layout(g) -> list[tuple[str, str, list[str]]]:
    return [(n.name, n.op, [v.name for v in n.inputs]) for n in g.nodes]


def relu_of_param(training: bool = False, dtype: str = "float32"):
    """y = x + relu(c), x: [N, 4, 3], c a fixed [4, 3] parameter."""
    g, x = graph_with_input(shape=(4, 3), dtype=dtype)
    c = g.add_param("c", TensorType((4, 3), dtype), "fixed", data=C)
    r = add_op(g, "r", "relu", [c])
    g.set_output("y", add_op(g, "s", "add", [x, r]))
    return program(g, training=training)


def check_fold(prog: Program, folded: int, pruned: int) -> Program:
    """Run the pass: `folded` nodes go, `pruned` parameters with them; the function stays; a second run has nothing
    to do."""
    new, result = run_pass(FOLD, prog)
    assert result.changed is (folded > 0)
    assert result.counts == ({FOLDED: folded, PRUNED: pruned} if folded else {})
    assert len(new.graph.nodes) == len(prog.graph.nodes) - folded
    assert set(new.weights) <= set(new.graph.params)
    assert_same_function(prog, new)
    again, second = run_pass(FOLD, new)
    assert not second.changed and second.counts == {}
    assert print_graph(again.graph) == print_graph(new.graph)
    return new


# -- what folds ----------------------------------------------------------------------------------------------------

def test_relu_of_a_fixed_parameter_becomes_a_fixed_parameter():
    prog = relu_of_param()
    new = check_fold(prog, 1, 1)
    g = new.graph
    assert layout(g) == [("s", "add", ["x", "r.folded"])]
    p = g.params["r.folded"]
    assert p.role == "fixed" and p.value.type == TensorType((4, 3), "float32")
    assert p.data.dtype == np.float32
    np.testing.assert_array_equal(p.data, np.maximum(C, 0).astype(np.float32))
    assert sorted(g.params) == ["r.folded"]  # c is read by nobody now
    assert "r" not in g.values and "c" not in g.values and "c" not in new.weights


def test_pass_log_line():
    _, result = run_pass(FOLD, relu_of_param())
    assert result.line() == "1 constant nodes folded; 1 parameters pruned"


def test_folds_in_the_graph_dtype():
    new = check_fold(relu_of_param(dtype="float64"), 1, 1)
    assert new.graph.params["r.folded"].data.dtype == np.float64
    assert new.graph.params["r.folded"].value.type.dtype == "float64"


def test_chain_folds_in_one_run():
    g, x = graph_with_input(shape=(4, 3))
    c = g.add_param("c", TensorType((4, 3)), "fixed", data=C)
    d = g.add_param("d", TensorType((3,)), "fixed", data=np.array([0.5, -2.0, 3.0]))
    r = add_op(g, "r", "relu", [c])
    m = add_op(g, "m", "mul", [r, d])  # broadcasting [4, 3] by [3]
    t = add_op(g, "t", "tanh", [m])
    g.set_output("y", add_op(g, "s", "add", [x, t]))
    new = check_fold(program(g), 3, 4)  # r, m, t; c, d and the intermediate r.folded, m.folded
    assert layout(new.graph) == [("s", "add", ["x", "t.folded"])]
    assert sorted(new.graph.params) == ["t.folded"]
    np.testing.assert_allclose(new.graph.params["t.folded"].data, np.tanh(np.maximum(C, 0) * [0.5, -2.0, 3.0]),
                               rtol=1e-6)


def test_a_parameter_read_by_other_nodes_stays():
    g, x = graph_with_input(shape=(4, 3))
    c = g.add_param("c", TensorType((4, 3)), "fixed", data=C)
    r = add_op(g, "r", "relu", [c])
    s = add_op(g, "s", "add", [x, r])
    g.set_output("y", add_op(g, "t", "mul", [s, c]))  # c also read next to the input
    new = check_fold(program(g), 1, 0)
    assert layout(new.graph) == [("s", "add", ["x", "r.folded"]), ("t", "mul", ["s", "c"])]
    assert sorted(new.graph.params) == ["c", "r.folded"]


def test_node_parameters_are_read_and_epilogue_applied():
    # a convolution whose data input is a parameter, with a fused relu: its weight and bias come from the weights
    g, x = graph_with_input(shape=(4, 6, 6))
    img = g.add_param("img", TensorType((1, 3, 8, 8)), "fixed",
                      data=np.random.default_rng(3).standard_normal((1, 3, 8, 8)))
    conv = add_op(g, "conv", "conv2d", [img], out_channels=4, kernel=3)
    g.node("conv").attrs["epilogue"] = (("relu", (), None),)
    g.set_output("y", add_op(g, "s", "add", [x, conv]))
    verify(g)
    prog = program(g)
    new = check_fold(prog, 1, 3)  # img, conv.weight, conv.bias
    data = new.graph.params["conv.folded"].data
    assert data.shape == (1, 4, 6, 6) and data.min() == 0.0 and data.max() > 0.0
    assert sorted(new.graph.params) == ["conv.folded"] and new.weights == {}


def test_graph_output_of_a_folded_node_is_the_parameter():
    g, x = graph_with_input(shape=(4, 3))
    c = g.add_param("c", TensorType((4, 3)), "fixed", data=C)
    r = add_op(g, "r", "relu", [c])
    g.set_output("y", add_op(g, "s", "add", [x, r]))
    g.set_output("k", r)
    new = check_fold(program(g), 1, 1)
    assert list(new.graph.outputs) == ["y", "k"]
    assert new.graph.outputs["k"] is new.graph.values["r.folded"]


def batchnorm_of_param(training: bool):
    """y = x + batchnorm(c): the statistics are buffers, weight and bias trainable (made non-trivial by `program`)."""
    g, x = graph_with_input(shape=(4, 3))
    c = g.add_param("c", TensorType((4, 3)), "fixed", data=C)
    g.set_output("y", add_op(g, "s", "add", [x, add_op(g, "bn", "batchnorm", [c])]))
    return program(g, training=training)


def test_inference_folds_buffers_and_trainable_parameters_training_does_not():
    new = check_fold(batchnorm_of_param(training=False), 1, 5)  # c, weight, bias, running_mean, running_var
    assert layout(new.graph) == [("s", "add", ["x", "bn.folded"])]
    check_fold(batchnorm_of_param(training=True), 0, 0)  # batch statistics in training; buffers never fixed


# -- what does not fold --------------------------------------------------------------------------------------------

def test_nodes_reading_the_input_do_not_fold():
    g, x = graph_with_input(shape=(4, 3))
    c = g.add_param("c", TensorType((4, 3)), "fixed", data=C)
    g.set_output("y", add_op(g, "r", "relu", [add_op(g, "s", "add", [x, c])]))
    new, result = run_pass(FOLD, program(g))
    assert not result.changed and result.counts == {} and result.line() == "nothing to do"
    assert print_graph(new.graph) == print_graph(g)


def trainable_relu(training: bool):
    g, x = graph_with_input(shape=(4, 3))
    w = g.add_param("w", TensorType((4, 3)), "trainable")
    g.set_output("y", add_op(g, "s", "add", [x, add_op(g, "r", "relu", [w])]))
    return program(g, training=training)


def test_trainable_parameter_folds_at_inference_only():
    new = check_fold(trainable_relu(training=False), 1, 1)
    assert layout(new.graph) == [("s", "add", ["x", "r.folded"])]
    check_fold(trainable_relu(training=True), 0, 0)


def test_training_folds_fixed_parameters():
    new = check_fold(relu_of_param(training=True), 1, 1)
    assert layout(new.graph) == [("s", "add", ["x", "r.folded"])]


def test_training_needs_every_node_parameter_fixed():
    # a dense layer on a fixed input: its weight trains, so in training it stays
    def build(training):
        g, x = graph_with_input(shape=(5,))
        c = g.add_param("c", TensorType((1, 4)), "fixed", data=np.array([[1.0, -2.0, 3.0, 0.5]]))
        d = add_op(g, "d", "dense", [c], units=5)
        g.set_output("y", add_op(g, "s", "add", [x, d]))
        return program(g, training=training)

    check_fold(build(training=True), 0, 0)
    new = check_fold(build(training=False), 1, 3)  # c, d.weight, d.bias
    assert new.graph.params["d.folded"].value.type == TensorType((1, 5))


def stochastic_of_param(training: bool):
    g, x = graph_with_input(shape=(4, 3))
    c = g.add_param("c", TensorType((4, 3)), "fixed", data=C)
    g.set_output("y", add_op(g, "s", "add", [x, add_op(g, "r", "dropout", [c], rate=0.5)]))
    return program(g, training=training)


def test_dropout_of_a_constant_not_folded_in_training():
    assert REGISTRY["dropout"].stochastic
    new, result = run_pass(FOLD, stochastic_of_param(training=True))
    assert not result.changed and ops(new.graph) == ["dropout", "add"]
    check_fold(stochastic_of_param(training=False), 1, 1)  # inference: the identity


def test_stochastic_property_is_read_from_the_op(monkeypatch):
    monkeypatch.setattr(REGISTRY["relu"], "stochastic", True, raising=False)
    new, result = run_pass(FOLD, relu_of_param(training=True))
    assert not result.changed and ops(new.graph) == ["relu", "add"]


def test_oversized_constant_not_folded(monkeypatch):
    monkeypatch.setattr(fold_constants, "MAX_FOLDED_ELEMENTS", 11)  # the [4, 3] result has 12
    new, result = run_pass(FOLD, relu_of_param())
    assert not result.changed and result.counts == {}
    assert result.notes == ["1 constant node left unfolded (more than 2**24 elements)"]
    assert ops(new.graph) == ["relu", "add"]
    monkeypatch.setattr(fold_constants, "MAX_FOLDED_ELEMENTS", 12)
    check_fold(relu_of_param(), 1, 1)


def test_limit_is_2_to_the_24():
    assert fold_constants.MAX_FOLDED_ELEMENTS == 2 ** 24


def test_failing_evaluation_left_to_the_executor(monkeypatch):
    def boom(x, attrs):
        raise FloatingPointError("no")

    monkeypatch.setattr(REGISTRY["relu"], "fn", boom)
    new, result = run_pass(FOLD, relu_of_param())
    assert not result.changed and ops(new.graph) == ["relu", "add"]
    assert result.notes == ["1 constant node left unfolded (the reference implementation failed on it)"]


def test_dead_constant_node_left_to_dce():
    g, x = graph_with_input(shape=(4, 3))
    c = g.add_param("c", TensorType((4, 3)), "fixed", data=C)
    add_op(g, "r", "relu", [c])  # nobody reads it
    g.set_output("y", add_op(g, "s", "add", [x, c]))
    new, result = run_pass(FOLD, program(g))
    assert not result.changed and ops(new.graph) == ["relu", "add"]


# -- the zoo -------------------------------------------------------------------------------------------------------

def test_zoo_is_covered():
    assert zoo_specs_covered()


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("spec", sorted(ZOO))
def test_zoo_has_nothing_to_fold(spec, training):
    g = zoo_graph(spec)
    before = print_graph(g)
    result = FOLD.run(Program(g, {}, training))  # no weights: nothing may be evaluated
    verify(g)
    assert not result.changed and result.counts == {} and result.notes == []
    assert print_graph(g) == before
