"""The command line through main([...]): version, usage errors (exit 2), user errors (exit 1), internal errors
(exit 3), and the commands on hand-built graphs (spec loading stubbed; tests on real spec files come with the
parser's)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphconv import cli, spec
from graphconv.errors import Diagnostic, SourceLoc, SpecError
from graphconv.weights import init_weights, save_weights

from runtime_helpers import small_cnn, two_in_two_out


@pytest.fixture
def fake_spec(monkeypatch):
    calls = []

    def load_graph(path, params=None, network=None):
        calls.append((path, params))
        graphs = {"cnn.gc": small_cnn, "pair.gc": two_in_two_out}
        if path not in graphs:
            raise SpecError([Diagnostic(SourceLoc(path, 1, 1), f"cannot read '{path}': No such file")])
        return graphs[path]()

    monkeypatch.setattr(spec, "load_graph", load_graph)
    return calls


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "graphconv 0.1.0"


def test_no_command_is_usage_error(capsys):
    assert cli.main([]) == 2
    assert "usage: graphconv" in capsys.readouterr().err


def test_unknown_command_and_option(capsys):
    assert cli.main(["frobnicate", "x.gc"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert cli.main(["run", "x.gc", "--frobnicate"]) == 2
    assert "unrecognized arguments: --frobnicate" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["num_classes", "=3", "3x=1", "k=[1,"])
def test_malformed_set_is_usage_error(capsys, bad):
    assert cli.main(["summary", "cnn.gc", "--set", bad]) == 2
    assert "argument --set" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--batch", "0"], ["--batch", "two"], ["--seed", "-1"], ["--dtype", "f16"]])
def test_bad_run_options_are_usage_errors(capsys, args):
    assert cli.main(["run", "cnn.gc", *args]) == 2
    assert "usage: graphconv run" in capsys.readouterr().err


def test_check(fake_spec, capsys):
    assert cli.main(["check", "cnn.gc", "pair.gc", "--set", "width=2", "--set", "name=wide"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["ok: cnn.gc (network small_cnn, 8 nodes, 371 params)",
                   "ok: pair.gc (network pair, 3 nodes, 0 params)"]
    assert fake_spec[0] == ("cnn.gc", {"width": 2, "name": "wide"})


def test_check_reports_every_failing_file(fake_spec, capsys):
    assert cli.main(["check", "a.gc", "cnn.gc", "b.gc"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["ok: cnn.gc (network small_cnn, 8 nodes, 371 params)"]
    assert "a.gc:1:1: error: cannot read 'a.gc'" in captured.err and "b.gc:1:1: error" in captured.err
    assert "Traceback" not in captured.err


def test_summary_text_and_json(fake_spec, capsys):
    assert cli.main(["summary", "cnn.gc"]) == 0
    assert "Total params:         371" in capsys.readouterr().out
    assert cli.main(["summary", "cnn.gc", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"network", "layers", "total_params", "trainable_params", "total_macs"} <= set(d)
    assert d["layers"][0]["output_shape"] == ["N", 4, 8, 8]


def test_run_random_input(fake_spec, capsys, tmp_path):
    out_file = tmp_path / "y.npy"
    assert cli.main(["run", "cnn.gc", "--batch", "3", "--seed", "4", "--output", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "input image: random standard normal [3, 3, 8, 8] (seed 4)" in out
    assert "output logits: shape [3, 5] float32" in out
    assert "top-5 sample 2:" in out
    y = np.load(out_file, allow_pickle=False)
    assert y.shape == (3, 5)
    # deterministic
    assert cli.main(["run", "cnn.gc", "--batch", "3", "--seed", "4", "--output", str(out_file)]) == 0
    np.testing.assert_array_equal(np.load(out_file), y)


def test_run_with_inputs_and_weights(fake_spec, capsys, tmp_path):
    save_weights(tmp_path / "w.npz", init_weights(small_cnn(), 9))
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
    np.save(tmp_path / "x.npy", x)
    args = ["run", "cnn.gc", "--weights", str(tmp_path / "w.npz"), "--dtype", "float64", "--output",
            str(tmp_path / "y.npy")]
    assert cli.main([*args, "--input", f"image={tmp_path / 'x.npy'}"]) == 0
    y1 = np.load(tmp_path / "y.npy")
    assert y1.dtype == np.float64 and y1.shape == (2, 5)
    assert cli.main([*args, "--input", str(tmp_path / "x.npy")]) == 0  # NAME= optional with one input
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), y1)
    assert "input image: [2, 3, 8, 8] float64 from file" in capsys.readouterr().out


def test_run_several_outputs_to_npz(fake_spec, capsys, tmp_path):
    assert cli.main(["run", "pair.gc", "--output", str(tmp_path / "y.npy")]) == 1
    assert "ending in .npz" in capsys.readouterr().err
    assert cli.main(["run", "pair.gc", "--output", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["act", "sum"]


def test_run_user_errors_exit_1(fake_spec, capsys, tmp_path):
    np.save(tmp_path / "obj.npy", np.array([object()]), allow_pickle=True)
    np.save(tmp_path / "small.npy", np.zeros((1, 3, 4, 4)))
    cases = [
        (["--input", "nope=x.npy"], "small_cnn has no input 'nope'; its inputs: image"),
        (["--input", str(tmp_path / "missing.npy")], "cannot read"),
        (["--input", str(tmp_path / "obj.npy")], "not a plain .npy array"),
        (["--input", str(tmp_path / "small.npy")], "dimension 2 is 4, must be 8"),
        (["--weights", str(tmp_path / "none.npz")], "cannot read weights"),
        (["--backend", "tvm"], "available backends: llvm, onnx, reference"),
        (["--backend", "llvm", "--input", str(tmp_path / "small.npy")], "dimension 2 is 4, must be 8"),
        (["--threads", "2"], "--threads applies to the llvm and onnx backends"),
        (["-O", "2"], "-O apply to --backend llvm"),
    ]
    for extra, message in cases:
        assert cli.main(["run", "cnn.gc", *extra]) == 1, extra
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: ") and "Traceback" not in err, (extra, err)


def test_spec_errors_exit_1_without_traceback(fake_spec, capsys):
    assert cli.main(["run", "broken.gc"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("broken.gc:1:1: error: cannot read") and "Traceback" not in err


def test_internal_error_exit_3(fake_spec, capsys, monkeypatch):
    def bug(args):
        raise RuntimeError("oops")

    monkeypatch.setitem(cli.COMMANDS, "summary", bug)
    assert cli.main(["summary", "cnn.gc"]) == 3
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: oops" in err and "report" in err and "Traceback" not in err
    assert cli.main(["--debug", "summary", "cnn.gc"]) == 3
    assert "Traceback" in capsys.readouterr().err
    assert cli.main(["summary", "cnn.gc", "--debug"]) == 3  # --debug after the command works too
    assert "Traceback" in capsys.readouterr().err


def test_os_error_is_a_user_error(fake_spec, capsys, monkeypatch):
    def unreadable(args):
        raise PermissionError(13, "Permission denied", "/root/secret.npz")

    monkeypatch.setitem(cli.COMMANDS, "run", unreadable)
    assert cli.main(["run", "cnn.gc"]) == 1
    assert capsys.readouterr().err.strip() == "error: cannot access '/root/secret.npz': Permission denied"
