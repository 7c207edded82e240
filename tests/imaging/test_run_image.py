"""graphconv run --image through cli.main: the top classes with labels, --top, --json, a batch of pictures, a
classifier whose answer is known, and the errors (one line, exit 1, no traceback)."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from graphconv import cli

from .helpers import (BRIGHT_SOFTMAX_SPEC, BRIGHT_SPEC, SPECS, corrupt_png, labels_file, png_header_only, sigmoid,
                      solid, stripes, write)

LENET = str(SPECS / "lenet5.gc")
RANK_LINE = re.compile(r"^\s+(\d+)\.\s+(\d+\.\d\d)%\s+(.*)$")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["run", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _ranked(out: str) -> list[tuple[int, float, str]]:
    return [(int(m[1]), float(m[2]), m[3]) for m in map(RANK_LINE.match, out.splitlines()) if m]


def _one_error(code: int, err: str) -> str:
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def digit(tmp_path):
    return solid(tmp_path, "digit.png", (40, 40, 40), size=(64, 48))


def test_lenet_prints_the_top_five_with_labels(tmp_path, capsys, digit):
    code, out, err = _run(capsys, LENET, "--image", digit, "--labels", labels_file(tmp_path, DIGITS))
    assert code == 0, err
    ranked = _ranked(out)
    assert [r[0] for r in ranked] == [1, 2, 3, 4, 5]
    probs = [r[1] for r in ranked]
    assert probs == sorted(probs, reverse=True)
    for _rank, _p, what in ranked:
        index, label = re.match(r"(\d+)\s+(\w+)", what).groups()
        assert label == DIGITS[int(index)] and "(logit " in what
    assert "input image [1, 1, 32, 32]: 1 picture, grayscale" in out
    assert "digit.png: PNG 64×48 RGB" in out
    assert "note: the weights are untrained" in out


def test_top_k(capsys, digit):
    code, out, _ = _run(capsys, LENET, "--image", digit, "--top", "3")
    assert code == 0 and [r[0] for r in _ranked(out)] == [1, 2, 3]
    assert "class " in _ranked(out)[0][2]  # no labels: class indices
    code, out, _ = _run(capsys, LENET, "--image", digit, "--top", "50")
    assert code == 0 and len(_ranked(out)) == 10  # no more than the classes


def test_json(tmp_path, capsys, digit):
    code, out, _ = _run(capsys, LENET, "--image", digit, "--labels", labels_file(tmp_path, DIGITS), "--json")
    assert code == 0
    doc = json.loads(out)
    assert (doc["network"], doc["backend"], doc["trained"], doc["seed"]) == ("lenet5", "reference", False, 0)
    assert doc["inputs"] == [{"name": "image", "shape": [1, 1, 32, 32], "from": "images", "channels": "grayscale",
                              "resize": "crop", "normalize": {"name": "none", "mean": [0.0], "std": [1.0]}}]
    assert doc["images"] == [{"path": digit, "format": "PNG", "width": 64, "height": 48, "mode": "RGB",
                              "frames": 1}]
    logits = doc["outputs"]["logits"]
    assert (logits["kind"], logits["classes"], logits["probabilities"]) == ("classifier", 10, "softmax")
    (result,) = logits["results"]
    assert (result["sample"], result["image"]) == (0, digit)
    top = result["top"]
    assert [t["rank"] for t in top] == [1, 2, 3, 4, 5]
    assert all(t["label"] == DIGITS[t["class"]] for t in top)
    logit = np.array([t["logit"] for t in top])
    # the probabilities are the softmax over all 10 logits: the ratios of the shown ones follow from the logits
    np.testing.assert_allclose(top[1]["probability"] / top[0]["probability"], np.exp(logit[1] - logit[0]),
                               rtol=1e-5)


def test_several_pictures_make_one_batch(tmp_path, capsys):
    a = solid(tmp_path, "a.png", (250, 250, 250))
    b = stripes(tmp_path, "b.png")
    c = solid(tmp_path, "c.jpg", (10, 10, 10))
    code, out, _ = _run(capsys, LENET, "--image", a, "--image", b, "--image", c, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["inputs"][0]["shape"] == [3, 1, 32, 32]
    results = doc["outputs"]["logits"]["results"]
    assert [r["image"] for r in results] == [a, b, c]
    for path, batched in zip((a, b, c), results):  # each sample as if run alone
        code, alone, _ = _run(capsys, LENET, "--image", path, "--json")
        (single,) = json.loads(alone)["outputs"]["logits"]["results"]
        assert [t["class"] for t in single["top"]] == [t["class"] for t in batched["top"]]
        np.testing.assert_allclose([t["logit"] for t in single["top"]], [t["logit"] for t in batched["top"]],
                                   rtol=1e-5, atol=1e-6)
    code, text, _ = _run(capsys, LENET, "--image", a, "--image", b, "--top", "2")
    assert [r[0] for r in _ranked(text)] == [1, 2, 1, 2]
    assert text.index(f"{a}:") < text.index(f"{b}:")


def test_resnet18_rgb_imagenet_normalization(tmp_path, capsys):
    """3-channel 224×224: RGB, torchvision's normalization by default; 10 classes keep it quick."""
    photo = stripes(tmp_path, "photo.jpg", 320, 240)
    code, out, err = _run(capsys, SPECS / "resnet18.gc", "--set", "num_classes=10", "--image", photo,
                          "--labels", labels_file(tmp_path, DIGITS), "--json")
    assert code == 0, err
    doc = json.loads(out)
    (info,) = doc["inputs"]
    assert info["shape"] == [1, 3, 224, 224] and info["channels"] == "RGB"
    assert info["normalize"]["name"] == "imagenet"
    assert len(doc["outputs"]["logits"]["results"][0]["top"]) == 5


