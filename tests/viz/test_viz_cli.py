"""`graphconv viz` through cli.main: files written, options, user errors as exit 1 with one message."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from graphconv import cli
from graphconv.onnx.export import export_onnx

from viz_helpers import ROOT, page_parts, zoo

RESNET18 = str(ROOT / "specs" / "resnet18.gc")


def test_html(tmp_path, capsys):
    out = tmp_path / "net.html"
    assert cli.main(["viz", RESNET18, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (69 nodes, 12 groups; html")
    _, data = page_parts(out.read_text())
    assert data["view"] == {"depth": 1} and len(data["leaves"]) == 69 + 2


def test_svg_with_depth_and_set(tmp_path, capsys):
    out = tmp_path / "net.SVG"
    assert cli.main(["viz", RESNET18, "-o", str(out), "--depth", "1", "--set", "num_classes=10",
                     "--layout", "graphconv"]) == 0
    text = out.read_text()
    svg = ET.fromstring(text.split("\n", 1)[1])
    assert svg.tag.endswith("svg") and "[N, 10]" in text
    assert text.count('class="gc-node gc-collapsed"') == 8  # 4 stages of 2 blocks, closed
    assert "svg, graphconv layout" in capsys.readouterr().out


def test_optimized(tmp_path, capsys):
    out = tmp_path / "o2.html"
    assert cli.main(["viz", RESNET18, "-O2", "-o", str(out)]) == 0
    assert "(24 nodes" in capsys.readouterr().out
    assert "conv2d 3×3 + add + relu" in out.read_text()
    assert cli.main(["viz", RESNET18, "-O1", "--training", "-o", str(out)]) == 0


def test_onnx_input(tmp_path, capsys):
    model = tmp_path / "lenet5.onnx"
    export_onnx(zoo("lenet5.gc"), model)
    out = tmp_path / "lenet5.svg"
    assert cli.main(["viz", str(model), "-o", str(out)]) == 0
    assert "lenet5.svg (" in capsys.readouterr().out
    ET.fromstring(out.read_text().split("\n", 1)[1])
    assert cli.main(["viz", str(model), "--set", "num_classes=3", "-o", str(out)]) == 1
    assert "--set applies to specs" in capsys.readouterr().err


def test_unknown_extension_is_a_user_error(tmp_path, capsys):
    out = tmp_path / "net.png"
    assert cli.main(["viz", RESNET18, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot tell which drawing to write") and ".html" in err and ".svg" in err
    assert err.count("\n") == 1 and not out.exists()


def test_bad_spec_is_a_user_error(tmp_path, capsys):
    spec = tmp_path / "bad.gc"
    spec.write_text("network n {\n  input x: f32[N, 4]\n  y = x -> relux\n  output y\n}\n")
    assert cli.main(["viz", str(spec), "-o", str(tmp_path / "n.html")]) == 1
    assert "unknown layer" in capsys.readouterr().err
    assert cli.main(["viz", str(tmp_path / "missing.gc"), "-o", str(tmp_path / "n.html")]) == 1


def test_dot_layout_for_html_is_refused(tmp_path, capsys):
    assert cli.main(["viz", RESNET18, "-o", str(tmp_path / "n.html"), "--layout", "dot"]) == 1
    assert "--layout dot applies to SVG" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("dot") is not None, reason="Graphviz is installed here")
def test_dot_missing(tmp_path, capsys):
    out = tmp_path / "n.svg"
    assert cli.main(["viz", RESNET18, "-o", str(out), "--layout", "dot"]) == 1
    err = capsys.readouterr().err
    assert "needs Graphviz's 'dot' on PATH" in err and not out.exists()
    assert cli.main(["viz", RESNET18, "-o", str(out)]) == 0  # auto: graphconv's own layout
    assert "graphconv layout" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_dot_layout(tmp_path, capsys):
    out = tmp_path / "n.svg"
    assert cli.main(["viz", RESNET18, "-o", str(out), "--layout", "dot", "--depth", "1"]) == 0
    assert "dot layout" in capsys.readouterr().out
    text = out.read_text()
    ET.fromstring(text[text.index("<svg"):])
    assert "cluster_" in text and "layer1" in text


def test_usage(capsys):
    assert cli.main(["viz", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "graphconv viz specs/resnet50.gc -o resnet50.html" in help_text
    assert cli.main(["viz", RESNET18]) == 2  # -o is required
    assert cli.main(["viz", RESNET18, "-o", "x.html", "--depth", "-1"]) == 2
    assert "viz" in cli.build_parser().format_help()


def test_dot_missing_names_the_real_default(tmp_path, capsys, monkeypatch):
    """The default layout is auto (dot when it is on PATH), not graphconv: the message must not say otherwise.
    Runs with or without Graphviz installed: `which` is told dot is missing."""
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "dot" else real_which(name, *a, **k))
    out = tmp_path / "n.svg"
    assert cli.main(["viz", RESNET18, "-o", str(out), "--layout", "dot"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists()
    assert "--layout graphconv needs nothing (the default, --layout auto, uses dot only when it is on PATH)" in err
    assert "graphconv (the default)" not in err


def test_training_needs_an_optimization_level(tmp_path, capsys):
    out = tmp_path / "n.html"
    assert cli.main(["viz", RESNET18, "--training", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --training applies with -O 1 or more") and err.count("\n") == 1
    assert not out.exists()
    assert cli.main(["viz", RESNET18, "--training", "-O", "0", "-o", str(out)]) == 1
    capsys.readouterr()
    assert cli.main(["viz", RESNET18, "--training", "-O", "1", "-o", str(out)]) == 0 and out.exists()
    assert cli.main(["viz", "--help"]) == 0
    assert "with -O 1 or more: optimize for training" in " ".join(capsys.readouterr().out.split())
