"""The llvm backend's runtime: input checks at the boundary, threads, determinism, the compile cache, CPU targets,
errors that name the layer, float64."""

import threading

import numpy as np
import pytest

import graphconv
from graphconv.errors import GraphconvError, InputError
from graphconv.ir.graph import Graph, TensorType
from graphconv.llvm import kernel as kernel_mod
from graphconv.llvm.compiler import cache_dir
from graphconv.llvm.kernel import CodegenError
from graphconv.network import Network
from graphconv.reference.executor import run_graph

from .helpers import add_op, seeded_weights


def _net(shape=(16, 5, 7)) -> Network:
    g = Graph("rt")
    x = g.add_input("x", TensorType(("N", *shape)))
    y = add_op(g, "bn", "batchnorm", [x])
    y = add_op(g, "act", "sigmoid", [y])
    z = add_op(g, "sum", "add", [y, x])
    g.set_output("y", z)
    g.set_output("same", z)  # the same value under a second name
    g.set_output("act", y)
    return Network(g, seeded_weights(g))


def _x(batch=2, shape=(16, 5, 7), seed=0):
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def _reference(net, x):
    return run_graph(net.graph, {"x": x.astype(np.float64)}, net.weights, dtype="float64")


def test_outputs_by_name_and_duplicates():
    net = _net()
    model = graphconv.compile(net, backend="llvm", threads=1, opt_level=0)
    x = _x()
    out = model(x)
    ref = _reference(net, x)
    assert list(out) == ["y", "same", "act"]
    for k in out:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-6)
    assert out["y"] is not out["same"]


@pytest.mark.parametrize("bad,message", [
    ({"y": _x()}, "unknown input 'y'"),
    ({}, "missing input 'x'"),
    ({"x": _x(shape=(16, 5, 6))}, "dimension 3 is 6, must be 7"),
    ({"x": _x()[:, :, :, :, None]}, "rank"),
    ({"x": _x().astype(np.float64)}, "compiled for float32"),
    ({"x": np.asfortranarray(_x())}, "not C-contiguous"),
    ({"x": _x().astype(np.int32)}, "floating point"),
])
def test_bad_inputs_are_refused_before_native_code(bad, message):
    model = graphconv.compile(_net(), backend="llvm", threads=1, opt_level=0)
    with pytest.raises(InputError, match=message):
        model.run(bad)


def test_strided_view_is_refused():
    model = graphconv.compile(_net(), backend="llvm", threads=1, opt_level=0)
    x = _x(batch=4)[::2]
    with pytest.raises(InputError, match="C-contiguous"):
        model(x)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_repeated_runs_are_bit_identical(threads):
    net = _net()
    model = graphconv.compile(net, backend="llvm", threads=threads, opt_level=2)
    x = _x(batch=3)
    first = model(x)
    for _ in range(5):
        again = model(x)
        for k in first:
            assert np.array_equal(first[k], again[k])


def test_batch_sizes_share_one_compile():
    net = _net()
    model = graphconv.compile(net, backend="llvm", threads=2, opt_level=2)
    for batch in (1, 5, 2, 7):
        x = _x(batch, seed=batch)
        np.testing.assert_allclose(model(x)["y"], _reference(net, x)["y"], rtol=1e-5, atol=1e-6)


def test_calls_from_many_python_threads():
    net = _net()
    model = graphconv.compile(net, backend="llvm", threads=2, opt_level=2)
    xs = [_x(batch=1 + k % 3, seed=k) for k in range(8)]
    want = [_reference(net, x)["y"] for x in xs]
    errors = []

    def work(k):
        try:
            for _ in range(10):
                np.testing.assert_allclose(model(xs[k])["y"], want[k], rtol=1e-5, atol=1e-6)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[0]