@pytest.mark.parametrize("gray, expected", [(255, (1, "bright", sigmoid(10))), (153, (1, "bright", sigmoid(2))),
                                            (51, (0, "dark", sigmoid(6)))])
def test_the_answer_of_a_known_classifier(tmp_path, capsys, gray, expected):
    """p(bright) = sigmoid(20 m - 10) for a picture of mean brightness m: the top class and its probability."""
    spec = write(tmp_path, "bright.gc", BRIGHT_SPEC)
    picture = solid(tmp_path, "p.png", (gray, gray, gray), size=(30, 20))
    code, out, _ = _run(capsys, spec, "--image", picture, "--labels", labels_file(tmp_path, ["dark", "bright"]),
                        "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["trained"] is True and doc["weights"] is None  # every weight is fixed in the spec
    first = doc["outputs"]["logits"]["results"][0]["top"][0]
    assert (first["class"], first["label"]) == expected[:2]
    assert first["probability"] == pytest.approx(expected[2], rel=1e-5)


def test_an_output_that_already_holds_probabilities(tmp_path, capsys):
    spec = write(tmp_path, "bright_p.gc", BRIGHT_SOFTMAX_SPEC)
    picture = solid(tmp_path, "white.png", (255, 255, 255))
    code, out, _ = _run(capsys, spec, "--image", picture, "--json")
    probs = json.loads(out)["outputs"]["probs"]
    assert probs["probabilities"] == "output"
    top = probs["results"][0]["top"]
    assert top[0]["class"] == 1 and top[0]["logit"] is None
    assert top[0]["probability"] == pytest.approx(sigmoid(10), rel=1e-5)
    code, text, _ = _run(capsys, spec, "--image", picture)
    assert "probabilities: the outputs as they are" in text and "logit" not in text


def test_output_file(tmp_path, capsys, digit):
    out_file = tmp_path / "logits.npy"
    code, out, _ = _run(capsys, LENET, "--image", digit, "--image", digit, "--output", out_file)
    assert code == 0 and f"saved logits to {out_file}" in out
    assert np.load(out_file).shape == (2, 10)


def test_label_count_mismatch(tmp_path, capsys, digit):
    line = _one_error(*_run(capsys, LENET, "--image", digit, "--labels", labels_file(tmp_path, DIGITS[:9]))[::2])
    assert "has 9 labels, but output 'logits' has 10 classes" in line


@pytest.mark.parametrize("make, match", [
    (lambda p: corrupt_png(p), "corrupt or truncated"),
    (lambda p: png_header_only(p, "bomb.png", 100_000, 100_000), "decompression bomb"),
    (lambda p: write(p, "notes.png", "not a picture at all\n"), "is not a picture graphconv reads"),
    (lambda p: str(p / "missing.png"), "No such file"),
])
def test_bad_pictures_are_one_line_errors(tmp_path, capsys, make, match):
    code, _out, err = _run(capsys, LENET, "--image", make(tmp_path))
    assert match in _one_error(code, err)


@pytest.mark.parametrize("extra, match", [
    (["--resize", "stretch", "--normalize", "none"], "--resize, --normalize apply to --image"),
    (["--normalize", "none"], "--normalize applies to --image"),
])
def test_picture_options_need_a_picture(capsys, extra, match):
    code, _out, err = _run(capsys, LENET, *extra)
    assert match in _one_error(code, err)


def test_usage_conflicts(tmp_path, capsys, digit):
    assert "--batch sets the batch" in _one_error(*_run(capsys, LENET, "--image", digit, "--batch", "2")[::2])
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 32, 32), np.float32))
    line = _one_error(*_run(capsys, LENET, "--image", digit, "--input", tmp_path / "x.npy")[::2])
    assert "given twice" in line
    line = _one_error(*_run(capsys, LENET, "--image", digit, "--normalize", "imagenet")[::2])
    assert "3-channel" in line
    sobel_like = write(tmp_path, "flat.gc", "network flat {\n  input x: f32[N, 4]\n  y = x -> relu\n  output y\n}\n")
    assert "no input of shape [N, C, H, W]" in _one_error(*_run(capsys, sobel_like, "--image", digit)[::2])
    assert cli.main(["run", LENET, "--image", digit, "--resize", "fit"]) == 2
    assert "argument --resize" in capsys.readouterr().err


