"""The numpy reference executor: dispatch, value freeing, error wrapping, input and weight validation, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from graphconv.errors import ExecutionError, GraphconvError, InputError, SourceLoc, WeightsError
from graphconv.ir.graph import Graph, TensorType
from graphconv.ops import REGISTRY, RefContext
from graphconv.reference.executor import free_plan, run_graph
from graphconv.weights import init_weights

from runtime_helpers import add_op, small_cnn, two_in_two_out


def randn(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def by_hand(graph: Graph, x: np.ndarray, weights: dict, dtype=np.float32) -> np.ndarray:
    """The chain of a single-path graph, one reference call after the other."""
    h = x.astype(dtype)
    for node in graph.nodes:
        ps = {role: weights[v.name].astype(dtype) for role, v in node.params.items()}
        h = REGISTRY[node.op].reference(node.attrs, [h], ps, RefContext())
    return h


def test_small_cnn_matches_op_by_op():
    g = small_cnn()
    w = init_weights(g, seed=1)
    x = randn(2, 3, 8, 8)
    out = run_graph(g, {"image": x}, w)
    assert set(out) == {"logits"}
    y = out["logits"]
    assert y.shape == (2, 5) and y.dtype == np.float32
    np.testing.assert_allclose(y, by_hand(g, x, w), rtol=1e-6, atol=1e-6)


def test_dag_two_inputs_two_outputs():
    g = two_in_two_out()
    a, b = randn(3, 2, 4, 4, seed=1), randn(3, 2, 4, 4, seed=2)
    out = run_graph(g, {"a": a, "b": b}, {})
    assert list(out) == ["sum", "act"]
    np.testing.assert_allclose(out["sum"], a + b, rtol=1e-6)
    np.testing.assert_allclose(out["act"], np.maximum(a + b, 0), rtol=1e-6)


def test_dense_against_numpy():
    g = Graph("fc")
    x = g.add_input("x", TensorType(("N", 7)))
    g.set_output("y", add_op(g, "fc", "dense", [x], units=3))
    w = init_weights(g, seed=3)
    w["fc.bias"] = np.arange(3, dtype=np.float32)
    xv = randn(4, 7)
    y = run_graph(g, {"x": xv}, w)["y"]
    np.testing.assert_allclose(y, xv @ w["fc.weight"].T + w["fc.bias"], rtol=1e-5, atol=1e-6)


def test_output_can_be_an_input():
    g = Graph("passthrough")
    x = g.add_input("x", TensorType(("N", 3)))
    g.set_output("same", x)
    g.set_output("act", add_op(g, "r", "relu", [x]))
    xv = randn(2, 3)
    out = run_graph(g, {"x": xv}, {})
    np.testing.assert_array_equal(out["same"], xv)


# -- freeing values after their last use ----------------------------------------------------------------------------

def test_free_plan_small_cnn():
    g = small_cnn()
    plan = free_plan(g)
    names = [n.name for n in g.nodes]
    # each value is dropped by its only reader; the output value `fc` is kept
    assert dict(zip(names, plan)) == {
        "conv1": ["image"], "bn1": ["conv1"], "relu1": ["bn1"], "pool1": ["relu1"], "conv2": ["pool1"],
        "gap": ["conv2"], "flat": ["gap"], "fc": ["flat"]}


def test_values_are_freed_after_their_last_use():
    g = two_in_two_out()
    live = []
    run_graph(g, {"a": randn(1, 2, 4, 4), "b": randn(1, 2, 4, 4)}, {},
              observer=lambda node, env: live.append((node.name, sorted(env))))
    assert live == [
        ("s", ["a", "s"]),  # b is read by s only; a is still needed by `dead`
        ("dead", ["s"]),  # `dead`'s output has no reader: dropped at once, and so is a
        ("r", ["r", "s"]),  # s is a graph output: kept
    ]


def test_live_values_stay_small_in_a_chain():
    g = small_cnn()
    sizes = []
    run_graph(g, {"image": randn(1, 3, 8, 8)}, init_weights(g), observer=lambda n, env: sizes.append(len(env)))
    assert max(sizes) == 1


# -- errors while running -------------------------------------------------------------------------------------------

def test_op_failure_names_node_op_and_location(monkeypatch):
    g = small_cnn()

    def boom(attrs, xs, ps, ctx):
        raise ValueError("operands could not be broadcast")

    monkeypatch.setattr(REGISTRY["conv2d"], "reference", boom)
    with pytest.raises(ExecutionError) as info:
        run_graph(g, {"image": randn(1, 3, 8, 8)}, init_weights(g))
    assert str(info.value) == ("while executing node 'conv1' (conv2d) defined at net.gc:3:5: "
                               "ValueError: operands could not be broadcast")
    assert isinstance(info.value.__cause__, ValueError)
    assert isinstance(info.value, GraphconvError)


def test_op_failure_without_location(monkeypatch):
    g = small_cnn()
    monkeypatch.setattr(REGISTRY["relu"], "reference", lambda *a: 1 / 0)
    with pytest.raises(ExecutionError, match=r"^while executing node 'relu1' \(relu\): ZeroDivisionError: "):
        run_graph(g, {"image": randn(1, 3, 8, 8)}, init_weights(g))


def test_wrong_result_shape_is_reported(monkeypatch):
    g = small_cnn()
    monkeypatch.setattr(REGISTRY["relu"], "reference", lambda attrs, xs, ps, ctx: xs[0][:, :2])
    with pytest.raises(ExecutionError, match=r"node 'relu1' \(relu\).*returned shape \[1, 2, 8, 8\]"):
        run_graph(g, {"image": randn(1, 3, 8, 8)}, init_weights(g))


# -- input validation -----------------------------------------------------------------------------------------------

def test_missing_input():
    g = two_in_two_out()
    with pytest.raises(InputError, match=r"missing input 'b' \(f32\[N, 2, 4, 4\]\)"):
        run_graph(g, {"a": randn(1, 2, 4, 4)}, {})


def test_unknown_input_with_hint():
    g = small_cnn()
    with pytest.raises(InputError) as info:
        run_graph(g, {"imgae": randn(1, 3, 8, 8)}, init_weights(g))
    msg = str(info.value)
    assert "unknown input 'imgae' (did you mean 'image'?)" in msg and "missing input 'image'" in msg


def test_wrong_rank_and_static_dim():
    g = small_cnn()
    with pytest.raises(InputError, match=r"has shape \[3, 8, 8\] \(rank 3\); expected f32\[N, 3, 8, 8\]"):
        run_graph(g, {"image": randn(3, 8, 8)}, init_weights(g))
    with pytest.raises(InputError, match=r"dimension 1 is 4, must be 3"):
        run_graph(g, {"image": randn(1, 4, 8, 8)}, init_weights(g))


def test_batch_must_agree_across_inputs():
    g = two_in_two_out()
    with pytest.raises(InputError, match=r"input 'b' has N = 3 .* but input 'a' has N = 2"):
        run_graph(g, {"a": randn(2, 2, 4, 4), "b": randn(3, 2, 4, 4)}, {})


def test_input_dtype_must_be_floating():
    g = two_in_two_out()
    with pytest.raises(InputError, match=r"input 'a' has dtype int64; it must be floating point"):
        run_graph(g, {"a": np.ones((1, 2, 4, 4), dtype=np.int64), "b": randn(1, 2, 4, 4)}, {})


def test_all_input_problems_reported_together():
    g = two_in_two_out()
    with pytest.raises(InputError) as info:
        run_graph(g, {"a": np.ones((1, 2, 4, 4), dtype=np.int32), "c": randn(1)}, {})
    msg = str(info.value)
    assert "3 problems" in msg
    for part in ("unknown input 'c'", "missing input 'b'", "dtype int32"):
        assert part in msg


def test_weights_are_checked():
    g = small_cnn()
    w = init_weights(g)
    del w["conv1.bias"]
    w["fc.weight"] = w["fc.weight"].T
    w["fc.wieght"] = w["fc.bias"]
    with pytest.raises(WeightsError) as info:
        run_graph(g, {"image": randn(1, 3, 8, 8)}, w)
    msg = str(info.value)
    assert "missing parameter 'conv1.bias'" in msg
    assert "'fc.weight' has shape [6, 5]; expected [5, 6]" in msg
    assert "unknown parameter 'fc.wieght'" in msg


def test_unknown_dtype():
    g = two_in_two_out()
    with pytest.raises(GraphconvError, match="float16"):
        run_graph(g, {"a": randn(1, 2, 4, 4), "b": randn(1, 2, 4, 4)}, {}, dtype="float16")


# -- dtypes and modes -----------------------------------------------------------------------------------------------

def test_float64_runs_in_float64():
    g = small_cnn()
    w = init_weights(g, seed=2)
    x = randn(2, 3, 8, 8, dtype=np.float64)
    y64 = run_graph(g, {"image": x}, w, dtype="float64")["logits"]
    y32 = run_graph(g, {"image": x}, w, dtype="float32")["logits"]
    assert y64.dtype == np.float64 and y32.dtype == np.float32
    np.testing.assert_allclose(y64, by_hand(g, x, w, np.float64), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)


def test_fixed_params_use_their_spec_data():
    g = Graph("fixed")
    x = g.add_input("x", TensorType(("N", 1, 3, 3)))
    k = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    g.set_output("y", add_op(g, "edge", "conv2d", [x], out_channels=1, weight=k, bias=False))
    xv = np.ones((1, 1, 3, 3), np.float32)
    # the fixed weight comes from the spec, even when the weights dict holds something else
    y = run_graph(g, {"x": xv}, {"edge.weight": np.zeros((1, 1, 3, 3))})["y"]
    assert y.reshape(-1).tolist() == [36.0]
    assert run_graph(g, {"x": xv}, {})["y"].reshape(-1).tolist() == [36.0]


def test_training_mode_dropout_is_seeded():
    g = Graph("drop")
    x = g.add_input("x", TensorType(("N", 1000)))
    g.set_output("y", add_op(g, "drop", "dropout", [x], rate=0.5))
    xv = np.ones((2, 1000), np.float32)
    np.testing.assert_array_equal(run_graph(g, {"x": xv}, {})["y"], xv)  # inference: identity
    a = run_graph(g, {"x": xv}, {}, training=True, seed=1)["y"]
    b = run_graph(g, {"x": xv}, {}, training=True, seed=1)["y"]
    c = run_graph(g, {"x": xv}, {}, training=True, seed=2)["y"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) <= {0.0, 2.0} and 0.4 < (a == 0).mean() < 0.6


def test_inputs_are_not_modified():
    g = small_cnn()
    x = randn(1, 3, 8, 8, dtype=np.float64)
    before = x.copy()
    run_graph(g, {"image": x}, init_weights(g), dtype="float64")
    np.testing.assert_array_equal(x, before)


def test_dead_node_error_still_located(monkeypatch):
    g = two_in_two_out()
    g.node("dead").loc = SourceLoc("pair.gc", 9, 2)
    monkeypatch.setattr(REGISTRY["relu"], "reference", lambda *a: (_ for _ in ()).throw(KeyError("k")))
    with pytest.raises(ExecutionError, match=r"node 'dead' \(relu\) defined at pair.gc:9:2: KeyError: 'k'"):
        run_graph(g, {"a": randn(1, 2, 4, 4), "b": randn(1, 2, 4, 4)}, {})
