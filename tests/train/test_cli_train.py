"""`graphconv train`: a run from the command line, its run directory used by `run` and `export-onnx`, resume,
--json, and errors as one message with exit status 1."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from graphconv import cli

TINY = """
network tiny(num_classes = 10) {
  input image: f32[N, 1, 8, 8]
  logits = image -> conv2d(8, 3, padding=1) as conv -> relu -> max_pool2d(2) -> flatten -> dense(num_classes) as fc
  output logits
}
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.gc"
    path.write_text(TINY)
    return str(path)


def train(*argv):
    return cli.main(["train", *map(str, argv)])


def test_train_then_run_and_export_the_weights(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tiny, "--data", "digits", "--epochs", "4", "--lr", "0.1", "--backend", "onnx", "--out", out) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("training tiny (") and "digits" in text[0] and "onnx" in text[0]
    epochs = [line for line in text if line.startswith("epoch ")]
    assert len(epochs) == 4 and epochs[-1].startswith("epoch 4/4  loss ")
    assert "test_acc" in epochs[-1] and "samples/s" in epochs[-1]
    summary = next(line for line in text if line.startswith("trained tiny"))
    acc = float(summary.rsplit("test accuracy ", 1)[1].rstrip("%")) / 100
    assert acc >= 0.9
    assert {p.name for p in out.iterdir()} >= {"metrics.jsonl", "checkpoint.json", "weights.npz"}
    state = json.loads((out / "checkpoint.json").read_text())["state"]
    assert [p.name for p in out.glob("checkpoint*.npz")] == [state] and state.startswith("checkpoint-")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4

    # the weights file is what `run --weights` and `export-onnx --weights` take
    from graphconv.train.data import load_data

    d = load_data("digits", (1, 8, 8))
    np.save(tmp_path / "x.npy", d.test.x[:50])
    assert cli.main(["run", tiny, "--weights", str(out / "weights.npz"), "--input", str(tmp_path / "x.npy"),
                     "--output", str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    assert (y.argmax(axis=1) == d.test.y[:50]).mean() >= 0.85
    assert cli.main(["export-onnx", tiny, "--weights", str(out / "weights.npz"), "-o",
                     str(tmp_path / "tiny.onnx")]) == 0
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    z = sess.run(None, {"image": d.test.x[:50]})[0]
    np.testing.assert_allclose(z, y, rtol=1e-4, atol=1e-4)


def test_resume_from_the_command_line(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tiny, "--data", "digits", "--epochs", "2", "--backend", "onnx", "--schedule", "constant",
                 "--out", out) == 0
    capsys.readouterr()
    assert train("--resume", out, "--epochs", "3") == 0
    text = capsys.readouterr().out
    assert "resuming at epoch 3" in text and "epoch 3/3" in text and "epoch 2/" not in text
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["epoch"] == 3 and meta["settings"]["epochs"] == 3 and meta["settings"]["schedule"] == "constant"
    # finished: more epochs are needed
    assert train("--resume", out) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "already finished 3 epochs" in err and "\n" not in err


def test_json_output(tiny, tmp_path, capsys):
    assert train(tiny, "--data", "digits", "--epochs", "1", "--backend", "onnx", "--json", "--max-steps", "5") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["network"] == "tiny" and doc["backend"] == "onnx" and doc["steps"] == 5 and doc["out"] is None
    assert len(doc["epochs"]) == 1 and doc["epochs"][0]["epoch"] == 1 and doc["settings"]["batch_size"] == 32


def test_network_parameters_with_set(tiny, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "four.npz", x=rng.random((40, 8, 8)).astype(np.float32), y=np.arange(40) % 4)
    assert train(tiny, "--data", tmp_path / "four.npz", "--epochs", "1", "--backend", "reference",
                 "--out", tmp_path / "run") == 0
    text = capsys.readouterr().out
    assert "num_classes=4" in text and "--set num_classes=4 --weights" in text


@pytest.mark.parametrize("argv, message", [
    (["{tiny}"], "give the training data"),
    (["--data", "digits"], "give the SPEC"),
    (["{tiny}", "--data", "nowhere.npz"], "no dataset 'nowhere.npz'"),
    (["{tiny}", "--data", "digits", "--augment", "rotate"], "unknown augmentation 'rotate'"),
    (["{tiny}", "--data", "digits", "--backend", "reference", "--threads", "2"], "--threads applies"),
    (["--resume", "{tmp}/missing"], "not a run directory"),
    (["{tmp}/missing.gc", "--data", "digits"], "missing.gc"),
    (["{tiny}", "--data", "{tmp}/nan.npz"], "NaN or infinite"),
    (["{tiny}", "--data", "digits", "--set", "width=3"], "has no parameter 'width'"),
    (["{tiny}", "--data", "digits", "--optimizer", "sgd", "--momentum", "0", "--nesterov"], "Nesterov"),
    (["{tiny}", "--data", "digits", "--epochs", "1", "--backend", "onnx", "--lr", "1e9", "--schedule", "constant"],
     "diverged at epoch 1"),
])
def test_errors_are_one_message_and_exit_1(tiny, tmp_path, capsys, argv, message):
    x = np.ones((10, 8, 8), np.float32)
    x[2, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(10))
    argv = [a.format(tiny=tiny, tmp=tmp_path) for a in argv]
    assert train(*argv) == 1
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert message in err and "Traceback" not in err
    assert lines[0].startswith("error: ") or lines[0].startswith(str(tmp_path))  # spec errors are located
    if lines[0].startswith("error: "):
        assert len(lines) == 1


def test_usage_errors_exit_2(capsys):
    assert train("--epochs", "0") == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert train("--val-fraction", "1.5") == 2


def test_help_has_an_example(capsys):
    assert cli.main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "graphconv train specs/lenet5.gc --data digits" in text and "--resume RUN_DIR" in text


def test_as_a_subprocess(tiny, tmp_path):
    """What a user runs: no progress bar when stderr is not a terminal, the summary on stdout."""
    r = subprocess.run([sys.executable, "-m", "graphconv", "train", tiny, "--data", "digits", "--epochs", "1",
                        "--backend", "onnx", "--max-steps", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "epoch 1/1" in r.stdout and "it/s" not in r.stderr and "batch/s" not in r.stderr
    assert "nothing was saved" in r.stdout


def _metrics(path, lines):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_plot_redraws_a_runs_curves(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    _metrics(run, [json.dumps({"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "train_acc": 0.9, "val_acc": 0.8}),
                   "not json", json.dumps({"epoch": 1, "train_loss": 1.0, "val_loss": "NaN", "train_acc": 0.5}),
                   json.dumps([1, 2]), json.dumps({"epoch": 3, "train_loss": float("inf"), "test_acc": 0.85})])
    assert cli.main(["plot", str(run)]) == 0
    assert (run / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out == f"wrote {run / 'plot.png'}\n"
    assert cli.main(["plot", str(run), "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_errors_are_one_message(tmp_path, capsys, monkeypatch):
    assert cli.main(["plot", str(tmp_path / "nowhere")]) == 1
    assert "no metrics.jsonl" in capsys.readouterr().err
    _metrics(tmp_path / "empty", ["{}", "junk"])
    assert cli.main(["plot", str(tmp_path / "empty")]) == 1
    assert "no epoch records to plot" in capsys.readouterr().err
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    _metrics(tmp_path / "ok", [json.dumps({"epoch": 1, "train_loss": 1.0})])
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert cli.main(["plot", str(tmp_path / "ok")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "graphconv[plot]" in err and "Traceback" not in err