def test_missing_pillow(capsys, digit, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    line = _one_error(*_run(capsys, LENET, "--image", digit)[::2])
    assert "pip install 'graphconv[image]'" in line


def test_run_without_pictures_is_unchanged(capsys):
    code, out, _ = _run(capsys, LENET)
    assert code == 0 and "output logits: shape [1, 10]" in out and "top-5 sample 0" in out


def test_top_classes_of_arrays_and_random_inputs(tmp_path, capsys):
    """--labels, --top and --json report the same way for --input arrays and random inputs, per sample."""
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 32, 32), np.float32))
    code, out, _ = _run(capsys, LENET, "--input", f"image={tmp_path / 'x.npy'}", "--json")
    doc = json.loads(out)
    assert doc["inputs"] == [{"name": "image", "shape": [2, 1, 32, 32], "from": "file"}] and doc["images"] == []
    results = doc["outputs"]["logits"]["results"]
    assert [(r["sample"], r["image"]) for r in results] == [(0, None), (1, None)]
    code, out, _ = _run(capsys, LENET, "--batch", "3", "--top", "2", "--labels", labels_file(tmp_path, DIGITS))
    assert code == 0 and "input image: random standard normal [3, 1, 32, 32] (seed 0)" in out
    assert [r[0] for r in _ranked(out)] == [1, 2] * 3 and "sample 2:" in out
    code, out, _ = _run(capsys, SPECS / "sobel.gc", "--set", "size=8", "--json")
    outputs = json.loads(out)["outputs"]
    assert set(outputs) == {"gx", "gy", "magnitude2"} and outputs["gx"]["kind"] == "other"
    line = _one_error(*_run(capsys, SPECS / "sobel.gc", "--labels", labels_file(tmp_path, DIGITS))[::2])
    assert "sobel has no classifier output" in line


