"""Weights: deterministic initialization, and safe loading and saving of `.npz` files.

    init_weights(graph, seed=0)  -> {parameter name: float32 array}, every parameter and buffer
    load_weights(path, graph)    -> the same, read from an .npz file and checked against the graph
    save_weights(path, weights)  -> writes an .npz file (the layout np.savez writes)

Initialization is deterministic per parameter: each one draws from a generator seeded with (seed, crc32(name)), so
adding or removing a layer leaves every other parameter's initial values unchanged.

Weights files are untrusted. `load_weights` never unpickles (allow_pickle=False) and checks everything it can
before allocating: the file size, the number of archive members, each member's compression method, declared
uncompressed size and compression ratio (zip bombs), and each .npy header — dtype (plain integer or floating point,
never object or structured), shape against the parameter it is meant for, and a byte count that matches the
member exactly (truncated or padded members are refused). Every problem (missing, unknown, mis-shaped,
mis-typed entries) is collected and reported together in one WeightsError. The archive and header checks
(npz_members, npy_header, npy_size_problem) also guard the training data reader (graphconv/train/data.py).
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from typing import IO, Any, Mapping

import numpy as np
from numpy.lib import format as npformat

from .errors import GraphconvError, OpError, WeightsError, did_you_mean
from .files import replacing
from .init import make_init
from .ir.graph import Graph

__all__ = ["init_weights", "load_weights", "save_weights", "MAX_FILE_BYTES", "MAX_MEMBERS", "MAX_TOTAL_ELEMENTS",
           "MAX_COMPRESSION_RATIO", "MAX_HEADER_BYTES", "ArchiveProblem", "npz_members", "npy_header",
           "npy_size_problem"]

MAX_FILE_BYTES = 8 << 30  # a weights file on disk (VGG-19 in float64 is 1.1 GiB)
MAX_MEMBERS = 100_000  # arrays in one archive
MAX_TOTAL_ELEMENTS = 1 << 31  # elements read from one file, over all arrays
MAX_HEADER_BYTES = 10_000  # an .npy header (numpy's own limit for untrusted headers)
# DEFLATE cannot compress better than about 1032:1, so a member claiming more is lying about its sizes (or uses
# another method, refused anyway). Checked for members above RATIO_MIN_BYTES: tiny members legitimately compress
# their headers well.
MAX_COMPRESSION_RATIO = 1100
RATIO_MIN_BYTES = 1 << 16
_ALLOWED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_NPY_MAGIC = b"\x93NUMPY"


# -- initialization -------------------------------------------------------------------------------------------------

def param_rng(seed: int, name: str) -> np.random.Generator:
    """The generator that initializes parameter `name`: derived from the seed and the name only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode("utf-8"))]))


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GraphconvError(f"the seed must be a whole number >= 0, got {seed!r}")
    return int(seed)


def _shape(graph: Graph, name: str) -> tuple[int, ...]:
    return tuple(int(d) for d in graph.params[name].value.type.shape)