def test_compile_cache_hit_and_bypass():
    net = _net((16, 3, 3))
    first = graphconv.compile(net, backend="llvm", threads=1, opt_level=2)
    assert not first.compiled.cached
    assert list(cache_dir().glob(f"{first.compiled.key}.*"))
    second = graphconv.compile(net, backend="llvm", threads=1, opt_level=2)
    assert second.compiled.cached and second.compiled.key == first.compiled.key
    x = _x(shape=(16, 3, 3))
    assert np.array_equal(first(x)["y"], second(x)["y"])
    third = graphconv.compile(net, backend="llvm", threads=1, opt_level=2, cache=False)
    assert not third.compiled.cached
    # new weights need no recompile: the key is the code's, the weights live in the blob
    net2 = Network(net.graph, seeded_weights(net.graph, seed=7))
    fourth = graphconv.compile(net2, backend="llvm", threads=1, opt_level=2)
    assert fourth.compiled.cached
    np.testing.assert_allclose(fourth(x)["y"], _reference(net2, x)["y"], rtol=1e-5, atol=1e-6)


def test_corrupt_cache_entry_is_rebuilt():
    net = _net((16, 2, 2))
    first = graphconv.compile(net, backend="llvm", threads=1, opt_level=1)
    (cache_dir() / f"{first.compiled.key}.o").write_bytes(b"garbage")
    again = graphconv.compile(net, backend="llvm", threads=1, opt_level=1)
    assert not again.compiled.cached
    x = _x(shape=(16, 2, 2))
    np.testing.assert_allclose(again(x)["y"], _reference(net, x)["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("features,bits", [("-avx512f", 256), ("-avx512f,-avx2,-avx,-fma", 128)])
def test_narrower_vector_targets(features, bits):
    from graphconv.llvm.target import Target

    host = Target.host()
    if "avx512f" not in host.feature_set:
        pytest.skip("needs an AVX-512 host to compare against narrower builds")
    net = _net()
    model = graphconv.compile(net, backend="llvm", threads=1, opt_level=2, target_features=features)
    assert model.target.vector_bits == bits
    x = _x()
    np.testing.assert_allclose(model(x)["y"], _reference(net, x)["y"], rtol=1e-5, atol=1e-6)


def test_float64_model():
    net = _net()
    model = graphconv.compile(net, backend="llvm", dtype="float64", threads=2, opt_level=2)
    x = _x().astype(np.float64)
    np.testing.assert_allclose(model(x)["y"], _reference(net, x)["y"], rtol=1e-12, atol=1e-12)


def test_invalid_ir_names_the_layer(monkeypatch):
    def broken(kc):  # returns an i64 from a void function: invalid IR the verifier must catch
        kc.kb.b.ret(kc.kb.i64(1))

    monkeypatch.setitem(kernel_mod.KERNELS, "sigmoid", broken)
    with pytest.raises(CodegenError, match=r"layer 'act' \(sigmoid\).*invalid"):
        graphconv.compile(_net(), backend="llvm", threads=1, opt_level=0, cache=False)


def test_emitter_crash_names_the_layer(monkeypatch):
    def crash(kc):
        raise ZeroDivisionError("boom")

    monkeypatch.setitem(kernel_mod.KERNELS, "sigmoid", crash)
    with pytest.raises(CodegenError, match=r"layer 'act' \(sigmoid\).*ZeroDivisionError: boom"):
        graphconv.compile(_net(), backend="llvm", threads=1, opt_level=0, cache=False)


def test_options_are_checked():
    net = _net()
    with pytest.raises(GraphconvError, match="threads"):
        graphconv.compile(net, backend="llvm", threads=0)
    with pytest.raises(GraphconvError, match="no option 'thread'"):
        graphconv.compile(net, backend="llvm", thread=2)
    with pytest.raises(GraphconvError, match="CPU"):
        graphconv.compile(net, backend="llvm", device="cuda")


def test_two_symbolic_dimensions_are_refused():
    g = Graph("two")
    x = g.add_input("x", TensorType(("N", 4)))
    y = g.add_input("y", TensorType(("M", 4)))
    g.set_output("a", add_op(g, "a", "relu", [x]))
    g.set_output("b", add_op(g, "b", "relu", [y]))
    with pytest.raises(CodegenError, match="one symbolic"):
        graphconv.compile(Network(g, {}), backend="llvm", opt_level=0)


def test_static_shapes():
    g = Graph("static")
    x = g.add_input("x", TensorType((2, 16, 3, 3)))
    g.set_output("y", add_op(g, "s", "tanh", [x]))
    model = graphconv.compile(Network(g, {}), backend="llvm", threads=2, opt_level=0)
    xin = _x(batch=2, shape=(16, 3, 3))
    np.testing.assert_allclose(model(xin), np.tanh(xin), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError):
        model(_x(batch=3, shape=(16, 3, 3)))


def test_unknown_cpu_is_an_error():
    from graphconv.llvm.target import Target

    with pytest.raises(GraphconvError, match="does not know the CPU 'pentium9000'"):
        Target.host(cpu="pentium9000")
    with pytest.raises(GraphconvError, match="must start with"):
        Target.host(features="avx2")


def test_named_cpus_imply_their_vector_width():
    from graphconv.llvm.target import Target

    assert Target.host(cpu="x86-64-v3").vector_bits == 256
    assert Target.host(cpu="skylake-avx512").vector_bits == 512
    assert Target.host(cpu="x86-64").vector_bits == 128
    assert Target.host(cpu="skylake-avx512", features="-avx512f").vector_bits == 256


def test_small_runs_stay_on_one_thread(monkeypatch):
    """Below min_parallel_flops the workers are not woken (their wake-up would cost more than the work)."""
    from graphconv.llvm.runtime import LLVMModel

    monkeypatch.setattr(LLVMModel, "min_parallel_flops", 20e6)
    model = graphconv.compile(_net(), backend="llvm", threads=2, opt_level=2)
    calls = []
    monkeypatch.setattr(model._workers, "run", lambda *a: calls.append(a))
    x = _x()
    np.testing.assert_allclose(model(x)["y"], _reference(_net(), x)["y"], rtol=1e-5, atol=1e-6)
    assert not calls
    monkeypatch.setattr(LLVMModel, "min_parallel_flops", 0)
    model(x)
    assert len(calls) == 1


def _hand_written_epilogue(steps_before_pool: bool):
    """A conv whose epilogue holds a max pool and an add of a broadcasting operand: not what the optimizer makes,
    but valid IR the code generator must split correctly."""
    from graphconv.ir.verify import verify
    from graphconv.ops import REGISTRY
    from graphconv.ops.build import emit, plan

    g = Graph("split")
    x = g.add_input("x", TensorType(("N", 8, 8, 8)))
    s = g.add_input("s", TensorType((1, 16, 1, 1)))
    p = plan("conv2d", dict(out_channels=16, kernel=3, padding=1), [x.type])
    node = emit(g, "conv", p, [x])
    pool = plan("max_pool2d", dict(kernel=2, stride=2), [p.out_type])
    pool_step = ("max_pool2d", tuple(REGISTRY["max_pool2d"].ir_attrs(pool.attrs).items()), None)
    steps = [("add", (), 1), pool_step] if steps_before_pool else [pool_step, ("add", (), 1)]
    node.inputs = [x, s]
    node.attrs["epilogue"] = (*steps, ("relu", (), None))
    node.output.type = pool.out_type
    g.set_output("y", node.output)
    verify(g)
    return g


@pytest.mark.parametrize("add_first", [False, True])
def test_split_epilogues_with_window_steps_and_broadcasts(add_first):
    from .helpers import check

    check(_hand_written_epilogue(add_first), levels=(0,))


def test_profile_times_every_layer():
    net = _net()
    model = graphconv.compile(net, backend="llvm", threads=2, opt_level=0)
    layers = model.profile({"x": _x()}, repeat=3)
    assert [name for name, _ in layers] == ["bn (batchnorm)", "act (sigmoid)", "sum (add)"]
    assert all(ms >= 0 for _, ms in layers) and sum(ms for _, ms in layers) > 0
    np.testing.assert_allclose(model(_x())["y"], _reference(net, _x())["y"], rtol=1e-5, atol=1e-6)