def _strict(text: str):
    """json.loads that refuses NaN and Infinity (Python's own json accepts them; JSON does not)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_has_null_for_non_finite_numbers(tmp_path, capsys):
    np.save(tmp_path / "nan.npy", np.full((1, 1, 32, 32), np.nan, np.float32))
    code, out, _ = _run(capsys, LENET, "--input", tmp_path / "nan.npy", "--json")
    assert code == 0 and "NaN" not in out
    top = _strict(out)["outputs"]["logits"]["results"][0]["top"]
    assert [(t["probability"], t["logit"]) for t in top] == [(None, None)] * 5
    flat = write(tmp_path, "flat.gc", "network flat {\n  input x: f32[N, 3, 1]\n  y = x -> relu\n  output y\n}\n")
    np.save(tmp_path / "inf.npy", np.array([[[1.0], [np.inf], [2.0]]], np.float32))
    code, out, _ = _run(capsys, flat, "--input", tmp_path / "inf.npy", "--json")
    stats = _strict(out)["outputs"]["y"]
    assert code == 0 and (stats["kind"], stats["mean"], stats["min"], stats["max"]) == ("other", None, 1.0, None)


def test_infinite_logits(tmp_path, capsys):
    """softmax's limit: +inf logits share probability 1, -inf logits get 0; in JSON the infinite logits are null."""
    flat = write(tmp_path, "flat.gc", "network flat {\n  input x: f32[N, 4]\n  y = x -> identity\n  output y\n}\n")
    np.save(tmp_path / "x.npy", np.array([[1.0, np.inf, -np.inf, np.inf], [np.nan, 0, 0, 0]], np.float32))
    code, out, err = _run(capsys, flat, "--input", tmp_path / "x.npy", "--json")
    assert code == 0 and "Warning" not in err
    first, second = (r["top"] for r in _strict(out)["outputs"]["y"]["results"])
    assert [(t["class"], t["probability"], t["logit"]) for t in first] == [
        (1, 0.5, None), (3, 0.5, None), (0, 0.0, 1.0), (2, 0.0, None)]
    assert all(t["probability"] is None for t in second)


def test_strict_json_turns_every_non_finite_float_into_null():
    from graphconv.imaging.command import _strict_json

    doc = {"a": [float("nan"), 1.5, {"b": float("-inf"), "c": (float("inf"), 2)}], "d": np.float64("nan"), "e": None}
    assert _strict(_strict_json(doc)) == {"a": [None, 1.5, {"b": None, "c": [None, 2]}], "d": None, "e": None}


def test_a_float_picture_with_nan_pixels_is_refused(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.full((32, 32), np.nan, np.float32), "F").save(tmp_path / "nan.tif")
    line = _one_error(*_run(capsys, LENET, "--image", tmp_path / "nan.tif")[::2])
    assert "has 1,024 NaN or infinite pixel values" in line


def test_a_std_that_is_zero_in_float32_is_refused(capsys, digit):
    line = _one_error(*_run(capsys, LENET, "--image", digit, "--normalize", "0:1e-320")[::2])
    assert "std 1e-320 is not a normal positive float32" in line


def test_labels_and_file_names_are_printed_with_control_characters_escaped(tmp_path, capsys):
    names = [f"\x1b[31mred{i}\x1b[0m" for i in range(9)] + ["bidi\u202eevil"]
    picture = solid(tmp_path, "a\x1b]0;title\x07.png", (40, 40, 40), size=(8, 8))
    code, out, err = _run(capsys, LENET, "--image", picture, "--labels", labels_file(tmp_path, names),
                          "--top", "10")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[31mred0\\x1b[0m" in out and "bidi\\u202eevil" in out and "a\\x1b]0;title\\x07.png" in out
    code, out, _ = _run(capsys, LENET, "--image", picture, "--labels", labels_file(tmp_path, names), "--json")
    doc = _strict(out)  # JSON escapes them itself: the labels come back as they are in the file
    assert {t["label"] for t in doc["outputs"]["logits"]["results"][0]["top"]} <= set(names)
    assert doc["images"][0]["path"] == picture


def test_several_picture_inputs(tmp_path, capsys, digit):
    two = write(tmp_path, "two.gc", "network two {\n  input a: f32[N, 1, 8, 8]\n  input b: f32[N, 1, 8, 8]\n"
                                    "  y = add(a, b) -> conv2d(2, kernel=3) as c1\n  output y\n}\n")
    line = _one_error(*_run(capsys, two, "--image", digit)[::2])
    assert "several picture inputs (a, b); --image feeds one: give the others with --input NAME=FILE.npy" in line
