"""Pictures to input tensors: decode (untrusted files), convert, resize, scale, normalize.

    pic = read_image("cat.jpg")                                   # a Picture: the decoded image and what it was
    x = to_tensor(pic, channels=3, size=(224, 224), resize=Resize("crop"))          # [3, 224, 224] in [0, 1]
    x = Normalization.parse("imagenet", channels=3).apply(x)

The steps, in order (each one a plain function, so the tests can pin its geometry and values):
1. read: the file's size is checked before it is read (MAX_IMAGE_BYTES), then it is decoded by Pillow from memory,
   restricted to FORMATS, with Pillow's decompression-bomb limit set to MAX_IMAGE_PIXELS and its warning turned
   into an error (so a forged header declaring a huge picture is refused before any pixel is decoded). The first
   frame of an animated GIF or WebP and the first page of a TIFF are used; the EXIF orientation of a photo is
   applied. Every failure is one ImageError line naming the file.
2. channels: 1 -> grayscale (Pillow's "L": ITU-R 601-2 luma, as torchvision's Grayscale), 3 -> RGB (a grayscale
   picture repeated). Transparency is composited over white (a transparent background reads as paper), so an RGBA
   icon, a palette GIF with a transparent colour and a gray+alpha PNG all come out opaque. 16-bit and float
   pictures keep their precision (scaled by 65535, or clipped to [0, 1] for float); a float picture with a NaN or
   infinite pixel is refused (no value in [0, 1] stands for it).
3. resize to the input's H x W, with Pillow's antialiased bilinear filter:
   - "crop" (the default): scale so that the picture covers H x W, then cut the centre out: nothing is distorted,
     the longer side loses its ends. "crop:F" first scales to cover H/F x W/F, then cuts H x W: torchvision's
     ImageNet eval transform (Resize(256) then CenterCrop(224)) is "crop:0.875" (up to its integer rounding).
   - "stretch": scale each side separately to H x W (the aspect ratio changes; nothing is cut).
4. scale bytes to [0, 1] floats.
5. normalize: (x - mean) / std per channel. "imagenet" (torchvision's mean and std), "none", or "M1,M2,M3:S1,S2,S3"
   (one value, or one per channel; the input is float32, so each mean must be finite in float32, each std a
   normal positive float32 (not 0, not subnormal), and (x - mean) / std finite for every x in [0, 1]). The
   default, "auto", is "imagenet" for a 3-channel input of ImageNet size
   (H and W at least IMAGENET_MIN_SIZE, e.g. 224: what torchvision's pretrained models expect) and "none" for
   everything else, which is the range graphconv train feeds its networks (digits, MNIST and uint8 .npz data are
   scaled to [0, 1] and not normalized).

Pillow is imported only when a picture is read, so the rest of graphconv works without it (the `image` extra).
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import GraphconvError
from ..files import read_bounded

__all__ = ["ImageError", "Picture", "Resize", "Normalization", "read_image", "to_tensor", "load_pillow",
           "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "FORMATS", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET_MIN_SIZE"]

MAX_IMAGE_BYTES = 128 << 20  # a picture file on disk
MAX_IMAGE_PIXELS = 64 << 20  # 64 Mi pixels (a 50 MP photo fits); Pillow's own default is 89.5 MP
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")  # decoders allowed on untrusted files
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_MIN_SIZE = 128  # "auto" normalizes 3-channel inputs at least this large (in H and W) as ImageNet models

PILLOW_HINT = "pip install 'graphconv[image]'"


class ImageError(GraphconvError):
    """A picture that cannot be used: unreadable, not an image, too large, or not convertible to the input."""


def load_pillow() -> Any:
    """The PIL.Image module, or a GraphconvError naming the extra that installs it."""
    try:
        from PIL import Image
    except ImportError:
        raise GraphconvError(f"pictures need Pillow, which is not installed: {PILLOW_HINT}") from None
    return Image


@dataclass
class Picture:
    """A decoded picture: `image` (a loaded PIL image, EXIF orientation applied; None once converted by
    load_images, which keeps only the description) and what the file was."""

    path: str
    image: Any
    format: str
    mode: str  # the mode of the file as decoded, before any conversion (e.g. "RGBA", "P", "I;16")
    size: tuple[int, int]  # (width, height) in pixels, as displayed (EXIF orientation applied)
    frames: int = 1

    def describe(self) -> str:
        """E.g. "PNG 64×48 RGBA" (the format, size and mode of the file)."""
        w, h = self.size
        extra = f", frame 1 of {self.frames}" if self.frames > 1 else ""
        return f"{self.format} {w}×{h} {self.mode}{extra}"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


@contextmanager
def _pillow_limits(Image: Any) -> Iterator[None]:
    """Pillow's decompression-bomb check at MAX_IMAGE_PIXELS, its warning (between the limit and twice it) raised
    as an error. The module-wide limit is restored afterwards."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def read_image(path: str | os.PathLike) -> Picture:
    """Decode the picture at `path` (untrusted). Raises ImageError (one line, naming the file) when it is missing,
    not a regular file, larger than MAX_IMAGE_BYTES, not in one of FORMATS, corrupt or truncated, or declares more
    than MAX_IMAGE_PIXELS pixels; GraphconvError when Pillow is missing."""
    Image = load_pillow()
    path = os.fspath(path)
    data = read_bounded(path, MAX_IMAGE_BYTES, "image", ImageError)
    if not data:
        raise ImageError(f"image '{path}' is empty")
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with _pillow_limits(Image):
            im = Image.open(io.BytesIO(data), formats=list(FORMATS))
            fmt, mode, frames = im.format or "?", im.mode, int(getattr(im, "n_frames", 1) or 1)
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im) or im
            im.load()
    except UnidentifiedImageError:
        raise ImageError(f"'{path}' is not a picture graphconv reads (formats: {', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"image '{path}' refused: it declares more than {MAX_IMAGE_PIXELS:,} pixels (a "
                         f"decompression bomb?): {_one_line(e)}") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, IndexError, TypeError,
            KeyError, MemoryError) as e:  # what Pillow's decoders raise on corrupt or truncated data
        raise ImageError(f"cannot decode image '{path}' (corrupt or truncated?): {_one_line(e)}") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"image '{path}' has no pixels ({w}×{h})")
    return Picture(path, im, fmt, mode, (w, h), frames)


