"""The picture commands on every network of the zoo: `run --image` (top classes as JSON), `featuremaps` and
`filters` of the first convolution. The plain suite runs each network at a small input size (`--set size=...`),
leaving out the deepest variants of families it already covers (ResNet-101/152, VGG-19: seconds of weight
initialization each); the slow variant runs every one at the size it was written for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from graphconv import cli

PIL = pytest.importorskip("PIL.Image")

ROOT = Path(__file__).resolve().parents[2]
ZOO = sorted(p.stem for p in (ROOT / "specs").glob("*.gc"))
# the smallest input each network takes (5 stride-2 stages need 32; AlexNet's pools need 64; GoogLeNet's 96)
SMALL = {"alexnet": 64, "googlenet": 96, "mobilenet_v2": 32, "resnet18": 32, "resnet34": 32, "resnet50": 32,
         "resnet101": 32, "resnet152": 32, "sobel": 16, "vgg16": 32, "vgg19": 32}


def _picture(path: Path) -> Path:
    rng = np.random.default_rng(0)
    PIL.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), "RGB").save(path)
    return path


def _main(capsys, *argv: str) -> tuple[int, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert status == 0, err
    return status, out


def _check_network(name: str, sets: list[str], tmp_path: Path, capsys) -> None:
    import graphconv

    spec = str(ROOT / "specs" / f"{name}.gc")
    pic = _picture(tmp_path / "picture.png")
    params = dict(s.split("=") for s in sets[1::2])
    net = graphconv.load(spec, **{k: int(v) for k, v in params.items()})
    image = net.graph.inputs[0]

    _, out = _main(capsys, "run", spec, *sets, "--image", str(pic), "--top", "3", "--json")
    result = json.loads(out)
    assert result["network"] == net.graph.name
    assert result["inputs"][0]["shape"] == [1, *image.type.shape[1:]]
    assert result["images"][0]["width"] == 80 and result["images"][0]["height"] == 60
    assert set(result["outputs"]) == set(net.graph.outputs)
    for out_name, value in net.graph.outputs.items():
        report = result["outputs"][out_name]
        assert report["shape"] == [1, *value.type.shape[1:]]
        if len(value.type.shape) == 2:  # a classifier: the top 3 classes, most probable first
            assert report["kind"] == "classifier"
            top = report["results"][0]["top"]
            probs = [t["probability"] for t in top]
            assert [t["rank"] for t in top] == [1, 2, 3] and probs == sorted(probs, reverse=True)
            assert 0 < sum(probs) <= 1 + 1e-6
        else:
            assert report["kind"] == "other" and report["min"] <= report["mean"] <= report["max"]

    maps = tmp_path / "maps.png"
    _main(capsys, "featuremaps", spec, *sets, "--image", str(pic), "-o", str(maps), "--max-layers", "4")
    with PIL.open(maps) as im:
        assert im.size[0] > 0 and im.size[1] > 0

    weights = tmp_path / "w.npz"
    net.save_weights(weights)
    first = next(n for n in net.graph.nodes if n.op == "conv2d")
    filters = tmp_path / "filters.png"
    _main(capsys, "filters", str(weights), "--layer", first.name, "--spec", spec, *sets, "-o", str(filters))
    with PIL.open(filters) as im:
        kernel = first.params["weight"].type.shape
        assert min(im.size) >= min(kernel[2:])  # at least one pixel per weight
    assert image.type.shape[1] in (1, 3)


@pytest.mark.parametrize("name", [n for n in ZOO if n not in ("resnet101", "resnet152", "vgg19")])
def test_picture_commands_on_the_zoo_at_a_small_size(name, tmp_path, capsys):
    sets = ["--set", f"size={SMALL[name]}"] if name in SMALL else []
    _check_network(name, sets, tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_picture_commands_on_the_zoo_at_full_size(name, tmp_path, capsys):
    _check_network(name, [], tmp_path, capsys)