def init_weights(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Every parameter and buffer of `graph` as a float32 array: fixed ones from the values written in the spec,
    the others from their initializer (zeros when none is named)."""
    seed = _check_seed(seed)
    out: dict[str, np.ndarray] = {}
    for name, p in graph.params.items():
        shape = _shape(graph, name)
        if p.data is not None:
            arr = np.asarray(p.data, dtype=np.float64).reshape(shape)
        elif p.init is None:
            arr = np.zeros(shape)
        else:
            try:
                arr = make_init(p.init)(shape, param_rng(seed, name))
            except OpError as e:
                raise WeightsError(f"cannot initialize '{name}' {list(shape)} with {p.init}: {e.message}") from None
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


# -- saving ---------------------------------------------------------------------------------------------------------

def save_weights(path: str | os.PathLike, weights: Mapping[str, Any]) -> None:
    """Write `weights` as an uncompressed .npz archive (member `<name>.npy` per array, as np.savez does) to exactly
    `path`. The file is written to a temporary name first and moved into place, so a failure leaves no half-written
    file."""
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        if not isinstance(name, str) or not name:
            raise WeightsError(f"weight names must be non-empty strings, got {name!r}")
        arr = np.asarray(value)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise WeightsError(f"cannot save '{name}': dtype {arr.dtype} is not a number type")
        arrays[name] = arr
    with replacing(os.path.abspath(path)) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                npformat.write_array(member, arr, allow_pickle=False)


# -- loading --------------------------------------------------------------------------------------------------------

def _read_header(fp: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length in bytes) of the .npy stream `fp`; raises ValueError."""
    version = npformat.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = npformat.read_array_header_1_0(fp, max_header_size=MAX_HEADER_BYTES)
    elif version == (2, 0):
        shape, fortran, dtype = npformat.read_array_header_2_0(fp, max_header_size=MAX_HEADER_BYTES)
    else:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    return tuple(shape), bool(fortran), dtype, fp.tell()


def _dtype_problem(dtype: np.dtype) -> str | None:
    if dtype.hasobject:
        return "holds Python objects (dtype object), which are never loaded"
    if dtype.fields is not None or dtype.subdtype is not None:
        return f"has a structured dtype {dtype}; expected plain numbers"
    if dtype.kind not in "fiu" or dtype.itemsize > 8:
        return f"has dtype {dtype}; expected a floating point or integer type"
    return None


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _open_archive(fh: IO[bytes], path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as e:
        fh.seek(0)
        if fh.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise WeightsError(f"'{path}' is a single .npy array; weights are an .npz archive of named arrays "
                               f"(save them with graphconv's save_weights or np.savez)") from None
        raise WeightsError(f"'{path}' is not a valid .npz file (not a zip archive, or truncated): {e}") from None


def load_weights(path: str | os.PathLike, graph: Graph) -> dict[str, np.ndarray]:
    """Read and check an .npz weights file for `graph`. Returns every parameter and buffer: float64 arrays stay
    float64, everything else becomes float32; fixed parameters missing from the file come from the spec.
    Raises WeightsError listing every problem."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
        if not os.path.isfile(path):
            raise WeightsError(f"'{path}' is not a file")
        if st.st_size > MAX_FILE_BYTES:
            raise WeightsError(f"'{path}' is {st.st_size:,} bytes; weights files are limited to "
                               f"{MAX_FILE_BYTES:,} bytes")
        with open(path, "rb") as fh:
            return _load_open(fh, path, graph)
    except OSError as e:
        raise WeightsError(f"cannot read weights '{path}': {e.strerror or e}") from None


def _load_open(fh: IO[bytes], path: str, graph: Graph) -> dict[str, np.ndarray]:
    with _open_archive(fh, path) as zf:
        try:
            members, problems = npz_members(zf)
        except ArchiveProblem as e:
            raise WeightsError(f"'{path}' {e}") from None

        expected = {name: _shape(graph, name) for name in graph.params}
        missing = [n for n, p in graph.params.items() if n not in members and p.data is None]
        extra = [k for k in members if k not in expected]
        for k in extra:
            hint = did_you_mean(k, missing) or did_you_mean(k, expected)
            problems.append(f"unknown name '{k}': {graph.name} has no such parameter"
                            + (f" ({hint})" if hint else ""))
        for n in missing:
            problems.append(f"missing '{n}' {_fmt_shape(expected[n])}")

        # headers first: nothing is allocated until every array has been found to fit
        to_read: list[tuple[str, zipfile.ZipInfo]] = []
        total = 0
        for key, info in members.items():
            if key not in expected:
                continue
            shape = expected[key]
            count = math.prod(shape)
            if info.file_size > MAX_HEADER_BYTES + 16 + count * 8:
                problems.append(f"'{key}' declares {info.file_size:,} bytes uncompressed, more than an array "
                                f"{_fmt_shape(shape)} can take (a zip bomb?)")
                continue
            try:
                got_shape, dtype, header_len = npy_header(zf, info)
            except ArchiveProblem as e:
                problems.append(f"'{key}' {e}")
                continue
            if got_shape != shape:
                problems.append(f"'{key}' has shape {_fmt_shape(got_shape)}; expected {_fmt_shape(shape)}")
                continue
            bad = npy_size_problem(info, header_len, count, dtype)
            if bad:
                problems.append(f"'{key}' {bad}")
                continue
            total += count
            to_read.append((key, info))
        if total > MAX_TOTAL_ELEMENTS:
            problems.append(f"the file holds {total:,} elements; the limit is {MAX_TOTAL_ELEMENTS:,}")
        if problems:
            raise WeightsError(_report(path, graph, problems))

    # every member checked: now read, without pickle, from the same open file
    fh.seek(0)
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(fh, allow_pickle=False, max_header_size=MAX_HEADER_BYTES) as npz:
            for key, _info in to_read:
                try:
                    arr = npz[key]
                except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:
                    problems.append(f"'{key}' cannot be read (corrupt or truncated): {e}")
                    continue
                problem = _value_problem(key, arr, graph)
                if problem:
                    problems.append(problem)
                    continue
                out[key] = arr if arr.dtype == np.float64 else arr.astype(np.float32)
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise WeightsError(f"'{path}' cannot be read (corrupt or truncated): {e}") from None
    if problems:
        raise WeightsError(_report(path, graph, problems))
    result: dict[str, np.ndarray] = {}
    for name, p in graph.params.items():  # graph order, fixed parameters filled in from the spec
        result[name] = out[name] if name in out else np.asarray(p.data, dtype=np.float32).reshape(expected[name])
    return result


# -- checks of untrusted .npz archives, shared with the training data reader (graphconv/train/data.py) ------------

class ArchiveProblem(ValueError):
    """A problem of an .npz archive or of one of its members; the text says what, without naming the file (or the
    member, for npy_header)."""


def npz_members(zf: zipfile.ZipFile, file_bytes: int | None = None) -> tuple[dict[str, zipfile.ZipInfo], list[str]]:
    """The .npy members of an open .npz archive by array name, and the problems of the others (not .npy, given
    twice, encrypted, compressed with another method than stored or deflate, declaring a compression ratio no
    DEFLATE stream reaches; with `file_bytes`, the archive's size on disk, also declaring more compressed bytes than
    the file holds). Nothing is decompressed. Raises ArchiveProblem when the archive holds more than MAX_MEMBERS
    members."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveProblem(f"holds {len(infos):,} members; the limit is {MAX_MEMBERS:,}")
    members: dict[str, zipfile.ZipInfo] = {}
    problems: list[str] = []
    for info in infos:
        problem = _member_problem(info, members)
        if problem is None and file_bytes is not None and info.compress_size > file_bytes:
            problem = (f"'{info.filename[:-4]}' declares {info.compress_size:,} compressed bytes; the whole file "
                       f"has {file_bytes:,} (truncated or forged)")
        if problem:
            problems.append(problem)
        elif info.filename.endswith(".npy"):
            members[info.filename[:-4]] = info
    return members, problems


def npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length in bytes) of the .npy member `info`, reading its header only (at most
    MAX_HEADER_BYTES); the dtype is a plain integer or floating point type. Raises ArchiveProblem."""
    try:
        with zf.open(info) as fp:
            shape, _fortran, dtype, header_len = _read_header(fp)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error, SyntaxError) as e:
        raise ArchiveProblem(f"is not a readable .npy array (corrupt or truncated): {e}") from None
    bad = _dtype_problem(dtype)
    if bad:
        raise ArchiveProblem(bad)
    return shape, dtype, header_len


def npy_size_problem(info: zipfile.ZipInfo, header_len: int, count: int, dtype: np.dtype) -> str | None:
    """Why the member `info`, whose .npy header (`header_len` bytes) promises `count` elements of `dtype`, does not
    hold exactly that many bytes (truncated, or trailing bytes), or None."""
    need = header_len + count * dtype.itemsize
    if info.file_size != need:
        what = "is truncated" if info.file_size < need else "has trailing bytes"
        return f"{what}: its header promises {need:,} bytes, the member holds {info.file_size:,}"
    return None


def _member_problem(info: zipfile.ZipInfo, seen: dict[str, zipfile.ZipInfo]) -> str | None:
    name = info.filename
    if info.is_dir():
        return None
    if not name.endswith(".npy"):
        return f"member '{name}' is not an .npy array"
    if name[:-4] in seen:
        return f"'{name[:-4]}' appears twice in the archive"
    if info.flag_bits & 0x1:
        return f"'{name[:-4]}' is encrypted"
    if info.compress_type not in _ALLOWED_COMPRESSION:
        return (f"'{name[:-4]}' uses an unsupported compression method ({info.compress_type}); np.savez and "
                f"np.savez_compressed write stored or deflate members")
    if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(1, info.compress_size):
        return (f"'{name[:-4]}' declares a compression ratio of {info.file_size / max(1, info.compress_size):,.0f}:1 "
                f"({info.compress_size:,} bytes expanding to {info.file_size:,}); refused as a zip bomb")
    return None


def _value_problem(key: str, arr: np.ndarray, graph: Graph) -> str | None:
    p = graph.params[key]
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        return f"'{key}' contains NaN or infinite values"
    if p.data is not None:
        fixed = np.asarray(p.data, dtype=np.float64).reshape(arr.shape)
        same = (np.array_equal(fixed.astype(arr.dtype), arr) if np.issubdtype(arr.dtype, np.floating)
                else np.array_equal(arr.astype(np.float64), fixed))
        if not same:
            return f"'{key}' is fixed in the spec, and the file holds different values (leave it out of the file)"
    return None


def _report(path: str, graph: Graph, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"bad weights file '{path}' for {graph.name}: {problems[0]}"
    return (f"bad weights file '{path}' for {graph.name} ({len(problems)} problems):\n"
            + "\n".join(f"  - {p}" for p in problems))