# -- channels ---------------------------------------------------------------------------------------------------------

_HIGH_DEPTH = {"I", "F"}  # plus every "I;16..." mode


def _has_alpha(im: Any) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB", "1")
                                                              and "transparency" in im.info)


def _over_white(im: Any, Image: Any) -> Any:
    """An RGB picture: `im` composited over an opaque white background."""
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _channels_image(pic: Picture, channels: int) -> tuple[Any, float]:
    """(a PIL image in mode "L", "RGB" or "F", the value that means white) for an input of `channels` (1 or 3)."""
    Image = load_pillow()
    im = pic.image
    if channels not in (1, 3):
        raise ImageError(f"pictures become 1 (grayscale) or 3 (RGB) channels; the input has {channels}")
    if im.mode in _HIGH_DEPTH or im.mode.startswith("I;16"):
        a = np.asarray(im, dtype=np.float64)
        if not np.all(np.isfinite(a)):  # only a float ("F") picture can hold them; clip would keep NaN as NaN
            bad = int(np.count_nonzero(~np.isfinite(a)))
            raise ImageError(f"image '{pic.path}' ({pic.mode}) has {bad:,} NaN or infinite pixel value"
                             f"{'s' if bad != 1 else ''}; pixels must be finite numbers")
        a = np.clip(a, 0.0, 1.0) if im.mode == "F" else np.clip(a / 65535.0, 0.0, 1.0)
        return Image.fromarray(a.astype(np.float32)), 1.0  # gray; repeated for 3 channels later
    if _has_alpha(im):
        im = _over_white(im, Image)
    target = "L" if channels == 1 else "RGB"
    if im.mode != target:
        im = im.convert(target)
    return im, 255.0


