"""The training loop (graphconv.train.fit): learning, the run directory, exact resume, divergence, bad data,
augmentation, losses on several outputs, backends. Small networks on the 8×8 digits keep every test to seconds."""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import pytest

import graphconv
from graphconv.errors import TrainingError
from graphconv.train import loop
from graphconv.train.data import Data, DataError, Dataset, load_data
from graphconv.train.loop import (METRIC_KEYS, History, augment_batch, fit, parse_augment, read_checkpoint,
                                  resolve_backend)
from graphconv.weights import load_weights

# conv, batchnorm (running statistics are checkpointed), pooling and dropout (masks from seed and step)
TINY = """
network tiny(num_classes = 10) {
  input image: f32[N, 1, 8, 8]
  logits = image
    -> conv2d(8, 3, padding=1) as conv -> batchnorm as bn -> relu -> max_pool2d(2)
    -> flatten -> dropout(0.2) -> dense(num_classes) as fc
  output logits
}
"""

# two outputs of the same shape: the second gets an auxiliary loss of weight 0.3
TWO_HEADS = """
network heads(num_classes = 10) {
  input image: f32[N, 1, 8, 8]
  feat = image -> conv2d(4, 3, padding=1) as conv -> relu -> flatten
  logits = feat -> dense(num_classes) as fc
  aux = feat -> dense(num_classes) as aux_fc
  output logits, aux
}
"""

