"""Loading ONNX models from untrusted files.

    load_model(path) -> onnx.ModelProto

The file size is checked before reading; parse errors and truncated files become `OnnxError`. Tensors stored as
external data must name a regular file inside the model's folder (after resolving symbolic links; no '..', no
absolute paths, no hard links), and their offset and length must fit that file: all of it is checked before any
external byte is read. Declared tensor sizes are checked against limits before anything is allocated.
"""

from __future__ import annotations

import math
import os
import stat
from typing import Iterator

import numpy as np
import onnx

from ..errors import GraphconvError

MAX_MODEL_BYTES = 2 << 30          # the protobuf limit
MAX_TENSOR_ELEMENTS = 1 << 31      # one initializer or constant (as a parameter of a spec)
MAX_TOTAL_BYTES = 8 << 30          # all tensors of a model together (a third of the machine's memory)
MAX_DIMS = 8


class OnnxError(GraphconvError):
    """An ONNX file is unreadable, unsafe, or uses something graphconv cannot import."""



def _all_tensors(graph) -> Iterator:
    """Every TensorProto of a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def _itemsize(onnx, data_type: int) -> int:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except Exception:  # noqa: BLE001 - unknown or unsupported element type
        return 8


def _check_dims(t, where: str) -> int:
    dims = list(t.dims)
    if len(dims) > MAX_DIMS:
        raise OnnxError(f"{where}: tensor '{t.name}' has {len(dims)} dimensions (limit {MAX_DIMS})")
    if any(d < 0 for d in dims):
        raise OnnxError(f"{where}: tensor '{t.name}' has a negative dimension {dims}")
    n = math.prod(dims)
    if n > MAX_TENSOR_ELEMENTS:
        raise OnnxError(f"{where}: tensor '{t.name}' declares shape {dims} ({n} elements), beyond the limit of "
                        f"{MAX_TENSOR_ELEMENTS} elements")
    return n


def check_tensor_sizes(model, where: str = "model") -> None:
    """Declared sizes of every tensor against the limits (before any of them is allocated)."""
    total = 0
    for t in _all_tensors(model.graph):
        total += _check_dims(t, where) * _itemsize(onnx, t.data_type)
        if total > MAX_TOTAL_BYTES:
            raise OnnxError(f"{where}: the tensors of the model take more than {MAX_TOTAL_BYTES} bytes")


def _external_entries(t) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _resolve_location(folder: str, location: str, tensor: str) -> str:
    if not location or "\0" in location:
        raise OnnxError(f"external data of tensor '{tensor}': empty or invalid location")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise OnnxError(f"external data of tensor '{tensor}': absolute location '{location}' is refused; "
                        "external data must be inside the model's folder")
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise OnnxError(f"external data of tensor '{tensor}': location '{location}' contains '..'; external data "
                        "must be inside the model's folder")
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, target]) != root:
        raise OnnxError(f"external data of tensor '{tensor}': location '{location}' resolves outside the model's "
                        f"folder (to {target})")
    return target


def load_external(model, folder: str) -> None:
    """Check every external tensor, then read the data into the tensors (in place)."""
    plan = []
    for t in _all_tensors(model.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = _external_entries(t)
        target = _resolve_location(folder, info.get("location", ""), t.name)
        try:
            st = os.lstat(target)
        except OSError as e:
            raise OnnxError(f"external data of tensor '{t.name}': cannot open '{info.get('location')}': "
                            f"{e.strerror or e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise OnnxError(f"external data of tensor '{t.name}': '{info.get('location')}' is not a regular file")
        if st.st_nlink > 1:
            raise OnnxError(f"external data of tensor '{t.name}': '{info.get('location')}' has {st.st_nlink} hard "
                            "links; refused (it could be a file from outside the model's folder)")
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise OnnxError(f"external data of tensor '{t.name}': offset/length are not integers") from None
        n = _check_dims(t, "external data")
        want = n * _itemsize(onnx, t.data_type)
        if length is None:
            length = st.st_size - offset
        if offset < 0 or length < 0 or offset + length > st.st_size:
            raise OnnxError(f"external data of tensor '{t.name}': offset {offset} + length {length} is beyond the "
                            f"end of '{info.get('location')}' ({st.st_size} bytes)")
        if length != want:
            raise OnnxError(f"external data of tensor '{t.name}': length {length} does not match its shape "
                            f"{list(t.dims)} ({want} bytes)")
        plan.append((t, target, offset, length))
    for t, target, offset, length in plan:
        try:
            fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < offset + length:
                    raise OnnxError(f"external data of tensor '{t.name}': the file shrank while reading")
                fh.seek(offset)
                data = fh.read(length)
        except OSError as e:
            raise OnnxError(f"external data of tensor '{t.name}': cannot read: {e.strerror or e}") from None
        if len(data) != length:
            raise OnnxError(f"external data of tensor '{t.name}': the file is truncated")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def has_external(model) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(model.graph))


def load_model(path: str | os.PathLike):
    """Read an ONNX model safely (see the module docstring). Raises OnnxError."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise OnnxError(f"cannot read '{path}': {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise OnnxError(f"'{path}' is not a file")
    if st.st_size > MAX_MODEL_BYTES:
        raise OnnxError(f"'{path}' is {st.st_size} bytes; ONNX models are limited to {MAX_MODEL_BYTES} bytes")
    if st.st_size == 0:
        raise OnnxError(f"'{path}' is empty; not an ONNX model")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_MODEL_BYTES + 1)
    except OSError as e:
        raise OnnxError(f"cannot read '{path}': {e.strerror or e}") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # noqa: BLE001 - DecodeError and friends from protobuf
        raise OnnxError(f"'{path}' is not a valid ONNX model (truncated or corrupt protobuf: {e})") from None
    if not model.HasField("graph"):
        raise OnnxError(f"'{path}' is not an ONNX model (it has no graph)")
    check_tensor_sizes(model, path)
    load_external(model, os.path.dirname(os.path.abspath(path)))
    return model