# -- geometry ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resize:
    """How a picture is fitted to the input's H x W: "crop" (cover, then cut the centre; `fraction` < 1 scales to
    cover H/fraction x W/fraction first) or "stretch"."""

    mode: str = "crop"
    fraction: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "Resize":
        """"crop", "crop:F" (0 < F <= 1) or "stretch"; raises ValueError."""
        mode, sep, frac = text.strip().partition(":")
        if mode == "stretch" and not sep:
            return cls("stretch")
        if mode == "crop":
            if not sep:
                return cls("crop")
            try:
                f = float(frac)
            except ValueError:
                raise ValueError(f"crop:F needs a number F in (0, 1], got {frac!r}") from None
            if not 0.0 < f <= 1.0:
                raise ValueError(f"crop:F needs F in (0, 1], got {f:g}")
            return cls("crop", f)
        raise ValueError(f"expected crop, crop:F (e.g. crop:0.875) or stretch, got {text!r}")

    def box(self, width: int, height: int, out_w: int, out_h: int) -> tuple[float, float, float, float]:
        """The region (left, upper, right, lower) of a width x height picture, in its pixel coordinates, that is
        scaled to out_w x out_h."""
        if self.mode == "stretch":
            return (0.0, 0.0, float(width), float(height))
        scale = max(out_w / (self.fraction * width), out_h / (self.fraction * height))  # covers H/F x W/F
        bw, bh = out_w / scale, out_h / scale
        left, upper = (width - bw) / 2.0, (height - bh) / 2.0
        return (left, upper, left + bw, upper + bh)

    def __str__(self) -> str:
        return self.mode if self.mode == "stretch" or self.fraction == 1.0 else f"crop:{self.fraction:g}"

    def describe(self, out_h: int, out_w: int) -> str:
        """What fitting a picture to out_h x out_w does, in words."""
        if self.mode == "stretch":
            return f"stretched to {out_h}×{out_w}"
        cover = f"{out_h / self.fraction:.4g}×{out_w / self.fraction:.4g}"
        return f"resized to cover {cover}, centre {out_h}×{out_w} cut out"


def to_tensor(pic: Picture, channels: int, size: tuple[int, int], resize: Resize = Resize()) -> np.ndarray:
    """The picture as a float32 [channels, H, W] array in [0, 1] (`size` is (H, W)): converted to grayscale or RGB,
    then resized as `resize` says (Pillow's bilinear filter, antialiased when shrinking)."""
    Image = load_pillow()
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ImageError(f"cannot resize a picture to {h}×{w}")
    if pic.image is None:
        raise ImageError(f"image '{pic.path}' was already converted (its pixels are released)")
    try:
        im, white = _channels_image(pic, channels)
        box = resize.box(im.size[0], im.size[1], w, h)
        out = im.resize((w, h), Image.Resampling.BILINEAR, box=box)
    except (ValueError, OSError, MemoryError) as e:
        raise ImageError(f"cannot convert image '{pic.path}' ({pic.mode}) to {channels} channels of {h}×{w}: "
                         f"{_one_line(e)}") from None
    a = np.asarray(out, dtype=np.float32) / np.float32(white)
    if a.ndim == 2:
        a = a[None]
        if channels == 3:
            a = np.repeat(a, 3, axis=0)
    else:
        a = np.transpose(a, (2, 0, 1))
    return np.ascontiguousarray(np.clip(a, 0.0, 1.0), dtype=np.float32)


