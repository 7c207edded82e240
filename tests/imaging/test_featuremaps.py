"""graphconv featuremaps: the layers drawn (default and chosen), the sections' geometry, the activations against the
network's own outputs, per-channel scaling, the folder form, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from graphconv import cli
from graphconv.imaging.featuremaps import Activation, capture, default_layers, draw_activation
from graphconv.imaging.grid import grid_size, viridis
from graphconv.reference.executor import run_graph
from graphconv.spec import load_graph
from graphconv.weights import init_weights

from .helpers import SPECS, lenet_weights, solid, stripes

LENET = str(SPECS / "lenet5.gc")


def _maps(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["featuremaps", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _ends_with_grid(section: np.ndarray, height: int, width: int) -> None:
    """The section is a caption over a grid of exactly height × width pixels, at its bottom left."""
    assert section.shape[0] > height and section.shape[1] >= width
    grid = section[-height:, :width]
    assert (grid[0] == 255).all() and (grid[:, 0] == 255).all()  # the 1-pixel white border of the grid
    assert not (grid[1:-1, 1:-1] == 255).all(axis=-1).all()


def test_lenet_default_layers_in_one_picture(tmp_path, capsys):
    weights, _ = lenet_weights(tmp_path)
    picture = solid(tmp_path, "d.png", (200, 200, 200), size=(40, 30))
    out = tmp_path / "maps.png"
    code, text, err = _maps(capsys, LENET, "--weights", weights, "--image", picture, "-o", out)
    assert code == 0, err
    assert "4 layers: c1, s2, c3, s4" in text and "untrained" not in text
    width, height = _size(out)
    # the widest section: c3, 16 maps of 10×10 in 4×4 tiles at zoom round(64 / 10) = 6, plus the page margins
    assert width >= grid_size(4, 4, 10, 10, 6)[1] + 16
    assert height > sum(grid_size(*rc, h, h, z)[0] for rc, h, z in
                        (((1, 1), 32, 2), ((2, 3), 28, 2), ((2, 3), 14, 5), ((4, 4), 10, 6), ((4, 4), 5, 13)))


def test_folder_form_one_picture_per_layer(tmp_path, capsys):
    picture = stripes(tmp_path)
    folder = tmp_path / "maps"
    code, text, _ = _maps(capsys, LENET, "--image", picture, "-o", f"{folder}/", "--layer", "c3", "--layer",
                          "tanh0", "--max-channels", "4")
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["00-input.png", "01-c3.png", "02-tanh0.png"]
    assert "note: untrained weights show little" in text
    # c3 with 4 of its 16 channels: a 2×2 grid of 10×10 maps at zoom 6, in a page with 8-pixel margins
    width, height = _size(folder / "01-c3.png")
    gh, gw = grid_size(2, 2, 10, 10, 6)
    assert width >= gw + 16 and height > gh + 16
    section = np.asarray(Image.open(folder / "01-c3.png"))[8:-8, 8:-8]
    _ends_with_grid(section, gh, gw)


def test_max_layers_and_the_note(tmp_path, capsys):
    code, text, _ = _maps(capsys, LENET, "--image", solid(tmp_path, "a.png", (9, 9, 9)), "-o", tmp_path / "m.png",
                          "--max-layers", "2")
    assert code == 0 and "2 layers: c1, s2" in text
    assert "the first 2 of 4 convolution and pooling layers" in text


def test_activations_are_the_networks_own(tmp_path):
    """Captured maps equal the outputs of the same network run with those layers as its outputs (sobel: gx, gy)."""
    graph = load_graph(str(SPECS / "sobel.gc"), {"size": 16})
    x = np.random.default_rng(0).random((1, 1, 16, 16)).astype(np.float32)
    nodes = [graph.node("sobel_x"), graph.node("sobel_y")]
    acts = capture(graph, {}, {"image": x}, nodes)
    outs = run_graph(graph, {"image": x}, {})
    np.testing.assert_array_equal(acts[0].values, outs["gx"][0])
    np.testing.assert_array_equal(acts[1].values, outs["gy"][0])
    assert list(graph.outputs) == ["gx", "gy", "magnitude2"]  # the graph itself is untouched


def test_each_channel_is_scaled_to_its_own_range():
    values = np.stack([np.arange(16.0).reshape(4, 4), 1000 + np.arange(16.0).reshape(4, 4), np.full((4, 4), 3.0)])
    section = draw_activation(Activation("x", "conv2d", values), colormap="viridis")
    zoom = 16  # round(64 / 4)
    gh, gw = grid_size(2, 2, 4, 4, zoom)
    grid = section[-gh:, :gw]
    for tile, (r, c) in enumerate(((0, 0), (0, 1), (1, 0))):
        y, x = 1 + r * (4 * zoom + 1), 1 + c * (4 * zoom + 1)
        first, last = grid[y, x], grid[y + 4 * zoom - 1, x + 4 * zoom - 1]
        if tile < 2:  # both ramps run from the lowest colour to the highest, whatever their offset
            np.testing.assert_array_equal(first, viridis(np.array(0.0)))
            np.testing.assert_array_equal(last, viridis(np.array(1.0)))
        else:  # a constant channel: the lowest colour
            np.testing.assert_array_equal(first, last)
            np.testing.assert_array_equal(first, viridis(np.array(0.0)))


def test_default_layers_are_convolutions_and_poolings():
    graph = load_graph(str(SPECS / "resnet18.gc"))
    nodes, total = default_layers(graph, 3)
    assert [n.name for n in nodes] == ["conv1", "max_pool2d0", "layer1.basic0.conv1"] and total == 21


def test_resnet18_conv1_on_an_rgb_picture(tmp_path, capsys):
    out = tmp_path / "r.png"
    code, text, err = _maps(capsys, SPECS / "resnet18.gc", "--image", stripes(tmp_path, "p.jpg", 300, 200), "-o",
                            out, "--layer", "conv1", "--max-channels", "9", "--colormap", "gray")
    assert code == 0, err
    width, _ = _size(out)
    assert width >= grid_size(3, 3, 112, 112, 1)[1]


@pytest.mark.parametrize("argv, match", [
    (["--layer", "c2"], "lenet5 has no layer 'c2'"),
    (["--layer", "tanhh0"], "did you mean 'tanh0'?"),
    (["--layer", "f5"], "layer 'f5' (dense) has output f32[N, 120]; feature maps need a [N, C, H, W] output"),
    (["--layer", "c1", "--max-layers", "3"], "--max-layers limits the default layers"),
])
def test_layer_errors(tmp_path, capsys, argv, match):
    code, _, err = _maps(capsys, LENET, "--image", solid(tmp_path, "a.png", (1, 1, 1)), "-o", tmp_path / "m.png",
                         *argv)
    assert code == 1 and match in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_bad_picture(tmp_path, capsys):
    (tmp_path / "x.png").write_text("nope")
    code, _, err = _maps(capsys, LENET, "--image", tmp_path / "x.png", "-o", tmp_path / "m.png")
    assert code == 1 and "not a picture graphconv reads" in err


def test_untrained_weights_are_seeded(tmp_path):
    graph = load_graph(LENET)
    x = {"image": np.zeros((1, 1, 32, 32), np.float32)}
    a = capture(graph, init_weights(graph, 1), x, [graph.node("c1")])[0].values
    b = capture(graph, init_weights(graph, 1), x, [graph.node("c1")])[0].values
    np.testing.assert_array_equal(a, b)


def _one_line(code: int, err: str) -> str:
    assert code == 1 and "Traceback" not in err and "internal error" not in err
    (line,) = err.strip().splitlines()
    return line


def test_several_picture_inputs_get_a_message_true_for_featuremaps(tmp_path, capsys):
    two = tmp_path / "two.gc"
    two.write_text("network two {\n  input a: f32[N, 1, 8, 8]\n  input b: f32[N, 1, 8, 8]\n"
                   "  y = add(a, b) -> conv2d(2, kernel=3) as c1\n  output y\n}\n")
    line = _one_line(*_maps(capsys, two, "--image", solid(tmp_path, "a.png", (1, 1, 1)), "-o", tmp_path / "m.png")
                     [::2])
    assert "two has several picture inputs (a, b); featuremaps feeds --image to a network's one picture" in line
    assert "--input" not in line


def test_output_errors_name_the_path_given_before_the_network_runs(tmp_path, capsys, monkeypatch):
    from graphconv.imaging import featuremaps

    def never(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(featuremaps, "capture", never)
    picture = solid(tmp_path, "a.png", (1, 1, 1))
    out = tmp_path / "nodir" / "x.png"
    line = _one_line(*_maps(capsys, LENET, "--image", picture, "-o", out)[::2])
    assert line == f"error: cannot write '{out}': the folder '{tmp_path / 'nodir'}' does not exist"
    line = _one_line(*_maps(capsys, LENET, "--image", picture, "-o", tmp_path / "maps.gif")[::2])
    assert "pictures are written as .png, .webp" in line and "not '.gif'" in line
    line = _one_line(*_maps(capsys, LENET, "--image", picture, "-o", tmp_path / "maps")[::2])
    assert "not a name without an extension; for a folder of pictures end -o with /" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_jpeg_page(tmp_path, capsys):
    out = tmp_path / "maps.jpg"
    code, text, err = _maps(capsys, LENET, "--image", solid(tmp_path, "a.png", (90, 90, 90)), "-o", out,
                            "--layer", "c1")
    assert code == 0, err
    assert f"wrote {out} (" in text
    with Image.open(out) as im:
        assert im.format == "JPEG"