# real-valued targets: a regression head
REGRESS = """
network regress {
  input x: f32[N, 4]
  y = x -> dense(8) as h -> tanh -> dense(2) as out
  output y
}
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.gc"
    path.write_text(TINY)
    return str(path)


@pytest.fixture(scope="module")
def digits_small():
    """A fifth of the digits (seeded, stratified): for the tests that train several runs."""
    d = load_data("digits", (1, 8, 8))
    _, part = d.train.split(0.25, seed=1)
    return Data(Dataset(part.x, part.y, "digits (part)"), Dataset(d.test.x[:120], d.test.y[:120], "digits (test)"))


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_tiny_net_learns_digits(tiny):
    h = fit(tiny, "digits", epochs=6, lr=0.1, backend="onnx", progress=False)
    assert isinstance(h, History) and len(h) == 6
    assert h[-1]["test_acc"] >= 0.93 and h[-1]["val_acc"] >= 0.93
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    # the trained network is usable as it is
    model = graphconv.compile(h.net, "reference")
    d = load_data("digits", (1, 8, 8))
    acc = float((model(d.test.x).argmax(axis=1) == d.test.y).mean())
    assert acc == pytest.approx(h[-1]["test_acc"], abs=0.01)


def test_reference_and_onnx_agree(tiny, digits_small):
    a = fit(tiny, digits_small, epochs=1, backend="reference", progress=False)
    b = fit(tiny, digits_small, epochs=1, backend="onnx", progress=False)
    assert a[0]["train_loss"] == pytest.approx(b[0]["train_loss"], rel=1e-4)
    for k, v in a.net.weights.items():
        np.testing.assert_allclose(v, b.net.weights[k], rtol=1e-3, atol=1e-5)


def test_run_directory(tiny, tmp_path):
    out = tmp_path / "run"
    h = fit(tiny, "digits", epochs=2, backend="onnx", out=out, progress=False)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2] and records == [dict(r) for r in h.records]
    for r in records:
        assert set(r) == set(METRIC_KEYS)
        assert 0.0 <= r["train_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0
        assert r["seconds"] > 0 and r["samples_per_second"] > 0 and r["lr"] > 0
    per_epoch = math.ceil(len(load_data("digits", (1, 8, 8)).train.split(0.1)[0]) / 32)
    assert records[1]["step"] == 2 * per_epoch == h.steps

    meta = read_checkpoint(out)
    assert meta["epoch"] == 2 and meta["steps"] == 2 * per_epoch and meta["batch"] == 0
    assert meta["spec"] == os.path.abspath(tiny) and meta["data"] == "digits" and meta["seed"] == 0
    assert meta["settings"]["epochs"] == 2 and meta["settings"]["backend"] == "onnx"
    assert meta["state_sha256"] == sha(out / "checkpoint.npz")
    net = graphconv.load(tiny)
    state = np.load(out / "checkpoint.npz")
    assert "fc.weight@momentum" in state.files and "bn.running_mean" in state.files  # optimizer state, buffers

    w = load_weights(out / "weights.npz", net.graph)  # the network's parameters only
    assert set(np.load(out / "weights.npz").files) == set(net.graph.params)
    np.testing.assert_array_equal(w["fc.weight"], h.net.weights["fc.weight"])
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_plot_or_note(tiny, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    fit(tiny, "digits", epochs=1, backend="onnx", out=out, progress=False, max_steps=5)
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_skipped_without_matplotlib(tiny, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    logged: list[str] = []
    out = tmp_path / "run"
    h = fit(tiny, "digits", epochs=1, backend="onnx", out=out, progress=False, max_steps=3, log=logged.append)
    assert not (out / "plot.png").exists() and (out / "weights.npz").exists()
    (note,) = [n for n in logged if "plot.png" in n]
    assert "graphconv[plot]" in note and "\n" not in note and note in h.notes


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_is_bit_identical(tiny, digits_small, tmp_path, optimizer):
    """2 epochs, then resume for 2 more == 4 epochs straight (reference backend, cosine schedule, dropout and
    batchnorm in the network; Adam's bias correction counts the steps)."""
    opts = dict(epochs=4, backend="reference", progress=False, optimizer=optimizer,
                lr=0.05 if optimizer == "sgd" else 0.003)
    straight = fit(tiny, digits_small, out=tmp_path / "a", **opts)
    per_epoch = math.ceil(len(digits_small.train.split(0.1)[0]) / 32)
    first = fit(tiny, digits_small, out=tmp_path / "b", max_steps=2 * per_epoch, **opts)
    assert len(first) == 2 and read_checkpoint(tmp_path / "b")["epoch"] == 2
    resumed = fit(None, digits_small, resume=tmp_path / "b", progress=False)
    assert resumed.steps == straight.steps == 4 * per_epoch
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    for k, v in straight.net.weights.items():
        assert np.array_equal(v, resumed.net.weights[k]), k
    a, b = np.load(tmp_path / "a" / "checkpoint.npz"), np.load(tmp_path / "b" / "checkpoint.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)  # optimizer state too
    for ra, rb in zip(straight, resumed):
        assert ra["train_loss"] == rb["train_loss"] and ra["val_acc"] == rb["val_acc"]


def test_resume_with_more_epochs_constant_schedule(tiny, digits_small, tmp_path):
    """A finished 2-epoch run continued to 4 epochs == 4 epochs straight when the rate does not depend on the
    run's length; resuming in the middle of an epoch (max_steps) is exact as well."""
    opts = dict(backend="reference", schedule="constant", lr=0.05, progress=False)
    straight = fit(tiny, digits_small, epochs=4, **opts)
    fit(tiny, digits_small, epochs=2, out=tmp_path / "r", **opts)
    with pytest.raises(TrainingError, match="already finished 2 epochs"):
        fit(None, digits_small, resume=tmp_path / "r", progress=False)
    mid = fit(None, digits_small, resume=tmp_path / "r", epochs=4, max_steps=straight.steps - 3, progress=False)
    assert read_checkpoint(tmp_path / "r")["batch"] > 0  # stopped inside epoch 4
    assert len(mid) == 4
    done = fit(None, digits_small, resume=tmp_path / "r", progress=False)
    assert done.steps == straight.steps
    for k, v in straight.net.weights.items():
        assert np.array_equal(v, done.net.weights[k]), k
    assert [json.loads(x)["epoch"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()] == \
        [1, 2, 3, 4]


def test_divergence_stops_and_keeps_the_last_checkpoint(tiny, digits_small, tmp_path):
    out = tmp_path / "run"
    fit(tiny, digits_small, epochs=1, backend="onnx", out=out, progress=False)
    before = sha(out / "checkpoint.npz"), (out / "checkpoint.json").read_text(), (out / "metrics.jsonl").read_text()
    with pytest.raises(TrainingError) as e:
        fit(None, digits_small, resume=out, epochs=3, lr=1e6, schedule="constant", progress=False)
    msg = str(e.value)
    assert "diverged at epoch 2, step" in msg and "epoch 1) was kept" in msg and "lower learning rate" in msg
    after = sha(out / "checkpoint.npz"), (out / "checkpoint.json").read_text(), (out / "metrics.jsonl").read_text()
    assert after == before


def test_divergence_in_the_first_epoch(tiny, digits_small, tmp_path):
    with pytest.raises(TrainingError, match=r"diverged at epoch 1, step \d+: the loss .* no checkpoint had been "
                                            r"written yet"):
        fit(tiny, digits_small, epochs=2, lr=1e8, schedule="constant", backend="onnx", out=tmp_path / "x",
            progress=False)
    assert not (tmp_path / "x" / "checkpoint.npz").exists()


def test_nan_in_a_batch(tiny, digits_small):
    x = digits_small.train.x.copy()
    x[5, 0, 3, 3] = np.nan
    bad = Data(Dataset(x, digits_small.train.y, "poisoned"))
    with pytest.raises(TrainingError, match=r"epoch 1, step \d+: the batch holds NaN or infinite values \(training "
                                            r"sample \d+ of poisoned\)"):
        fit(tiny, bad, epochs=1, val_fraction=0.0, backend="onnx", progress=False)


def test_nan_in_a_data_file(tiny, tmp_path):
    x = np.random.default_rng(0).random((20, 8, 8)).astype(np.float32)
    x[3, 1, 1] = np.inf
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(20) % 10)
    with pytest.raises(DataError, match="NaN or infinite"):
        fit(tiny, tmp_path / "bad.npz", epochs=1, backend="onnx", progress=False)


def test_num_classes_from_the_data(tiny, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "three.npz", x=rng.random((60, 8, 8)).astype(np.float32), y=np.arange(60) % 3)
    h = fit(tiny, tmp_path / "three.npz", epochs=1, backend="onnx", progress=False, out=tmp_path / "run")
    assert h.net.graph.outputs["logits"].type.shape[1] == 3
    assert read_checkpoint(tmp_path / "run")["params"] == {"num_classes": 3}
    assert h[-1]["test_acc"] is None and h[-1]["val_acc"] is not None  # no test set in the file


def test_labels_beyond_the_outputs(tmp_path):
    (tmp_path / "fixed.gc").write_text(TINY.replace("num_classes = 10", "").replace("dense(num_classes)",
                                                                                   "dense(4)"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((30, 8, 8)).astype(np.float32), y=np.arange(30) % 6)
    with pytest.raises(DataError, match="label 5 is out of range.*4 classes"):
        fit(str(tmp_path / "fixed.gc"), tmp_path / "d.npz", epochs=1, backend="onnx", progress=False)


def test_augment_parsing():
    assert parse_augment("crop:4,flip") == ["crop:4", "flip"]
    assert parse_augment(("flip", "crop")) == ["flip", "crop:4"]
    assert parse_augment(None) == [] and parse_augment("") == []
    for bad, msg in (("rotate", "unknown augmentation"), ("crop:0", "padding"), ("crop:x", "padding"),
                     ("flip,flip", "twice")):
        with pytest.raises(TrainingError, match=msg):
            parse_augment(bad)


def test_augment_shapes_and_content():
    rng = np.random.default_rng(0)
    x = rng.random((16, 3, 8, 8)).astype(np.float32)
    y = augment_batch(x, ["crop:2", "flip"], np.random.default_rng(1))
    assert y.shape == x.shape and y.dtype == x.dtype and y is not x
    assert np.array_equal(y, augment_batch(x, ["crop:2", "flip"], np.random.default_rng(1)))  # seeded
    assert not np.array_equal(y, x)
    x_before = x.copy()
    flipped = augment_batch(x, ["flip"], np.random.default_rng(2))
    assert np.array_equal(x, x_before)  # the input is left alone
    for i in range(16):  # each sample is itself or its mirror image
        assert np.array_equal(flipped[i], x[i]) or np.array_equal(flipped[i], x[i][..., ::-1])
    cropped = augment_batch(x, ["crop:2"], np.random.default_rng(3))
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(16):  # each sample is an 8×8 window of the padded image
        assert any(np.array_equal(cropped[i], padded[i, :, a:a + 8, b:b + 8]) for a in range(5) for b in range(5))
    with pytest.raises(TrainingError, match=r"images \[N, C, H, W\]"):
        augment_batch(np.zeros((4, 10), np.float32), ["flip"], rng)


def test_augmented_training(tiny, digits_small):
    h = fit(tiny, digits_small, epochs=1, augment="crop:1,flip", backend="onnx", progress=False)
    plain = fit(tiny, digits_small, epochs=1, backend="onnx", progress=False)
    assert h.settings["augment"] == ["crop:1", "flip"] and h[0]["train_loss"] != plain[0]["train_loss"]


def test_auxiliary_losses(tmp_path, digits_small):
    (tmp_path / "heads.gc").write_text(TWO_HEADS)
    net = graphconv.load(tmp_path / "heads.gc")
    losses = loop._losses(net.graph, loop._resolve_settings({}, None), True)
    assert [(x.output, x.weight) for x in losses] == [("logits", 1.0), ("aux", 0.3)]
    h = fit(str(tmp_path / "heads.gc"), digits_small, epochs=2, lr=0.1, backend="onnx", progress=False)
    assert h[-1]["val_acc"] > 0.5  # accuracy is the first output's
    only_main = loop._losses(net.graph, loop._resolve_settings({"loss_weights": [1.0, 0.0]}, None), True)
    assert [x.output for x in only_main] == ["logits"]
    with pytest.raises(TrainingError, match="2 loss weights for 3 outputs|loss weights"):
        fit(str(tmp_path / "heads.gc"), digits_small, loss_weights=[1.0, 0.3, 0.3], epochs=1, progress=False,
            backend="onnx")


def test_mse_on_real_valued_targets(tmp_path):
    (tmp_path / "regress.gc").write_text(REGRESS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    y = np.stack([x[:, 0] - 0.5 * x[:, 1], 0.3 * x[:, 2] + x[:, 3]], axis=1).astype(np.float32)
    h = fit(str(tmp_path / "regress.gc"), (x, y), epochs=15, lr=0.05, batch_size=16, backend="onnx",
            progress=False)
    assert h.settings["loss"] == "mse"
    assert h[-1]["train_acc"] is None and h[-1]["val_acc"] is None
    assert h[-1]["val_loss"] < 0.25 * h[0]["val_loss"]
    with pytest.raises(TrainingError, match="label smoothing"):
        fit(str(tmp_path / "regress.gc"), (x, y), epochs=1, label_smoothing=0.1, backend="onnx", progress=False)


def test_settings_are_checked(tiny):
    for kwargs, msg in ((dict(epochs=0), "epochs"), (dict(batch_size=-1), "batch_size"), (dict(lr=0.0), "lr"),
                        (dict(optimizer="rmsprop"), "unknown optimizer"), (dict(schedule="linear"), "schedule"),
                        (dict(val_fraction=1.0), "val_fraction"), (dict(backend="tpu"), "unknown training backend"),
                        (dict(loss="hinge"), "unknown loss"), (dict(max_steps=0), "max_steps")):
        with pytest.raises(TrainingError, match=msg):
            fit(tiny, "digits", progress=False, **kwargs)


def test_a_run_directory_is_not_overwritten(tiny, digits_small, tmp_path):
    fit(tiny, digits_small, epochs=1, backend="onnx", out=tmp_path / "run", progress=False, max_steps=2)
    with pytest.raises(TrainingError, match="already holds a run"):
        fit(tiny, digits_small, epochs=1, backend="onnx", out=tmp_path / "run", progress=False)


def test_resume_problems(tiny, digits_small, tmp_path):
    with pytest.raises(TrainingError, match="not a run directory"):
        fit(None, None, resume=tmp_path / "nothing", progress=False)
    out = tmp_path / "run"
    fit(tiny, digits_small, epochs=2, backend="onnx", out=out, progress=False, max_steps=2)
    with pytest.raises(TrainingError, match="optimizer adam"):
        fit(None, digits_small, resume=out, optimizer="adam", progress=False)
    with pytest.raises(TrainingError, match="no data to train on"):
        fit(None, None, resume=out, progress=False)  # the data was given as arrays: not in the checkpoint
    (out / "checkpoint.npz").write_bytes((out / "checkpoint.npz").read_bytes()[:-10] + b"0123456789")
    with pytest.raises(TrainingError, match="does not belong to"):
        fit(None, digits_small, resume=out, progress=False)
    (out / "checkpoint.json").write_text("{not json")
    with pytest.raises(TrainingError, match="not readable JSON"):
        fit(None, digits_small, resume=out, progress=False)


def test_default_backend_falls_back_when_llvm_cannot_train(monkeypatch):
    monkeypatch.setattr(loop, "llvm_available", lambda: False)
    backend, note = resolve_backend(None)
    assert backend == loop.FALLBACK_BACKEND and "llvm training runner is not available" in note
    with pytest.raises(TrainingError, match="llvm backend cannot train in this build"):
        resolve_backend("llvm")
    monkeypatch.setattr(loop, "llvm_available", lambda: True)
    assert resolve_backend(None) == (loop.DEFAULT_BACKEND, None)
    assert resolve_backend("reference") == ("reference", None)


def test_fit_is_exported():
    import graphconv.train

    assert graphconv.train.fit is fit and graphconv.train.DEFAULT_BACKEND == loop.DEFAULT_BACKEND == "llvm"


@pytest.mark.slow
def test_lenet5_default_settings_reach_97_percent():
    """The documented claim: `graphconv train specs/lenet5.gc --data digits` (defaults, onnx backend)."""
    spec = os.path.join(os.path.dirname(__file__), "..", "..", "specs", "lenet5.gc")
    h = fit(spec, "digits", backend="onnx", progress=False)
    assert h[-1]["test_acc"] >= 0.97


def test_default_backend_falls_back_when_llvm_cannot_build_the_step(tiny, digits_small, monkeypatch):
    import graphconv.train.step as step_mod
    from graphconv.errors import GraphconvError

    real = step_mod.TrainStep

    def llvm_without_kernels(*args, backend="reference", **kwargs):
        if backend == "llvm":
            raise GraphconvError("the llvm backend has no kernel for op 'dense_grad_input'")
        return real(*args, backend=backend, **kwargs)

    monkeypatch.setattr(loop, "llvm_available", lambda: True)
    monkeypatch.setattr(step_mod, "TrainStep", llvm_without_kernels)
    logged: list[str] = []
    h = fit(tiny, digits_small, epochs=1, max_steps=2, progress=False, log=logged.append)
    assert h.backend == loop.FALLBACK_BACKEND == h.settings["backend"]
    assert any("llvm backend cannot train tiny" in n and "dense_grad_input" in n for n in logged)
    with pytest.raises(GraphconvError, match="no kernel"):  # asked for by name: no fallback
        fit(tiny, digits_small, epochs=1, backend="llvm", progress=False)


def test_a_loaded_network_starts_from_its_own_weights(tiny, digits_small):
    net = graphconv.load(tiny, seed=3)
    before = {k: v.copy() for k, v in net.weights.items()}
    h = fit(net, digits_small, epochs=1, backend="onnx", progress=False, max_steps=3)
    assert h.steps == 3 and h.net.graph is net.graph
    assert all(np.array_equal(v, net.weights[k]) for k, v in before.items())  # the given network is left alone
    assert not np.array_equal(h.net.weights["fc.weight"], before["fc.weight"])
    with pytest.raises(TrainingError, match="apply to a spec path"):
        fit(net, digits_small, params={"num_classes": 3}, progress=False)