# -- normalization ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Normalization:
    """(x - mean) / std per channel; `name` is "imagenet", "none" or "custom"."""

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def parse(cls, text: str, channels: int, size: tuple[int, int] | None = None) -> "Normalization":
        """"auto", "imagenet", "none" or "M1,M2,..:S1,S2,.." (one value or one per channel) for an input of
        `channels` and (H, W) `size` (used by "auto"). Raises ImageError."""
        t = text.strip().lower()
        if t == "auto":
            big = size is not None and min(int(size[0]), int(size[1])) >= IMAGENET_MIN_SIZE
            t = "imagenet" if channels == 3 and big else "none"
        if t == "none":
            return cls("none", (0.0,) * channels, (1.0,) * channels)
        if t == "imagenet":
            if channels != 3:
                raise ImageError(f"--normalize imagenet is for 3-channel (RGB) inputs; the input has {channels}")
            return cls("imagenet", IMAGENET_MEAN, IMAGENET_STD)
        mean_text, sep, std_text = text.partition(":")
        if not sep:
            raise ImageError(f"--normalize: expected auto, imagenet, none or MEAN,..:STD,.. (e.g. 0.5:0.25), got "
                             f"{text!r}")
        mean = _floats(mean_text, "mean", channels)
        std = _floats(std_text, "std", channels)
        if any(not s > 0 for s in std):
            raise ImageError(f"--normalize: every std must be positive, got {', '.join(f'{s:g}' for s in std)}")
        norm = cls("custom", mean, std)
        norm.check()
        return norm

    def check(self) -> None:
        """Raise ImageError unless the normalization works in float32: every mean finite, every std a normal
        positive number (0 or a subnormal divides to inf), and (x - mean) / std finite for x in [0, 1]."""
        tiny, big = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
        with np.errstate(all="ignore"):  # overflow to inf is what is checked for, not a warning
            mean32 = np.asarray(self.mean, np.float64).astype(np.float32)
            std32 = np.asarray(self.std, np.float64).astype(np.float32)
            ends = [(np.float32(x) - mean32) / std32 for x in (0.0, 1.0)]  # (x - mean) / std is monotonic in x
        for m, m32 in zip(self.mean, mean32):
            if not np.isfinite(m32):
                raise ImageError(f"--normalize: mean {m!r} is not a finite float32 (at most {big:.4g} in size)")
        for s, s32 in zip(self.std, std32):
            if not (np.isfinite(s32) and s32 >= tiny):
                raise ImageError(f"--normalize: std {s!r} is not a normal positive float32 (from {tiny:.4g} to "
                                 f"{big:.4g}); the pictures are divided by it in float32")
        for c, (m, s) in enumerate(zip(self.mean, self.std)):
            if not (np.isfinite(ends[0][c]) and np.isfinite(ends[1][c])):
                raise ImageError(f"--normalize: (x - {m!r}) / {s!r} overflows float32 (beyond {big:.4g}) for x "
                                 f"in [0, 1]")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / std over axis -3 (channels) of a [..., C, H, W] float array (in float32). Raises ImageError
        when the normalization does not work in float32 (check)."""
        self.check()
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return ((x - mean) / std).astype(np.float32)

    def describe(self) -> str:
        """What the normalization does, in words."""
        if self.name == "none":
            return "range [0, 1], not normalized"
        values = f"mean {', '.join(f'{m:g}' for m in self.mean)}; std {', '.join(f'{s:g}' for s in self.std)}"
        return f"normalized ({self.name}: {values})" if self.name == "imagenet" else f"normalized ({values})"

    def to_json(self) -> dict[str, Any]:
        """{"name", "mean", "std"}."""
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std)}


def _floats(text: str, what: str, channels: int) -> tuple[float, ...]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ImageError(f"--normalize: the {what} must be numbers separated by commas, got {text!r}") from None
    if any(not math.isfinite(v) for v in values):
        raise ImageError(f"--normalize: the {what} must be finite numbers, got {text!r}")
    if len(values) == 1:
        return tuple(values) * channels
    if len(values) != channels:
        raise ImageError(f"--normalize: {len(values)} {what} values for an input of {channels} channel"
                         + (f"s (give one or {channels})" if channels > 1 else " (give one)"))
    return tuple(values)


def load_images(paths: Sequence[str], channels: int, size: tuple[int, int], resize: Resize,
                normalization: Normalization) -> tuple[np.ndarray, list[Picture], np.ndarray]:
    """(normalized batch [N, C, H, W], the pictures, the batch before normalization) for one picture per path.
    Pictures are decoded one at a time and their pixels released once converted (`Picture.image` is None)."""
    pics, tensors = [], []
    for path in paths:
        pic = read_image(path)
        tensors.append(to_tensor(pic, channels, size, resize))
        pics.append(replace(pic, image=None))
    raw = np.stack(tensors)
    return normalization.apply(raw), pics, raw
