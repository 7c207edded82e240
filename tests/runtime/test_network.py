"""The Python API: Network, load, compile and calling a compiled model (spec loading stubbed with hand-built
graphs)."""

from __future__ import annotations

import numpy as np
import pytest

import graphconv
from graphconv import spec
from graphconv.errors import GraphconvError, InputError, WeightsError
from graphconv.network import Network, compile, load, load_network
from graphconv.weights import init_weights

from runtime_helpers import small_cnn, two_in_two_out


@pytest.fixture
def fake_spec(monkeypatch):
    """spec.load_graph returning hand-built graphs by file name; records the params it was given."""
    calls = []

    def load_graph(path, params=None, network=None):
        calls.append((path, params))
        return {"cnn.gc": small_cnn, "pair.gc": two_in_two_out}[path]()

    monkeypatch.setattr(spec, "load_graph", load_graph)
    return calls


def test_package_exports():
    assert graphconv.__version__ == "0.1.0"
    assert graphconv.load is load and graphconv.compile is compile and graphconv.Network is Network
    for name in ("GraphconvError", "SpecError", "WeightsError", "InputError", "ExecutionError"):
        assert issubclass(getattr(graphconv, name), Exception)
    with pytest.raises(AttributeError):
        graphconv.nope  # noqa: B018


def test_load_and_call_single_input(fake_spec):
    net = load("cnn.gc", seed=3, width=2)
    assert fake_spec == [("cnn.gc", {"width": 2})]
    assert net.num_params() == 371 and net.num_params(trainable_only=True) == 371
    assert "Network: small_cnn" in net.summary()
    model = compile(net)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    y = model(x)
    assert isinstance(y, np.ndarray) and y.shape == (2, 5)
    np.testing.assert_array_equal(model(image=x), y)
    np.testing.assert_array_equal(model({"image": x}), y)
    assert model.run({"image": x}).keys() == {"logits"}
    # the same seed gives the same weights
    np.testing.assert_array_equal(load("cnn.gc", seed=3).weights["conv1.weight"], net.weights["conv1.weight"])


def test_network_params_named_like_keywords(fake_spec):
    load_network("cnn.gc", {"seed": 5, "weights": 1}, seed=0)
    assert fake_spec[-1] == ("cnn.gc", {"seed": 5, "weights": 1})


def test_several_inputs_and_outputs(fake_spec):
    model = compile(load("pair.gc"), dtype="float64")
    a, b = np.ones((1, 2, 4, 4), np.float32), -2 * np.ones((1, 2, 4, 4), np.float32)
    out = model(a=a, b=b)
    assert isinstance(out, dict) and list(out) == ["sum", "act"]
    assert out["sum"].dtype == np.float64 and out["sum"].max() == -1 and out["act"].max() == 0
    assert list(model({"a": a, "b": b})) == ["sum", "act"]
    with pytest.raises(InputError, match=r"has 2 inputs \(a, b\); call it as model\(a=\.\.\., b=\.\.\.\)"):
        model(a)
    with pytest.raises(InputError, match="either positionally or by name"):
        model({"a": a}, b=b)
    with pytest.raises(InputError, match="missing input 'b'"):
        model(a=a)


def test_weights_round_trip_through_network(fake_spec, tmp_path):
    net = load("cnn.gc", seed=1)
    net.save_weights(tmp_path / "w.npz")
    other = load("cnn.gc", weights=tmp_path / "w.npz")
    for k in net.weights:
        np.testing.assert_array_equal(other.weights[k], net.weights[k])
    fresh = load("cnn.gc", seed=2)
    fresh.load_weights(tmp_path / "w.npz")
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_array_equal(compile(fresh)(x), compile(net)(x))


def test_weights_dict_is_checked(fake_spec):
    w = init_weights(small_cnn())
    assert load("cnn.gc", weights=w).weights["fc.bias"] is w["fc.bias"]
    del w["fc.bias"]
    with pytest.raises(WeightsError, match="missing parameter 'fc.bias'"):
        load("cnn.gc", weights=w)


def test_compile_is_a_snapshot(fake_spec):
    net = load("cnn.gc")
    model = compile(net)
    x = np.ones((1, 3, 8, 8), np.float32)
    before = model(x)
    net.weights = {k: np.zeros_like(v) for k, v in net.weights.items()}
    np.testing.assert_array_equal(model(x), before)


def test_unknown_backend_lists_available(fake_spec):
    net = load("cnn.gc")
    with pytest.raises(GraphconvError, match=r"unknown backend 'refrence' \(did you mean 'reference'\?\); "
                                             r"available backends: llvm, onnx, reference"):
        compile(net, "refrence")
    with pytest.raises(GraphconvError, match="available backends: llvm, onnx, reference"):
        compile(net, backend="tvm")
    with pytest.raises(GraphconvError, match="float16"):
        compile(net, dtype="float16")
    with pytest.raises(GraphconvError, match="takes a Network"):
        compile("cnn.gc")
