"""Pictures made of tiles: grids of small arrays, captions, sections stacked into one PNG.

A grid of `rows` x `cols` tiles of h x w pixels, each magnified `zoom` times (nearest neighbour: one weight or one
activation is a zoom x zoom square, never blurred), with `gap` pixels of background between tiles and around the
grid, is exactly

    height = rows * h * zoom + (rows + 1) * gap,   width = cols * w * zoom + (cols + 1) * gap

(grid_size). Tiles fill the grid row by row; the cells after the last tile stay background. Values become bytes
as round(255 * clip(v, 0, 1)) (to_bytes), so a test can predict every pixel. Colour scales are a grayscale and
viridis (matplotlib's perceptually uniform map: dark blue-violet to yellow), kept here as 17 anchor colours
linearly interpolated (within 6/255 of matplotlib's table), so drawing needs Pillow and numpy only.

Pictures are written in the format their file name's extension names (OUTPUT_FORMATS): .png (the default choice:
lossless, every pixel as computed), .webp (written lossless), .bmp and .tif/.tiff (uncompressed), or .jpg/.jpeg
(quality 95 without chroma subsampling; still lossy, so pixels near sharp edges change). Any other extension, or
none, is refused rather than written in a format the name does not say. The file is written under a temporary
name in the same folder and renamed when complete (graphconv.files.replacing), so a failure never leaves half a
picture; errors name the path asked for, never the temporary one.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from ..errors import GraphconvError

__all__ = ["grid_shape", "grid_size", "to_bytes", "gray", "viridis", "tile_grid", "captioned", "stack",
           "picture_format", "check_output", "save_picture", "OUTPUT_FORMATS", "OUTPUT_EXTENSIONS", "PAGE",
           "INK"]

PAGE = (255, 255, 255)  # background of pages and feature-map grids
INK = (20, 20, 20)  # caption text
CAPTION_SIZE = 13  # points of Pillow's default font

# matplotlib's viridis at 0, 1/16, ..., 1
VIRIDIS_ANCHORS = np.array([
    (68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141), (44, 114, 142),
    (38, 130, 142), (33, 145, 140), (31, 160, 136), (40, 174, 128), (63, 188, 115), (94, 201, 98), (132, 212, 75),
    (173, 220, 48), (216, 226, 25), (253, 231, 37)], dtype=np.float64)
_VIRIDIS_LUT = np.stack([np.interp(np.arange(256) / 255.0, np.linspace(0.0, 1.0, len(VIRIDIS_ANCHORS)),
                                   VIRIDIS_ANCHORS[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)


def grid_shape(n: int, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of a grid for `n` tiles: `cols` columns when given, else the squarest grid (ceil(sqrt(n))
    columns, as many rows as needed)."""
    if n < 1:
        raise ValueError("a grid needs at least one tile")
    cols = max(1, min(n, cols if cols is not None else math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


def grid_size(rows: int, cols: int, h: int, w: int, zoom: int, gap: int = 1) -> tuple[int, int]:
    """(height, width) in pixels of a grid of rows x cols tiles of h x w, magnified `zoom` times, `gap` apart."""
    return rows * h * zoom + (rows + 1) * gap, cols * w * zoom + (cols + 1) * gap


def to_bytes(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) as bytes: round(255 * v)."""
    return np.round(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def gray(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as gray RGB bytes [..., 3]."""
    b = to_bytes(x)
    return np.repeat(b[..., None], 3, axis=-1)


def viridis(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as viridis RGB bytes [..., 3] (NaN as the lowest colour)."""
    return _VIRIDIS_LUT[to_bytes(np.nan_to_num(x, nan=0.0))]


def tile_grid(tiles: np.ndarray, *, cols: int | None = None, zoom: int = 1, gap: int = 1,
              background: Sequence[int] = PAGE) -> np.ndarray:
    """The RGB bytes tiles [T, h, w, 3] laid out row by row in a grid (grid_shape(T, cols)), each magnified `zoom`
    times by nearest neighbour: an array [height, width, 3] of grid_size(...)."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
        raise ValueError(f"tiles must be uint8 [T, h, w, 3], got {tiles.dtype} {list(tiles.shape)}")
    n, h, w, _ = tiles.shape
    rows, cols = grid_shape(n, cols)
    zoom = max(1, int(zoom))
    height, width = grid_size(rows, cols, h, w, zoom, gap)
    out = np.empty((height, width, 3), np.uint8)
    out[...] = np.asarray(background, np.uint8)
    big = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2) if zoom > 1 else tiles
    th, tw = h * zoom, w * zoom
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = gap + r * (th + gap), gap + c * (tw + gap)
        out[y:y + th, x:x + tw] = big[i]
    return out


def _font(size: int = CAPTION_SIZE) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # pragma: no cover - Pillow before 10.1, or without FreeType
        return ImageFont.load_default()


def captioned(image: np.ndarray, lines: Sequence[str], *, background: Sequence[int] = PAGE,
              margin: int = 4) -> np.ndarray:
    """`image` (RGB bytes [H, W, 3]) under its caption `lines` (Pillow's default font), on `background`; at least
    as wide as the text."""
    from PIL import Image, ImageDraw

    font = _font()
    lines = [line.replace("×", "x") for line in lines]  # the default font has no multiplication sign
    boxes = [font.getbbox(line) if line else (0, 0, 0, 0) for line in lines]
    line_h = max(b[3] for b in boxes) if boxes else 0
    line_h = max(line_h, int(CAPTION_SIZE * 1.2))
    text_w = max((b[2] for b in boxes), default=0)
    text_h = len(lines) * (line_h + 2) + margin if lines else 0
    height, width = image.shape[0] + text_h, max(image.shape[1], text_w + 2 * margin)
    page = Image.new("RGB", (width, height), tuple(background))
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        draw.text((margin, margin // 2 + i * (line_h + 2)), line, fill=INK, font=font)
    if image.size:
        page.paste(Image.fromarray(np.ascontiguousarray(image)), (0, text_h))
    return np.asarray(page)


def stack(sections: Sequence[np.ndarray], *, gap: int = 8, background: Sequence[int] = PAGE) -> np.ndarray:
    """RGB sections one under the other, left-aligned, `gap` pixels apart (and around), on `background`."""
    width = max(s.shape[1] for s in sections) + 2 * gap
    height = sum(s.shape[0] for s in sections) + gap * (len(sections) + 1)
    out = np.empty((height, width, 3), np.uint8)
    out[...] = np.asarray(background, np.uint8)
    y = gap
    for s in sections:
        out[y:y + s.shape[0], gap:gap + s.shape[1]] = s
        y += s.shape[0] + gap
    return out


# -- writing ---------------------------------------------------------------------------------------------------------

OUTPUT_FORMATS = {".png": "PNG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG",
                  ".jpeg": "JPEG"}  # file name extension -> Pillow format
OUTPUT_EXTENSIONS = ", ".join(OUTPUT_FORMATS)
_SAVE_OPTIONS: dict[str, dict[str, Any]] = {"PNG": {"optimize": False}, "WEBP": {"lossless": True},
                                            "JPEG": {"quality": 95, "subsampling": 0}}
_MAX_SIDE = {"WEBP": 16383, "JPEG": 65535}  # what the formats can hold; PNG, BMP and TIFF hold any page here


def picture_format(path: str | os.PathLike) -> str:
    """The Pillow format ("PNG", "JPEG", ...) that the extension of `path` names. Raises GraphconvError for an
    extension not in OUTPUT_FORMATS (or none)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUT_FORMATS:
        what = f"'{ext}'" if ext else "a name without an extension"
        raise GraphconvError(f"cannot write '{path}': pictures are written as {OUTPUT_EXTENSIONS} (the format "
                             f"follows the extension; .png keeps every pixel exact), not {what}")
    return OUTPUT_FORMATS[ext]


def check_output(path: str | os.PathLike) -> str:
    """Before any work: the format of the picture to write at `path` (picture_format). Raises GraphconvError, naming
    `path`, when its extension is not a picture format, its folder does not exist, or it is a folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise GraphconvError(f"cannot write '{path}': it is a folder")
    fmt = picture_format(path)
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        why = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise GraphconvError(f"cannot write '{path}': the folder '{folder}' {why}")
    return fmt


def _new_file_mode() -> int:
    """The mode open() gives a new file (the temporary file is created private; the picture should not be)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_picture(image: np.ndarray, path: str | os.PathLike) -> str:
    """Write RGB bytes [H, W, 3] at `path` in the format its extension names (see the module docstring), through a
    temporary file renamed when complete. Returns the format. Raises GraphconvError naming `path` (never the
    temporary file) when the name or folder is wrong, the picture is too large for the format, or writing fails."""
    from PIL import Image

    from ..files import replacing

    path = os.fspath(path)
    fmt = check_output(path)
    h, w = image.shape[:2]
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(h, w) > limit:
        raise GraphconvError(f"cannot write '{path}': the picture is {w:,}×{h:,} pixels and {fmt} holds at most "
                             f"{limit:,} a side; write .png")
    mode = _new_file_mode()
    try:
        with replacing(path, before_rename=lambda tmp: os.chmod(tmp, mode)) as fh:
            Image.fromarray(np.ascontiguousarray(image)).save(fh, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
    except OSError as e:
        raise GraphconvError(f"cannot write '{path}': {e.strerror or _one_line(e)}") from None
    except ValueError as e:  # an encoder refusing the picture
        raise GraphconvError(f"cannot write '{path}' as {fmt}: {_one_line(e)}") from None
    return fmt


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
