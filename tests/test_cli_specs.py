"""The command line on the real zoo specs, in-process and as a subprocess (what a user runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphconv import cli

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def test_check_every_zoo_spec(capsys):
    specs = sorted(str(p) for p in SPECS.glob("*.gc"))
    assert len(specs) >= 13
    assert cli.main(["check", *specs]) == 0
    out = capsys.readouterr().out
    assert out.count("ok: ") == len(specs)


def resnet18_macs() -> int:
    """Convolution and dense MACs of ResNet-18 at 224×224, layer by layer (1.814 G, as shared/ANCHORS.md says)."""
    macs = 64 * 112 * 112 * 3 * 7 * 7  # conv1
    macs += 4 * 64 * 56 * 56 * 64 * 9  # layer1
    for c, hw in ((128, 28), (256, 14), (512, 7)):  # layer2-4: strided conv, three more, 1x1 downsample
        macs += c * hw * hw * (c // 2) * 9 + 3 * c * hw * hw * c * 9 + c * hw * hw * (c // 2)
    return macs + 512 * 1000  # fc


def test_summary_json_totals_resnet18(capsys):
    assert cli.main(["summary", str(SPECS / "resnet18.gc"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total_params"] == 11_689_512
    assert d["trainable_params"] == 11_689_512
    assert d["total_macs"] == resnet18_macs()
    first = d["layers"][0]
    assert (first["name"], first["op"], first["output_shape"]) == ("conv1", "conv2d", ["N", 64, 112, 112])
    assert first["receptive_field"] == [7, 7]


def test_summary_set_overrides_parameters(capsys):
    assert cli.main(["summary", str(SPECS / "resnet18.gc"), "--set", "num_classes=10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total_params"] == 11_689_512 - 513 * 990
    assert d["layers"][-1]["output_shape"] == ["N", 10]


def test_run_writes_output_matching_the_api(tmp_path, capsys):
    out = tmp_path / "y.npy"
    args = ["run", str(SPECS / "lenet5.gc"), "--seed", "3", "--batch", "2", "--output", str(out)]
    assert cli.main(args) == 0
    y = np.load(out, allow_pickle=False)
    assert y.shape == (2, 10) and np.all(np.isfinite(y))
    assert cli.main(args) == 0  # seeded: the same result again
    np.testing.assert_array_equal(np.load(out, allow_pickle=False), y)


def test_run_with_given_input_and_weights(tmp_path, capsys):
    import graphconv

    net = graphconv.load(str(SPECS / "lenet5.gc"), seed=5)
    net.save_weights(str(tmp_path / "w.npz"))
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    assert cli.main(["run", str(SPECS / "lenet5.gc"), "--weights", str(tmp_path / "w.npz"),
                     "--input", f"image={tmp_path / 'x.npy'}", "--output", str(out)]) == 0
    expected = graphconv.compile(net)(x)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-6, atol=1e-6)


def test_subprocess_user_error_is_one_message_and_exit_1(tmp_path):
    bad = tmp_path / "bad.gc"
    bad.write_text("network n {\n  input x: f32[N, 3, 8, 8]\n  y = x -> batchnom\n  output y\n}\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "graphconv", "check", str(bad)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 1
    assert f"{bad}:3:12: error: unknown layer, block or function 'batchnom'" in r.stderr
    assert "did you mean 'batchnorm'?" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("spec", ["lenet5.gc", "sobel.gc"])
def test_subprocess_main_job(spec):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "graphconv", "run", str(SPECS / spec)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "output" in r.stdout
