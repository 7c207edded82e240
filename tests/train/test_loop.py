"""The training loop (graphconv.train.fit): learning, the run directory, exact resume, divergence, bad data,
augmentation, losses on several outputs, backends. Small networks on the 8×8 digits keep every test to seconds."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil

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


def state_file(run_dir):
    """The state file checkpoint.json names (checkpoint.npz in version 1)."""
    return run_dir / json.loads((run_dir / "checkpoint.json").read_text()).get("state", "checkpoint.npz")


def state_files(run_dir) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint") and p.suffix == ".npz")


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
    assert meta["state"] == f"checkpoint-{h.steps}.npz" and meta["state_sha256"] == sha(out / meta["state"])
    assert state_files(out) == [meta["state"]]  # the first epoch's state file is gone
    net = graphconv.load(tiny)
    state = np.load(out / meta["state"])
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
    a, b = np.load(state_file(tmp_path / "a")), np.load(state_file(tmp_path / "b"))
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
    before = sha(state_file(out)), (out / "checkpoint.json").read_text(), (out / "metrics.jsonl").read_text()
    with pytest.raises(TrainingError) as e:
        fit(None, digits_small, resume=out, epochs=3, lr=1e6, schedule="constant", progress=False)
    msg = str(e.value)
    assert "diverged at epoch 2, step" in msg and "epoch 1) was kept" in msg and "lower learning rate" in msg
    after = sha(state_file(out)), (out / "checkpoint.json").read_text(), (out / "metrics.jsonl").read_text()
    assert after == before and len(state_files(out)) == 1


def test_divergence_in_the_first_epoch(tiny, digits_small, tmp_path):
    with pytest.raises(TrainingError, match=r"diverged at epoch 1, step \d+: the loss .* no checkpoint had been "
                                            r"written yet"):
        fit(tiny, digits_small, epochs=2, lr=1e8, schedule="constant", backend="onnx", out=tmp_path / "x",
            progress=False)
    assert not (tmp_path / "x" / "checkpoint.json").exists() and not state_files(tmp_path / "x")


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
    with pytest.raises(TrainingError, match=re.escape("3 loss weights for 2 outputs (logits, aux)")):
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
    # well below what predicting 0 costs (mean of y²: 1.17), and still falling after the first epoch (seeds 0-4:
    # 0.03-0.08 after 15 epochs, 0.14-0.37 after 1)
    assert h[-1]["val_loss"] < 0.1 * float((y ** 2).mean()) and h[-1]["val_loss"] < h[0]["val_loss"]
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
    state_file(out).write_bytes(state_file(out).read_bytes()[:-10] + b"0123456789")
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


# -- the checkpoint survives a crash at any point of saving ---------------------------------------------------------

class Interrupted(BaseException):
    """A crash (the process dies) at a chosen point of save_checkpoint."""


def test_interrupted_between_the_state_file_and_checkpoint_json(tiny, digits_small, tmp_path, monkeypatch):
    """A crash after the new state file is in place but before checkpoint.json names it: the last good checkpoint
    (the previous epoch's) is intact and a resume from it takes exactly the steps of the uninterrupted run."""
    opts = dict(backend="reference", schedule="constant", progress=False)
    straight = fit(tiny, digits_small, epochs=2, **opts)
    out = tmp_path / "run"
    real_write = loop._atomic_write
    jsons = []

    def dies_at_the_second_checkpoint_json(path, data):
        if path.name == "checkpoint.json":
            jsons.append(path)
            if len(jsons) == 2:
                raise Interrupted()
        real_write(path, data)

    monkeypatch.setattr(loop, "_atomic_write", dies_at_the_second_checkpoint_json)
    with pytest.raises(Interrupted):
        fit(tiny, digits_small, epochs=2, out=out, **opts)
    monkeypatch.setattr(loop, "_atomic_write", real_write)
    meta = read_checkpoint(out)
    assert meta["epoch"] == 1 and sha(state_file(out)) == meta["state_sha256"]  # the state it names is intact
    assert len(state_files(out)) == 2  # epoch 2's state file, which checkpoint.json never named, is there too
    resumed = fit(None, digits_small, resume=out, progress=False)
    assert resumed.steps == straight.steps
    for k, v in straight.net.weights.items():
        assert np.array_equal(v, resumed.net.weights[k]), k
    assert state_files(out) == [read_checkpoint(out)["state"]]  # the next save cleared the leftover


def test_interrupted_before_the_old_state_file_is_deleted(tiny, digits_small, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = []

    def dies(folder, keep):
        calls.append(keep)
        raise Interrupted()

    monkeypatch.setattr(loop, "_remove_old_states", dies)
    with pytest.raises(Interrupted):
        fit(tiny, digits_small, epochs=1, backend="onnx", out=out, progress=False, max_steps=2)
    monkeypatch.undo()
    meta = read_checkpoint(out)  # the new checkpoint is complete
    assert meta["state"] == calls[0] == "checkpoint-2.npz" and meta["batch"] == 2
    h = fit(None, digits_small, resume=out, progress=False, max_steps=4)
    assert h.steps == 4 and state_files(out) == ["checkpoint-4.npz"]


@pytest.mark.parametrize("name", ["../checkpoint-3.npz", "sub/checkpoint-3.npz", "/tmp/checkpoint-3.npz", "..",
                                  "checkpoint-3.npz/../../x.npz", "checkpoint-3.npz\\..\\x", "metrics.jsonl", 3])
def test_the_state_file_is_inside_the_run_directory(tiny, digits_small, tmp_path, name):
    out = tmp_path / "run"
    fit(tiny, digits_small, epochs=1, backend="onnx", out=out, progress=False, max_steps=2)
    meta = json.loads((out / "checkpoint.json").read_text())
    meta["state"] = name
    (out / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(TrainingError, match=r"bad state: it must be the name of a state file in the run directory"):
        fit(None, digits_small, resume=out, progress=False)


def test_a_version_1_checkpoint_still_resumes(tiny, digits_small, tmp_path):
    """Version 1 kept the state in checkpoint.npz (and checkpoint.json had no "state")."""
    out = tmp_path / "run"
    fit(tiny, digits_small, epochs=1, backend="onnx", out=out, progress=False, max_steps=2)
    meta = json.loads((out / "checkpoint.json").read_text())
    state_file(out).rename(out / "checkpoint.npz")
    del meta["state"]
    meta["version"] = 1
    (out / "checkpoint.json").write_text(json.dumps(meta))
    h = fit(None, digits_small, resume=out, progress=False, max_steps=3)
    assert h.steps == 3 and state_files(out) == ["checkpoint-3.npz"]


# -- resuming a run of a loaded Network, custom Adam settings -------------------------------------------------------

def test_resume_a_network_loaded_with_parameters(tiny, digits_small, tmp_path):
    net = graphconv.load(tiny, num_classes=12)  # more classes than the data has
    out = tmp_path / "run"
    fit(net, digits_small, epochs=2, backend="onnx", out=out, progress=False, max_steps=3)
    assert read_checkpoint(out)["params"] == {"num_classes": 12}
    h = fit(None, digits_small, resume=out, progress=False, max_steps=5)
    assert h.steps == 5 and h.net.graph.outputs["logits"].type.shape[1] == 12


def test_custom_adam_settings_survive_a_resume(tiny, digits_small, tmp_path):
    from graphconv.train.optim import Optimizer

    opt = Optimizer("adam", beta1=0.5, beta2=0.9, eps=1e-3)
    opts = dict(epochs=1, backend="reference", lr=0.01, progress=False)
    straight = fit(tiny, digits_small, optimizer=opt, max_steps=6, **opts)
    fit(tiny, digits_small, optimizer=opt, out=tmp_path / "run", max_steps=3, **opts)
    settings = read_checkpoint(tmp_path / "run")["settings"]
    assert (settings["beta1"], settings["beta2"], settings["eps"]) == (0.5, 0.9, 1e-3)
    resumed = fit(None, digits_small, resume=tmp_path / "run", progress=False, max_steps=6)
    assert resumed.steps == straight.steps == 6
    for k, v in straight.net.weights.items():
        assert np.array_equal(v, resumed.net.weights[k]), k


# -- bad values in checkpoint.json ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mid_epoch_run(tmp_path_factory, digits_small):
    """A run directory checkpointed inside its first epoch (so checkpoint.json has "partial")."""
    folder = tmp_path_factory.mktemp("mid")
    (folder / "tiny.gc").write_text(TINY)
    out = folder / "run"
    fit(str(folder / "tiny.gc"), digits_small, epochs=1, backend="onnx", out=out, progress=False, max_steps=2)
    assert read_checkpoint(out)["partial"] is not None
    return out


@pytest.mark.parametrize("where, value, field", [
    (("settings", "augment"), 5, "settings.augment"),
    (("settings", "augment"), ["rotate"], "settings.augment"),
    (("settings", "loss_weights"), "ab", "settings.loss_weights"),
    (("settings", "loss_weights"), {"logits": "x"}, "settings.loss_weights"),
    (("settings", "momentum"), "x", "settings.momentum"),
    (("settings", "momentum"), 3.0, "settings.momentum"),
    (("settings", "nesterov"), "no", "settings.nesterov"),
    (("settings", "lr"), None, "settings.lr"),
    (("settings", "epochs"), 2.5, "settings.epochs"),
    (("settings", "beta1"), "x", "settings.beta1"),
    (("settings", "threads"), "4", "settings.threads"),
    (("settings", "optimizer"), 1, "settings.optimizer"),
    (("partial", "loss_sum"), "x", "partial.loss_sum"),
    (("partial", "seen"), -1, "partial.seen"),
    (("initial_loss",), "x", "initial_loss"),
    (("params",), "abc", "params"),
    (("params",), {"num_classes": {"a": 1}}, "params"),
    (("per_epoch",), "x", "per_epoch"),
    (("spec",), 5, "spec"),
    (("partial",), [1], "partial"),
    (("steps",), True, "steps"),
])
def test_bad_checkpoint_fields_are_named(mid_epoch_run, digits_small, tmp_path, where, value, field):
    out = tmp_path / "run"
    shutil.copytree(mid_epoch_run, out)
    meta = json.loads((out / "checkpoint.json").read_text())
    node = meta
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    (out / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(TrainingError) as e:
        fit(None, digits_small, resume=out, progress=False)
    msg = str(e.value)
    assert (f"has a bad {field}: it must be" in msg or f"the checkpoint's {field} " in msg
            or re.search(rf"missing or wrong: .*\b{field}\b", msg)), msg


def test_bad_settings_given_through_the_api_are_named(tiny):
    for kwargs, msg in ((dict(momentum="x"), "momentum must be a number, got 'x'"),
                        (dict(nesterov="no"), "nesterov must be true or false, got 'no'"),
                        (dict(augment=5), "augment must be a list of augmentation names, got 5"),
                        (dict(loss_weights="ab"), "loss_weights must be a list of numbers"),
                        (dict(epochs="3"), "epochs must be a whole number, got '3'")):
        with pytest.raises(TrainingError, match=re.escape(msg)):
            fit(tiny, "digits", progress=False, **kwargs)


# -- the step schedule, random streams, loss weights by name ---------------------------------------------------------

@pytest.mark.parametrize("epochs, expected", [
    (4, [1, 1, 0.1, 0.1]),
    (5, [1, 1, 0.1, 0.1, 0.01]),
    (20, [1] * 7 + [0.1] * 7 + [0.01] * 6),
])
def test_step_schedule_decays_after_each_third_of_the_run(tmp_path, epochs, expected):
    """One step per epoch: the rate of epoch e is the rate of step e - 1."""
    (tmp_path / "regress.gc").write_text(REGRESS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)
    h = fit(str(tmp_path / "regress.gc"), (x, y), epochs=epochs, batch_size=8, val_fraction=0.0, lr=0.05,
            schedule="step", backend="onnx", progress=False)
    np.testing.assert_allclose([r["lr"] for r in h], [0.05 * f for f in expected], rtol=1e-12)


def test_step_schedule_size_counts_the_steps_after_warmup():
    assert loop.step_schedule_size(12, 0) == 4 and loop.step_schedule_size(13, 0) == 5
    assert loop.step_schedule_size(100, 10) == 30 and loop.step_schedule_size(5, 5) == 1
    from graphconv.train.schedule import make_schedule

    sched = make_schedule("step", 1.0, total_steps=100, warmup_steps=10, step_size=loop.step_schedule_size(100, 10))
    assert [sched(i) for i in (10, 39, 40, 69, 70, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_random_streams_are_distinct(tiny):
    """SeedSequence ignores trailing zeros: without tags the dropout masks of step k were the batch order stream of
    epoch k ([s, k, 0] == [s, k]) and step 0's the validation split's (default_rng(s) == [s, 0, 0])."""
    from graphconv.train.autodiff import Loss
    from graphconv.train.step import TrainStep

    def draw(seed_seq, n=16):
        return np.random.default_rng(seed_seq).random(n)

    for seed in (0, 1, 7):
        step = TrainStep(graphconv.load(tiny), [Loss("logits")], backend="reference", seed=seed)
        (name,) = step.tg.masks
        rate = step.tg.masks[name]
        for k in range(4):
            step.steps = k
            mask = step.masks(2)[name]
            u = np.random.default_rng(loop._stream(loop.STREAM_DROPOUT, seed, k, 0)).random(mask.shape)
            assert np.array_equal(mask, ((u >= rate) / (1 - rate)).astype(mask.dtype))  # the dropout stream
            for other in (np.random.SeedSequence([seed, k]), np.random.SeedSequence(seed),
                          loop._stream(loop.STREAM_ORDER, seed, k), loop._stream(loop.STREAM_VAL_SPLIT, seed),
                          loop._stream(loop.STREAM_AUG, seed, k, 0)):
                u_other = np.random.default_rng(other).random(mask.shape)
                assert not np.array_equal(u, u_other)
        streams = [loop._stream(loop.STREAM_VAL_SPLIT, seed)]
        for e in range(4):
            streams.append(loop._stream(loop.STREAM_ORDER, seed, e))
            streams += [loop._stream(loop.STREAM_AUG, seed, e, b) for b in range(3)]
            streams += [loop._stream(loop.STREAM_DROPOUT, seed, e, k) for k in range(3)]
        firsts = {tuple(draw(x)) for x in streams}
        assert len(firsts) == len(streams)
    # the validation split is no longer the one default_rng(seed) draws
    d = load_data("digits", (1, 8, 8))
    _, val = loop._split(d.train, 0.1, 0)
    _, old_val = d.train.split(0.1, seed=0)
    assert len(val) == len(old_val) and not np.array_equal(val.x, old_val.x)


THREE_HEADS = """
network heads3(num_classes = 10) {
  input image: f32[N, 1, 8, 8]
  feat = image -> conv2d(4, 3, padding=1) as conv -> relu -> flatten
  logits = feat -> dense(num_classes) as fc
  aux = feat -> dense(num_classes) as aux_fc
  emb = feat -> dense(3) as emb_fc
  output logits, aux, emb
}
"""


def test_loss_weights_by_name_keep_the_defaults_of_the_others(tmp_path):
    (tmp_path / "heads3.gc").write_text(THREE_HEADS)
    g = graphconv.load(tmp_path / "heads3.gc").graph

    def weights(lw):
        return [(x.output, x.weight) for x in loop._losses(g, loop._resolve_settings({"loss_weights": lw}, None),
                                                           True)]

    assert weights(None) == [("logits", 1.0), ("aux", 0.3)]
    assert weights({"logits": 2.0}) == [("logits", 2.0), ("aux", loop.AUX_WEIGHT)]
    assert weights({"aux": 0.5}) == [("logits", 1.0), ("aux", 0.5)]
    assert weights({"aux": 0.0}) == [("logits", 1.0)]
    assert weights({"emb": 0.0}) == [("logits", 1.0), ("aux", 0.3)]
    for lw in ({"emb": 0.5}, [1.0, 0.3, 0.5]):
        with pytest.raises(TrainingError, match=re.escape("output 'emb' has shape [N, 3], the main output 'logits' "
                                                          "[N, 10]: it cannot have a loss")):
            weights(lw)


def test_a_last_batch_of_one_joins_the_one_before(tmp_path):
    spec = tmp_path / "flat.gc"
    spec.write_text("network flat(num_classes = 4) {\n  input x: f32[N, 6]\n"
                    "  logits = x -> dense(8) as fc1 -> batchnorm as bn -> relu -> dense(num_classes) as fc2\n"
                    "  output logits\n}\n")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = (rng.normal(size=(40, 6)) + y[:, None]).astype(np.float32)
    # 40 samples, 4 held out for validation: 36 train in batches of 5 would leave a batch of one
    h = fit(str(spec), (x, y), epochs=2, batch_size=5, backend="reference", progress=False)
    assert [r["step"] for r in h] == [7, 14]
