"""graphconv filters: grid geometry computed from the kernel's shape, tile pixels from the normalized kernel,
layer lookup (with and without a spec) and its errors, and the grid drawing underneath."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from graphconv import cli
from graphconv.errors import GraphconvError
from graphconv.imaging import filters as filters_module
from graphconv.imaging.filters import GAP_COLOR, draw_filters
from graphconv.imaging.grid import grid_shape, grid_size, tile_grid, viridis

from .helpers import SPECS, lenet_weights

LENET = str(SPECS / "lenet5.gc")


def _filters(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["filters", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def _expected_gray(w: np.ndarray, m: float) -> np.ndarray:
    return np.round(np.clip(0.5 + 0.5 * w / m, 0, 1) * 255).astype(np.uint8)


def _tile(image: np.ndarray, row: int, col: int, kh: int, kw: int, zoom: int, gap: int = 1) -> np.ndarray:
    """The tile at (row, col), sampled once per weight (the top-left pixel of each zoom×zoom square)."""
    y, x = gap + row * (kh * zoom + gap), gap + col * (kw * zoom + gap)
    return image[y:y + kh * zoom:zoom, x:x + kw * zoom:zoom]


def test_lenet_first_layer_grid_and_pixels(tmp_path, capsys):
    path, weights = lenet_weights(tmp_path)
    out = tmp_path / "c1.png"
    code, text, err = _filters(capsys, path, "--layer", "c1", "-o", out)
    assert code == 0, err
    img = _png(out)
    # 6 filters of 1×5×5: one input channel, so the squarest grid, 2 rows × 3 columns; zoom ceil(64 / 5) = 13
    assert img.shape == (2 * 5 * 13 + 3, 3 * 5 * 13 + 4, 3) == (133, 199, 3)
    assert "6 tiles in 2 rows × 3 columns" in text and "each weight 13×13 pixels" in text
    w = weights["c1.weight"].astype(np.float64)
    for f in range(6):
        tile = _tile(img, f // 3, f % 3, 5, 5, 13)
        expected = _expected_gray(w[f, 0], np.abs(w[f]).max())  # scaled per filter, zero at mid-gray
        np.testing.assert_array_equal(tile[..., 0], expected)
        np.testing.assert_array_equal(tile[..., 0], tile[..., 2])  # gray
    assert tuple(img[0, 0]) == GAP_COLOR and tuple(img[66, 30]) == GAP_COLOR  # border and the gap between rows


def test_every_slice_of_a_later_layer(tmp_path, capsys):
    path, weights = lenet_weights(tmp_path)
    out = tmp_path / "c3.png"
    assert _filters(capsys, path, "--layer", "c3.weight", "-o", out, "--zoom", "3")[0] == 0
    img = _png(out)
    assert img.shape == (16 * 15 + 17, 6 * 15 + 7, 3)  # a row of 6 input slices per filter
    w = weights["c3.weight"].astype(np.float64)
    np.testing.assert_array_equal(_tile(img, 7, 4, 5, 5, 3)[..., 1], _expected_gray(w[7, 4], np.abs(w[7]).max()))


def test_mean_and_layer_scale(tmp_path, capsys):
    path, weights = lenet_weights(tmp_path)
    out = tmp_path / "mean.png"
    assert _filters(capsys, path, "--layer", "c3", "-o", out, "--channels", "mean", "--scale", "layer",
                    "--zoom", "2")[0] == 0
    img = _png(out)
    assert img.shape == (4 * 10 + 5, 4 * 10 + 5, 3)
    m = weights["c3.weight"].astype(np.float64).mean(axis=1)
    np.testing.assert_array_equal(_tile(img, 2, 1, 5, 5, 2)[..., 0], _expected_gray(m[9], np.abs(m).max()))


def test_rgb_first_layer_of_alexnet(tmp_path, capsys):
    """AlexNet's conv1, 64 filters of 3×11×11: an 8×8 grid of colour tiles (with the spec: its conv layers)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 3, 11, 11)).astype(np.float32)
    np.savez(tmp_path / "alex.npz", **{"conv1.weight": w, "conv1.bias": np.zeros(64, np.float32)})
    out = tmp_path / "conv1.png"
    code, text, err = _filters(capsys, tmp_path / "alex.npz", "--layer", "conv1", "-o", out,
                               "--spec", SPECS / "alexnet.gc")
    assert code == 0, err
    assert "conv2d conv1: 64 filters of 3×11×11" in text and "RGB tile per filter" in text
    img = _png(out)
    zoom = 6  # ceil(64 / 11)
    assert img.shape == (8 * 11 * zoom + 9, 8 * 11 * zoom + 9, 3) == (537, 537, 3)
    f = 42
    w64 = w.astype(np.float64)
    expected = np.round(np.clip(0.5 + 0.5 * np.transpose(w64[f], (1, 2, 0)) / np.abs(w64[f]).max(), 0, 1)
                        * 255).astype(np.uint8)
    np.testing.assert_array_equal(_tile(img, f // 8, f % 8, 11, 11, zoom), expected)


def test_run_directory_of_graphconv_train(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lenet_weights(run)  # run/weights.npz, as graphconv train writes it
    assert _filters(capsys, run, "--layer", "c1", "-o", tmp_path / "f.png")[0] == 0


@pytest.mark.slow
def test_weights_of_a_real_training_run(tmp_path, capsys):
    assert cli.main(["train", LENET, "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert _filters(capsys, tmp_path / "run" / "weights.npz", "--layer", "c3", "-o", tmp_path / "c3.png")[0] == 0


def test_fixed_kernels_from_the_spec(tmp_path, capsys):
    np.savez(tmp_path / "empty.npz")
    out = tmp_path / "sobel.png"
    code, text, _ = _filters(capsys, tmp_path / "empty.npz", "--spec", SPECS / "sobel.gc", "--layer", "sobel_x",
                             "-o", out, "--zoom", "1")
    assert code == 0
    img = _png(out)
    assert img.shape == (5, 5, 3)
    # [-1 0 1; -2 0 2; -1 0 1] / 2 + 0.5
    np.testing.assert_array_equal(img[1:4, 1:4, 0], [[64, 128, 191], [0, 128, 255], [64, 128, 191]])


@pytest.mark.parametrize("argv, match", [
    (["-o", "x.png"], "give --layer NAME; the convolution layers in '{w}': c1, c3"),
    (["--layer", "c3x", "-o", "x.png"], "no convolution layer 'c3x' in '{w}' (did you mean 'c3'?); the "
                                        "convolution layers: c1, c3"),
    (["--layer", "f5", "-o", "x.png"], "layer 'f5' is not a convolution (a dense layer's weight [120, 400])"),
    (["--layer", "f5", "--spec", LENET, "-o", "x.png"], "layer 'f5' is not a convolution (a dense layer's weight"),
    (["--layer", "c1"], "give -o OUT.png"),
    (["--layer", "c1", "--channels", "rgb", "-o", "x.png"], "--channels rgb needs 3 input channels"),
    (["--layer", "c1", "--set", "num_classes=3", "-o", "x.png"], "--set applies with --spec"),
])
def test_layer_errors(tmp_path, capsys, argv, match):
    path, _ = lenet_weights(tmp_path)
    code, _out, err = _filters(capsys, path, *argv)
    assert code == 1 and "Traceback" not in err
    assert err.strip() == f"error: {match.format(w=path)}" or match.format(w=path) in err
    assert len(err.strip().splitlines()) == 1


def test_unsafe_or_broken_files(tmp_path, capsys):
    (tmp_path / "text.npz").write_text("not a zip")
    code, _, err = _filters(capsys, tmp_path / "text.npz", "--layer", "c1", "-o", tmp_path / "x.png")
    assert code == 1 and "not a valid .npz file" in err
    np.savez(tmp_path / "obj.npz", **{"c1.weight": np.array([{"a": 1}], dtype=object)})
    code, _, err = _filters(capsys, tmp_path / "obj.npz", "--layer", "c1", "-o", tmp_path / "x.png")
    assert code == 1 and "Traceback" not in err and "obj.npz" in err
    code, _, err = _filters(capsys, tmp_path / "none.npz", "--layer", "c1", "-o", tmp_path / "x.png")
    assert code == 1 and "does not exist" in err


def test_too_large_a_picture(tmp_path, capsys, monkeypatch):
    path, _ = lenet_weights(tmp_path)
    monkeypatch.setattr(filters_module, "MAX_SIDE", 60)  # 16 rows of 5×5 need 97 pixels at zoom 1
    code, _, err = _filters(capsys, path, "--layer", "c3", "-o", tmp_path / "x.png")
    assert code == 1 and "use --channels mean" in err
    img = draw_filters(np.ones((16, 6, 5, 5)), "mean").image  # 4×4 tiles: zoom shrinks to fit 60
    assert max(img.shape[:2]) <= 60


def test_zero_kernel_is_mid_gray():
    grid = draw_filters(np.zeros((2, 1, 3, 3)), zoom=1)
    assert (grid.image[1:4, 1:4] == 128).all()


# -- the grid underneath -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, cols, expected", [(1, None, (1, 1)), (6, None, (2, 3)), (16, None, (4, 4)),
                                               (17, None, (4, 5)), (64, None, (8, 8)), (96, 6, (16, 6)),
                                               (3, 10, (1, 3))])
def test_grid_shape(n, cols, expected):
    assert grid_shape(n, cols) == expected


def test_tile_grid_places_tiles_row_by_row():
    tiles = np.zeros((5, 2, 3, 3), np.uint8)
    for i in range(5):
        tiles[i] = i * 50
    img = tile_grid(tiles, zoom=2, gap=1, background=(9, 9, 9))
    assert img.shape == grid_size(2, 3, 2, 3, 2, 1) + (3,) == (11, 22, 3)
    assert (img[1:5, 8:14] == 50).all() and (img[6:10, 1:7] == 150).all()  # tile 1 (row 0, col 1), tile 3
    assert (img[6:10, 15:21] == 9).all()  # the cell after the last tile stays background


def test_viridis_endpoints():
    np.testing.assert_array_equal(viridis(np.array([0.0, 1.0, np.nan])), [[68, 1, 84], [253, 231, 37],
                                                                          [68, 1, 84]])


def test_filters_help_has_examples(capsys):
    assert cli.main(["filters", "--help"]) == 0
    assert "examples:\n  graphconv filters " in capsys.readouterr().out


# -- kernels that cannot be drawn ----------------------------------------------------------------------------------

def _one_line_error(code: int, err: str) -> str:
    assert code == 1 and "Traceback" not in err and "internal error" not in err
    (line,) = err.strip().splitlines()
    return line


@pytest.mark.parametrize("shape", [(4, 0, 3, 3), (0, 1, 3, 3), (4, 1, 0, 3), (4, 1, 3, 0), (0, 0, 0, 0)])
def test_a_kernel_with_a_zero_size_dimension_is_refused(tmp_path, capsys, shape):
    np.savez(tmp_path / "w.npz", **{"c1.weight": np.zeros(shape, np.float32)})
    code, _, err = _filters(capsys, tmp_path / "w.npz", "--layer", "c1", "-o", tmp_path / "f.png")
    assert f"the kernel {list(shape)} has no weights (a dimension is 0)" in _one_line_error(code, err)
    assert not (tmp_path / "f.png").exists()


def test_a_single_kernel_too_large_to_draw(tmp_path, capsys):
    np.savez(tmp_path / "w.npz", **{"c1.weight": np.zeros((1, 1, 1, 9000), np.float32)})
    code, _, err = _filters(capsys, tmp_path / "w.npz", "--layer", "c1", "-o", tmp_path / "f.png")
    line = _one_line_error(code, err)
    assert "a 1×9000 kernel slice makes a picture of at least 9,002 pixels a side" in line
    assert "cannot draw it" in line and "--channels" not in line  # one tile: no option makes it smaller


def test_too_large_only_suggests_what_would_fit(monkeypatch):
    monkeypatch.setattr(filters_module, "MAX_SIDE", 40)
    with pytest.raises(GraphconvError, match="use --channels mean \\(one tile per filter: 4 tiles\\)"):
        draw_filters(np.ones((4, 8, 5, 5)), "all")  # 4 rows of 8: too wide; 2×2 tiles of the mean fit
    with pytest.raises(GraphconvError, match="filters cannot draw this layer") as info:
        draw_filters(np.ones((100, 1, 5, 5)), "mean")  # already one tile per filter
    assert "--channels" not in str(info.value)
    with pytest.raises(GraphconvError, match="filters cannot draw this layer") as info:
        draw_filters(np.ones((100, 3, 5, 5)), "rgb")  # the mean would make the same 100 tiles
    assert "--channels" not in str(info.value)
    with pytest.raises(GraphconvError, match="kernel slice"):
        draw_filters(np.ones((2, 2, 50, 3)), "all")  # not even one slice fits


# -- writing the picture --------------------------------------------------------------------------------------------

def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "tmp" in p.name)


def test_a_missing_output_folder_names_the_path_given(tmp_path, capsys):
    path, _ = lenet_weights(tmp_path)
    out = tmp_path / "nodir" / "f.png"
    line = _one_line_error(*_filters(capsys, path, "--layer", "c1", "-o", out)[::2])
    assert line == f"error: cannot write '{out}': the folder '{tmp_path / 'nodir'}' does not exist"
    line = _one_line_error(*_filters(capsys, path, "--layer", "c1", "-o", tmp_path)[::2])
    assert line == f"error: cannot write '{tmp_path}': it is a folder"
    (tmp_path / "dir.png").mkdir()
    line = _one_line_error(*_filters(capsys, path, "--layer", "c1", "-o", tmp_path / "dir.png")[::2])
    assert line == f"error: cannot write '{tmp_path / 'dir.png'}': it is a folder"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["f.gif", "f.svg", "f", "f.png.txt"])
def test_extensions_that_are_not_written_are_refused(tmp_path, capsys, name):
    path, _ = lenet_weights(tmp_path)
    line = _one_line_error(*_filters(capsys, path, "--layer", "c1", "-o", tmp_path / name)[::2])
    assert "pictures are written as .png, .webp, .bmp, .tif, .tiff, .jpg, .jpeg (the format follows" in line
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("name, fmt, exact", [("f.png", "PNG", True), ("f.WEBP", "WEBP", True),
                                              ("f.bmp", "BMP", True), ("f.tiff", "TIFF", True),
                                              ("f.jpg", "JPEG", False), ("f.jpeg", "JPEG", False)])
def test_the_format_follows_the_extension(tmp_path, capsys, name, fmt, exact):
    path, _ = lenet_weights(tmp_path)
    assert _filters(capsys, path, "--layer", "c1", "-o", tmp_path / "ref.png")[0] == 0
    code, _, err = _filters(capsys, path, "--layer", "c1", "-o", tmp_path / name)
    assert code == 0, err
    with Image.open(tmp_path / name) as im:
        assert im.format == fmt and im.mode == "RGB"
        got = np.asarray(im).astype(int)
    want = _png(tmp_path / "ref.png").astype(int)
    assert got.shape == want.shape
    assert (got == want).all() if exact else np.abs(got - want).mean() < 3  # JPEG: close, not exact


def test_a_failed_write_leaves_nothing_and_names_the_path(tmp_path, monkeypatch):
    from graphconv.imaging.grid import save_picture

    image = np.zeros((4, 4, 3), np.uint8)
    out = tmp_path / "f.png"
    out.write_bytes(b"old")

    def broken(self, fp, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(GraphconvError) as info:
        save_picture(image, out)
    assert str(info.value) == f"cannot write '{out}': No space left on device"
    assert out.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_a_written_picture_gets_the_usual_file_mode(tmp_path):
    import os

    from graphconv.imaging.grid import save_picture

    mask = os.umask(0o022)
    try:
        save_picture(np.zeros((4, 4, 3), np.uint8), tmp_path / "f.png")
    finally:
        os.umask(mask)
    assert (tmp_path / "f.png").stat().st_mode & 0o777 == 0o644  # not the temporary file's private 0o600


def test_webp_and_jpeg_size_limits_are_checked_first(tmp_path):
    from graphconv.imaging.grid import save_picture

    with pytest.raises(GraphconvError, match="WEBP holds at most 16,383 a side; write .png"):
        save_picture(np.zeros((1, 16384, 3), np.uint8), tmp_path / "wide.webp")
    assert list(tmp_path.iterdir()) == []
