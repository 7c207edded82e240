"""From a picture file to an input tensor: decoding (formats, modes, transparency, EXIF, frames), the geometry of
crop and stretch, normalization values, and the refusals (bombs, sizes, corrupt and non-image files)."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from PIL import Image, features

from graphconv.errors import GraphconvError
from graphconv.imaging import decode
from graphconv.imaging.decode import ImageError, Normalization, Resize, read_image, to_tensor

from .helpers import corrupt_png, png_header_only, solid, stripes

U8 = 1.0 / 255.0


def _tensor(path, channels=3, size=(4, 4), resize=Resize()):
    return to_tensor(read_image(path), channels, size, resize)


# -- formats and modes ------------------------------------------------------------------------------------------------

def test_png_rgb_exact_values(tmp_path):
    pic = read_image(solid(tmp_path, "a.png", (10, 128, 250), size=(16, 12)))
    assert (pic.format, pic.mode, pic.size, pic.frames) == ("PNG", "RGB", (16, 12), 1)
    assert pic.describe() == "PNG 16×12 RGB"
    x = to_tensor(pic, 3, (4, 5))
    assert x.shape == (3, 4, 5) and x.dtype == np.float32
    np.testing.assert_array_equal(x, np.broadcast_to(np.float32([10, 128, 250])[:, None, None] / 255, (3, 4, 5)))


def test_jpeg(tmp_path):
    pic = read_image(solid(tmp_path, "a.jpg", (200, 100, 50), quality=95))
    assert pic.format == "JPEG"
    x = to_tensor(pic, 3, (4, 4))
    np.testing.assert_allclose(x[:, 0, 0], np.float32([200, 100, 50]) / 255, atol=4 * U8)


@pytest.mark.parametrize("fmt", ["bmp", "tiff", "ppm", "webp"])
def test_other_formats(tmp_path, fmt):
    if fmt == "webp" and not features.check("webp"):
        pytest.skip("Pillow without WebP")
    extra = {"lossless": True} if fmt == "webp" else {}
    x = _tensor(solid(tmp_path, f"a.{fmt}", (30, 60, 90), **extra))
    np.testing.assert_allclose(x[:, 1, 1], np.float32([30, 60, 90]) / 255, atol=1e-6)


def test_gray_picture_repeated_for_rgb_and_rgb_to_luma(tmp_path):
    x = _tensor(solid(tmp_path, "g.png", 77, mode="L"), channels=3)
    np.testing.assert_array_equal(x, np.full((3, 4, 4), 77 / 255, np.float32))
    y = _tensor(solid(tmp_path, "c.png", (200, 100, 50)), channels=1)  # ITU-R 601-2 luma, as torchvision
    assert y.shape == (1, 4, 4)
    assert abs(float(y[0, 0, 0]) - (200 * 0.299 + 100 * 0.587 + 50 * 0.114) / 255) <= U8


def test_transparency_is_composited_over_white(tmp_path):
    clear = _tensor(solid(tmp_path, "clear.png", (255, 0, 0, 0), mode="RGBA"))
    np.testing.assert_array_equal(clear, np.ones((3, 4, 4), np.float32))  # fully transparent: white paper
    half = _tensor(solid(tmp_path, "half.png", (255, 0, 0, 128), mode="RGBA"))
    np.testing.assert_allclose(half[:, 0, 0], [1.0, 127 / 255, 127 / 255], atol=1.5 * U8)
    la = _tensor(solid(tmp_path, "la.png", (0, 0), mode="LA"), channels=1)
    np.testing.assert_array_equal(la, np.ones((1, 4, 4), np.float32))
    assert read_image(tmp_path / "half.png").mode == "RGBA"


def test_palette_pictures(tmp_path):
    im = Image.new("P", (8, 8), 1)
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(_tensor(tmp_path / "p.png")[:, 0, 0], [0, 1, 0])
    im.save(tmp_path / "t.gif", transparency=1)  # the palette colour 1 is transparent: white
    pic = read_image(tmp_path / "t.gif")
    assert (pic.format, pic.mode) == ("GIF", "P")
    np.testing.assert_array_equal(to_tensor(pic, 3, (4, 4)), np.ones((3, 4, 4), np.float32))


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    pic = read_image(tmp_path / "anim.gif")
    assert pic.frames == 2 and "frame 1 of 2" in pic.describe()
    x = to_tensor(pic, 3, (4, 4))
    assert x[0, 0, 0] > 0.9 and x[2, 0, 0] < 0.1


def test_sixteen_bit_gray_keeps_its_range(tmp_path):
    a = np.full((6, 6), 65535, np.uint16)
    a[:, 3:] = 32768
    Image.fromarray(a).save(tmp_path / "deep.png")
    pic = read_image(tmp_path / "deep.png")
    assert pic.mode.startswith("I")
    x = to_tensor(pic, 1, (6, 6), Resize("stretch"))
    np.testing.assert_allclose(x[0, :, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 5], 32768 / 65535, atol=1e-6)
    assert to_tensor(pic, 3, (6, 6)).shape == (3, 6, 6)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    pic = read_image(tmp_path / "rot.jpg")
    assert pic.size == (20, 40)  # displayed upright: portrait
    x = to_tensor(pic, 1, (40, 20), Resize("stretch"))
    assert x[0, 5, 10] > 0.9 and x[0, 35, 10] < 0.1  # the white half is now on top


# -- geometry -----------------------------------------------------------------------------------------------------

def test_crop_keeps_the_centre(tmp_path):
    """200×100 picture, red | green | blue in quarters: the centre square is the green half. As in torchvision's
    resize-then-crop, the filter reaches a little past the cut, so only the edge columns see red and blue."""
    x = _tensor(stripes(tmp_path), size=(16, 16))
    green = np.float32([0, 1, 0])[:, None, None]
    np.testing.assert_array_equal(x[:, :, 1:15], np.broadcast_to(green, (3, 16, 14)))
    assert x[1, :, [0, 15]].min() > 0.8 and x[0, :, 0].max() < 0.2 and x[2, :, 15].max() < 0.2


def test_crop_of_a_portrait_cuts_top_and_bottom(tmp_path):
    a = np.zeros((200, 100), np.uint8)
    a[50:150] = 255  # white band in the middle half
    Image.fromarray(a).save(tmp_path / "tall.png")
    x = _tensor(tmp_path / "tall.png", channels=1, size=(10, 10))
    np.testing.assert_array_equal(x[:, 1:9], np.ones((1, 8, 10), np.float32))  # the edge rows: a little blur
    assert x[:, [0, 9]].min() > 0.7


def test_stretch_keeps_everything(tmp_path):
    x = _tensor(stripes(tmp_path), size=(16, 16), resize=Resize("stretch"))
    red, green, blue = (np.float32(c)[:, None] for c in ([1, 0, 0], [0, 1, 0], [0, 0, 1]))
    # output column c covers source columns [12.5 c, 12.5 (c + 1)), blurred by about one output pixel
    for cols, color in ((range(0, 3), red), (range(5, 11), green), (range(13, 16), blue)):
        for c in cols:
            np.testing.assert_array_equal(x[:, :, c], np.broadcast_to(color, (3, 16)))


def test_crop_fraction_is_torchvisions_eval_geometry(tmp_path):
    assert Resize("crop").box(200, 100, 32, 32) == (50.0, 0.0, 150.0, 100.0)
    assert Resize("crop", 0.875).box(256, 256, 224, 224) == (16.0, 16.0, 240.0, 240.0)  # Resize(256), crop 224
    assert Resize("stretch").box(200, 100, 32, 32) == (0.0, 0.0, 200.0, 100.0)
    a = np.zeros((64, 64), np.uint8)
    a[16:48, 16:48] = 255
    Image.fromarray(a).save(tmp_path / "square.png")
    x = _tensor(tmp_path / "square.png", channels=1, size=(16, 16), resize=Resize.parse("crop:0.5"))
    np.testing.assert_array_equal(x[:, 1:15, 1:15], np.ones((1, 14, 14), np.float32))  # only the inner square
    assert x.min() > 0.7


@pytest.mark.parametrize("text, expected", [("crop", Resize("crop")), ("stretch", Resize("stretch")),
                                            ("crop:0.875", Resize("crop", 0.875)), (" crop:1 ", Resize("crop"))])
def test_resize_parse(text, expected):
    assert Resize.parse(text) == expected


@pytest.mark.parametrize("text", ["fit", "crop:0", "crop:1.5", "crop:x", "stretch:2", ""])
def test_resize_parse_errors(text):
    with pytest.raises(ValueError):
        Resize.parse(text)


def test_a_digit_picture_matches_the_training_data(tmp_path):
    """An 8×8 digit-like picture saved as a PNG becomes (within a byte's rounding) the tensor graphconv train makes
    of its digits (bilinear upsampling, half-pixel centres)."""
    from graphconv.train.data import resize_images

    img = np.round(np.random.default_rng(3).uniform(0, 255, (8, 8))).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "d.png")
    x = _tensor(tmp_path / "d.png", channels=1, size=(32, 32))
    want = resize_images((img / 255.0).astype(np.float32)[None, None], 32, 32)[0]
    np.testing.assert_allclose(x, want, atol=1.01 * U8)


# -- normalization ----------------------------------------------------------------------------------------------

def test_imagenet_normalization_values():
    n = Normalization.parse("imagenet", 3)
    x = np.full((3, 2, 2), 0.5, np.float32)
    y = n.apply(x)
    want = (np.float32(0.5) - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])
    np.testing.assert_array_equal(y[:, 1, 1], want.astype(np.float32))
    assert y.dtype == np.float32


def test_custom_and_none_normalization():
    x = np.full((1, 3, 2, 2), 0.75, np.float32)
    np.testing.assert_array_equal(Normalization.parse("none", 3).apply(x), x)
    np.testing.assert_array_equal(Normalization.parse("0.5:0.25", 3).apply(x), np.ones_like(x))
    n = Normalization.parse("0,0.5,1:1,0.5,0.25", 3)
    np.testing.assert_array_equal(n.apply(x)[0, :, 0, 0], [0.75, 0.5, -1.0])


@pytest.mark.parametrize("channels, size, expected", [(3, (224, 224), "imagenet"), (3, (32, 32), "none"),
                                                      (1, (224, 224), "none"), (3, (128, 300), "imagenet")])
def test_auto_normalization(channels, size, expected):
    assert Normalization.parse("auto", channels, size).name == expected


@pytest.mark.parametrize("text, match", [("imagenet", "3-channel"), ("0.5:0", "positive"), ("1,2:1", "2 mean"),
                                         ("nan:1", "finite"), ("a:b", "numbers"), ("zscore", "expected")])
def test_normalization_errors(text, match):
    with pytest.raises(ImageError, match=match):
        Normalization.parse(text, 1)


# -- refusals -----------------------------------------------------------------------------------------------------

def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="decompression bomb"):
        read_image(png_header_only(tmp_path, "huge.png", 100_000, 100_000))
    # between the limit and twice it Pillow only warns: the warning is an error here
    assert decode.MAX_IMAGE_PIXELS < 10_000 * 8_000 < 2 * decode.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="decompression bomb"):
        read_image(png_header_only(tmp_path, "big.png", 10_000, 8_000, color_type=0))
    assert Image.MAX_IMAGE_PIXELS == before  # the module-wide setting is left as it was


def test_file_size_is_checked_before_reading(tmp_path, monkeypatch):
    path = solid(tmp_path, "a.png", (1, 2, 3))
    monkeypatch.setattr(decode, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(ImageError, match="limited to 10 bytes"):
        read_image(path)


@pytest.mark.parametrize("make, match", [
    (lambda p: corrupt_png(p), "corrupt or truncated"),
    (lambda p: _truncated_jpeg(p), "corrupt or truncated"),
    (lambda p: _write(p / "text.png", b"hello, not a picture\n"), "not a picture graphconv reads"),
    (lambda p: _write(p / "empty.png", b""), "is empty"),
    (lambda p: str(p), "not a regular file"),
    (lambda p: str(p / "missing.png"), "No such file"),
    (lambda p: _write(p / "x.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"), "not a picture"),
])
def test_unreadable_pictures_are_one_line_errors(tmp_path, make, match):
    with pytest.raises(ImageError, match=match) as info:
        read_image(make(tmp_path))
    assert "\n" not in str(info.value)


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _truncated_jpeg(tmp_path) -> str:
    a = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    Image.fromarray(a).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    return _write(tmp_path / "cut.jpg", data[: len(data) // 2])


def test_missing_pillow_names_the_extra(tmp_path, monkeypatch):
    path = solid(tmp_path, "a.png", (1, 2, 3))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(GraphconvError, match=r"pip install 'graphconv\[image\]'"):
        read_image(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_pictures_with_non_finite_pixels_are_refused(tmp_path, bad):
    a = np.full((8, 8), 0.25, np.float32)
    a[3, 4] = bad  # one pixel is enough
    path = tmp_path / "bad.tif"
    Image.fromarray(a, "F").save(path)
    pic = read_image(path)
    for channels in (1, 3):
        with pytest.raises(ImageError, match=r"'.*bad.tif' \(F\) has 1 NaN or infinite pixel value;") as info:
            to_tensor(pic, channels, (4, 4))
        assert "\n" not in str(info.value)


def test_finite_float_pictures_are_clipped_to_the_unit_range(tmp_path):
    path = tmp_path / "ok.tif"
    Image.fromarray(np.array([[-2.0, 0.5], [3.0e38, 1.0]], np.float32), "F").save(path)
    x = to_tensor(read_image(path), 1, (2, 2), Resize("stretch"))
    np.testing.assert_array_equal(x[0], [[0.0, 0.5], [1.0, 1.0]])


@pytest.mark.parametrize("text, match", [
    ("0:1e-320", "std 1e-320 is not a normal positive float32"),  # 0 in float32
    ("0:1e-39", "std 1e-39 is not a normal positive float32"),  # subnormal: 1 / std is inf in float32
    ("0:1e39", "std 1e+39 is not a normal positive float32"),  # inf in float32
    ("1e39:1", "mean 1e+39 is not a finite float32"),
    ("-3e38:0.5", "(x - -3e+38) / 0.5 overflows float32"),  # finite mean and std, infinite result
    ("0,0,0:1,1e-40,1", "std 1e-40 is not a normal positive float32"),
])
def test_normalization_must_work_in_float32(text, match):
    with pytest.raises(ImageError, match=re.escape(match)):
        Normalization.parse(text, 3)


def test_normalization_at_float32_limits_stays_finite():
    x = np.array([0.0, 1.0], np.float32).reshape(1, 1, 1, 2)
    for text in ("0:1.2e-38", "-3e38:1", "3e38:1"):
        y = Normalization.parse(text, 1).apply(x)
        assert np.all(np.isfinite(y)), text
    with pytest.raises(ImageError, match="not a normal positive float32"):  # made without parse: apply checks
        Normalization("custom", (0.0,), (1e-45,)).apply(x)
