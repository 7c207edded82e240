"""Training data: a bundled dataset by name, or files, checked and fitted to a network's input.

    data = load_data("digits", (1, 32, 32), num_classes=10)   # Data(train, test)
    train, val = data.train.split(0.1, seed=0)

Sources (`DATA` of `graphconv train`):
- `digits`: the 1,797 8×8 handwritten digits scikit-learn ships inside its package (no download), scaled to [0, 1]
  and resized (bilinear, as PyTorch's interpolate without corner alignment) to the input's H×W, repeated over its
  channels. No test set of its own: 20% of it (seeded, stratified) is held out as the test set.
- a folder with MNIST-format IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-...`, each
  optionally `.gz`): images scaled from bytes to [0, 1] and resized the same way; the t10k files are the test set.
- an `.npz` file with arrays `x` ([N, *sample shape], or [N, H, W] for one channel) and `y` (integer class indices
  [N]), optionally `x_test`/`y_test`; read without pickle. `x` stored as uint8 is scaled from bytes to [0, 1] as IDX
  images are; other number types are used as they are.

Everything read is untrusted: sizes are checked against the file before anything is allocated (for .npz files, the
checks graphconv/weights.py makes on weights files: member count, compression method, declared sizes and ratio,
.npy header dtype and shape against the member's byte count; at most MAX_ELEMENTS per array; for IDX files, the
header's sizes against the file, and a .gz file decompressed no further than its header declares), and every
problem (a shape that does not fit the input, labels out of range or not integers, NaN or infinite values, empty
sets, not enough memory) is a `DataError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import GraphconvError
from ..weights import (MAX_COMPRESSION_RATIO, MAX_HEADER_BYTES, ArchiveProblem, npy_header, npy_size_problem,
                       npz_members)

__all__ = ["DataError", "Dataset", "Data", "load_data", "resize_images", "MAX_ELEMENTS"]

MAX_ELEMENTS = 2**31  # per array, as for tensors in specs and ONNX models


class DataError(GraphconvError):
    """Training data that cannot be used (the message says which file and why)."""


@dataclass
class Dataset:
    """Samples `x` (float32, [N, *sample shape]) with integer class labels `y` (int64, [N])."""

    x: np.ndarray
    y: np.ndarray
    name: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def split(self, fraction: float, seed: int | np.random.SeedSequence = 0) -> tuple["Dataset", "Dataset"]:
        """(rest, held out): `fraction` of the samples of each class (at least one where a class has two or more),
        chosen by a generator seeded with `seed`."""
        if not 0.0 < fraction < 1.0:
            raise DataError(f"a split fraction must be between 0 and 1, got {fraction}")
        rng = np.random.default_rng(seed)
        held = []
        for c in np.unique(self.y):
            idx = np.flatnonzero(self.y == c)
            rng.shuffle(idx)
            k = int(round(fraction * len(idx)))
            if len(idx) >= 2:
                k = min(max(k, 1), len(idx) - 1)
            held.extend(idx[:k].tolist())
        mask = np.zeros(len(self), bool)
        mask[held] = True
        if mask.all() or not mask.any():
            raise DataError(f"{self.name}: {len(self)} samples are too few to split off {fraction:.0%}")
        return (Dataset(self.x[~mask], self.y[~mask], self.name),
                Dataset(self.x[mask], self.y[mask], f"{self.name} (held out)"))


@dataclass
class Data:
    train: Dataset
    test: Dataset | None = None


def resize_images(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of [N, C, H0, W0] to [N, C, h, w] (half-pixel centres, edges clamped: PyTorch's
    interpolate(mode="bilinear", align_corners=False))."""
    def weights(n_in: int, n_out: int) -> np.ndarray:
        m = np.zeros((n_out, n_in))
        for o in range(n_out):
            src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(np.floor(src)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            f = src - i0
            m[o, i0] += 1.0 - f
            m[o, i1] += f
        return m

    if x.shape[2:] == (h, w):
        return x
    wh, ww = weights(x.shape[2], h), weights(x.shape[3], w)
    return np.einsum("hi,ncij,wj->nchw", wh, x.astype(np.float64), ww).astype(np.float32)


def _fit_images(images: np.ndarray, sample: Sequence[int], where: str) -> np.ndarray:
    """[N, H0, W0] single-channel images in [0, 1] as [N, *sample] ([C, H, W]: resized, repeated over C)."""
    if len(sample) != 3:
        raise DataError(f"{where}: images need an input of shape [N, C, H, W]; the network takes "
                        f"[N, {', '.join(str(d) for d in sample)}]")
    c, h, w = (int(d) for d in sample)
    x = resize_images(images[:, None].astype(np.float32), h, w)
    return np.ascontiguousarray(np.repeat(x, c, axis=1) if c > 1 else x)


def _check(ds: Dataset, sample: Sequence[int], num_classes: int | None, where: str) -> Dataset:
    x, y = ds.x, ds.y
    if len(x) == 0:
        raise DataError(f"{where}: no samples")
    if tuple(x.shape[1:]) != tuple(int(d) for d in sample):
        raise DataError(f"{where}: samples have shape {list(x.shape[1:])}; the network's input takes "
                        f"{list(int(d) for d in sample)} per sample")
    if y.shape != (len(x),):
        raise DataError(f"{where}: {len(x)} samples but labels of shape {list(y.shape)} (expected [{len(x)}])")
    bad = ~np.isfinite(x)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise DataError(f"{where}: {int(bad.sum())} values are NaN or infinite (the first in sample {first[0]})")
    if y.size and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        k = int(np.flatnonzero((y < 0) | ((y >= num_classes) if num_classes is not None else False))[0])
        raise DataError(f"{where}: label {int(y[k])} of sample {k} is out of range"
                        + (f" (the network has {num_classes} classes: 0..{num_classes - 1})" if num_classes else ""))
    return ds


# -- sources -------------------------------------------------------------------------------------------------------

def _digits(sample: Sequence[int]) -> Data:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("the digits dataset needs scikit-learn (pip install scikit-learn)") from None
    d = load_digits()
    images = (np.asarray(d.images, np.float64) / 16.0).astype(np.float32)
    x = _fit_images(images, sample, "digits")
    full = Dataset(x, np.asarray(d.target, np.int64), "digits")
    train, test = full.split(0.2, seed=0)
    return Data(Dataset(train.x, train.y, "digits"), Dataset(test.x, test.y, "digits (test)"))


IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


IDX_CHUNK = 1 << 24  # bytes decompressed at a time from an .idx.gz file


def read_idx(path: str | os.PathLike, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """An IDX file (MNIST's format; `.gz` read as gzip): magic 0 0 type ndim, ndim big-endian int32 sizes, data.
    The sizes are checked before the data is read: against the file's length, or for a `.gz` file against what its
    compressed length can expand to, and a `.gz` file is decompressed in chunks up to the size the header declares
    (so a small file that decompresses to more, or a header that lies, never allocates more than the data there
    is)."""
    p = Path(path)
    count, shown = 0, "?"
    try:
        gz = p.suffix == ".gz"
        opener = gzip.open if gz else open
        with opener(p, "rb") as fh:
            head = fh.read(4)
            if len(head) != 4 or head[:2] != b"\0\0" or head[2] not in IDX_TYPES or not 1 <= head[3] <= 8:
                raise DataError(f"{p}: not an IDX file (bad magic number {head.hex() or 'empty'})")
            dims_raw = fh.read(4 * head[3])
            if len(dims_raw) != 4 * head[3]:
                raise DataError(f"{p}: the IDX header is cut short")
            dims = [int(d) for d in np.frombuffer(dims_raw, ">u4")]
            dt = IDX_TYPES[head[2]]
            count = int(np.prod(dims, dtype=object))
            shown = " x ".join(map(str, dims))
            if count > max_elements:
                raise DataError(f"{p}: {count:,} elements ({shown}) exceed the limit of {max_elements:,}")
            need = count * dt.itemsize
            on_disk = os.path.getsize(p)
            if not gz and on_disk - 4 - 4 * head[3] != need:
                held = on_disk - 4 - 4 * head[3]
                raise DataError(f"{p}: the header promises {count:,} values ({shown}) but the file holds "
                                f"{'more' if held > need else held // dt.itemsize}")
            if gz and need > MAX_COMPRESSION_RATIO * on_disk + (1 << 16):
                raise DataError(f"{p}: the header promises {count:,} values ({shown}), {need:,} bytes, more than "
                                f"{on_disk:,} compressed bytes can hold")
            data = bytearray()
            while len(data) <= need:  # one byte beyond the declared size tells a longer file
                chunk = fh.read(min(IDX_CHUNK, need + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise DataError(f"cannot read {p}: {e.strerror or e}") from None
    except EOFError:
        raise DataError(f"{p}: the compressed file is cut short") from None
    except zlib.error as e:
        raise DataError(f"{p}: the compressed data is corrupt: {e}") from None
    except MemoryError:
        raise DataError(f"{p}: not enough memory for {count:,} values ({shown})") from None
    if len(data) != need:
        raise DataError(f"{p}: the header promises {count:,} values ({shown}) but the file "
                        f"holds {'more' if len(data) > need else len(data) // dt.itemsize}")
    return np.frombuffer(data, dt).reshape(dims)


def _idx_pair(folder: Path, prefix: str) -> tuple[Path, Path] | None:
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz", f"{prefix}-{kind.replace('-idx', '.idx')}"):
            if (folder / name).is_file():
                found.append(folder / name)
                break
    return (found[0], found[1]) if len(found) == 2 else None


def _mnist(folder: Path, sample: Sequence[int]) -> Data:
    sets = {}
    for prefix in ("train", "t10k"):
        pair = _idx_pair(folder, prefix)
        if pair is None:
            continue
        images, labels = read_idx(pair[0]), read_idx(pair[1])
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{pair[0]}: expected images [N, H, W] and labels [N], got {list(images.shape)} and "
                            f"{list(labels.shape)}")
        if len(images) != len(labels):
            raise DataError(f"{folder}: {len(images)} images but {len(labels)} labels in the {prefix} files")
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        x = _fit_images((images.astype(np.float32) / scale), sample, str(pair[0]))
        sets[prefix] = Dataset(x, labels.astype(np.int64), f"{folder.name} ({prefix})")
    if "train" not in sets:
        raise DataError(f"{folder}: no MNIST-format training files (train-images-idx3-ubyte and "
                        f"train-labels-idx1-ubyte, optionally .gz)")
    return Data(sets["train"], sets.get("t10k"))


NPZ_KEYS = ("x", "y", "x_test", "y_test")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays x, y, x_test, y_test (those present) of an .npz file, read without pickle after the checks
    graphconv/weights.py makes on weights files: the archive's members (count, compression method, declared sizes
    and compression ratio against the file), then each array's .npy header (plain numbers only, at most
    MAX_ELEMENTS elements, a byte count matching the member exactly). Nothing is allocated before all of them
    pass. Raises DataError."""
    where = f"cannot read {path} as .npz arrays without pickle"
    try:
        with open(path, "rb") as fh:
            try:
                zf = zipfile.ZipFile(fh)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as e:
                raise DataError(f"{where}: not a zip archive, or truncated ({e})") from None
            with zf:
                try:
                    members, problems = npz_members(zf, os.fstat(fh.fileno()).st_size)
                except ArchiveProblem as e:
                    raise DataError(f"{where}: the archive {e}") from None
                if problems:
                    raise DataError(f"{where}: " + "; ".join(problems))
                missing = {"x", "y"} - set(members)
                if missing:
                    raise DataError(f"{path}: no array named {' or '.join(sorted(missing))} (it holds "
                                    f"{', '.join(sorted(members)) or 'nothing'})")
                keys = [k for k in NPZ_KEYS if k in members]
                for k in keys:
                    info = members[k]
                    if info.file_size > MAX_HEADER_BYTES + 16 + MAX_ELEMENTS * 8:
                        raise DataError(f"{where}: '{k}' declares {info.file_size:,} bytes uncompressed, more than "
                                        f"an array of {MAX_ELEMENTS:,} elements can take (a zip bomb?)")
                    try:
                        shape, dtype, header_len = npy_header(zf, info)
                    except ArchiveProblem as e:
                        raise DataError(f"{where}: '{k}' {e}") from None
                    count = math.prod(shape)
                    if count > MAX_ELEMENTS:
                        raise DataError(f"{where}: '{k}' has shape {list(shape)}, {count:,} elements; the limit is "
                                        f"{MAX_ELEMENTS:,}")
                    bad = npy_size_problem(info, header_len, count, dtype)
                    if bad:
                        raise DataError(f"{where}: '{k}' {bad}")
            # every array checked: now read them from the same open file
            fh.seek(0)
            with np.load(fh, allow_pickle=False, max_header_size=MAX_HEADER_BYTES) as z:
                return {k: z[k] for k in keys}
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: not enough memory to load its arrays") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{where}: {e}") from None


def _npz(path: Path, sample: Sequence[int]) -> Data:
    arrays = _read_npz(path)

    def dataset(xk: str, yk: str, name: str) -> Dataset:
        x, y = arrays[xk], arrays[yk]
        if x.ndim == 0:
            raise DataError(f"{path}: '{xk}' is a single number, not samples [N, ...]")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise DataError(f"{path}: '{xk}' has dtype {x.dtype}, not numbers")
        if not np.issubdtype(y.dtype, np.integer):
            if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise DataError(f"{path}: '{yk}' must hold integer class indices, got dtype {y.dtype}")
        if x.ndim == len(sample) and len(sample) == 3 and int(sample[0]) == 1:
            x = x[:, None]  # [N, H, W] for a one-channel input
        x = np.ascontiguousarray(x, np.float32)
        if arrays[xk].dtype == np.uint8:
            x /= 255.0  # bytes, as in IDX files: scaled to [0, 1]
        return Dataset(x, y.astype(np.int64), name)

    train = dataset("x", "y", path.name)
    test = dataset("x_test", "y_test", f"{path.name} (test)") if {"x_test", "y_test"} <= set(arrays) else None
    return Data(train, test)


def load_data(data: str | os.PathLike, sample: Sequence[int], *, num_classes: int | None = None) -> Data:
    """The training (and test, when the source has one) data for a network whose input takes `sample` per sample
    ([C, H, W] or [features]); labels must be below `num_classes` when it is given. Raises DataError."""
    text = os.fspath(data)
    try:
        if text == "digits":
            out = _digits(sample)
        else:
            p = Path(text)
            if p.is_dir():
                out = _mnist(p, sample)
            elif p.suffix == ".npz" and p.is_file():
                out = _npz(p, sample)
            elif not p.exists():
                raise DataError(f"no dataset {text!r}: give 'digits', a folder of MNIST-format IDX files or an "
                                f".npz file with x and y")
            else:
                raise DataError(f"{p}: not a dataset (an .npz file with x and y, or a folder of IDX files)")
        _check(out.train, sample, num_classes, out.train.name)
        if out.test is not None:
            _check(out.test, sample, num_classes, out.test.name)
    except MemoryError:
        raise DataError(f"{text}: not enough memory to load and fit the data to the input "
                        f"{list(int(d) for d in sample)}") from None
    return out
