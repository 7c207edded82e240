"""The onnxruntime backend: `graphconv.compile(net, backend="onnx", device="cpu")`.

The network is exported to ONNX in memory (graphconv.onnx.export) and run by an onnxruntime InferenceSession.

- device "cpu": CPUExecutionProvider; `threads` sets intra_op_num_threads (default: onnxruntime's choice).
- device "cuda": CUDAExecutionProvider (or TensorrtExecutionProvider first when `tensorrt=True`) when this
  onnxruntime build has it; otherwise a GraphconvError says how to install a GPU build. A CUDA request never falls
  back to the CPU silently (onnxruntime still places the few nodes CUDA cannot run on the CPU, as it always does).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping

import numpy as np

from ..errors import ExecutionError, GraphconvError
from ..network import Model, Network
from .export import DEFAULT_OPSET, EXTERNAL_DATA_THRESHOLD, emit_model, inline, write_external

DEVICES = ("cpu", "cuda")
GPU_INSTALL_HINT = ("install a GPU build of onnxruntime: pip install 'graphconv[gpu]' (or pip uninstall "
                    "onnxruntime && pip install onnxruntime-gpu), with a CUDA and cuDNN matching it")


def _ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - a dependency
        raise GraphconvError("the onnx backend needs onnxruntime (pip install onnxruntime)") from e
    return onnxruntime


def choose_providers(device: str, *, tensorrt: bool = False, available: list[str] | None = None) -> list[str]:
    """Execution providers for `device`, in priority order. Raises GraphconvError when the device is unknown or
    this onnxruntime cannot use it."""
    if available is None:
        available = list(_ort().get_available_providers())
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        gpu = [p for p in (["TensorrtExecutionProvider"] if tensorrt else []) + ["CUDAExecutionProvider"]
               if p in available]
        if not gpu:
            raise GraphconvError(f"device 'cuda' was requested, but this onnxruntime ({_ort().__version__}) has no "
                                 f"CUDA execution provider (available: {', '.join(available) or 'none'}); "
                                 + GPU_INSTALL_HINT)
        return gpu + ["CPUExecutionProvider"]
    raise GraphconvError(f"unknown device {device!r}; choose {' or '.join(DEVICES)}")


class OnnxModel(Model):
    """A network run by onnxruntime."""

    backend = "onnx"

    def __init__(self, net: Network, dtype: str = "float32", *, device: str = "cpu", threads: int | None = None,
                 opset: int = DEFAULT_OPSET, tensorrt: bool = False,
                 external_data_threshold: int = EXTERNAL_DATA_THRESHOLD):
        super().__init__(net, dtype)
        ort = _ort()
        self.device = device
        providers = choose_providers(device, tensorrt=tensorrt)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise GraphconvError(f"threads must be a whole number >= 0 (0: onnxruntime's default), got {threads!r}")
        parts = emit_model(net, None, opset, None, dtype)
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            if parts.nbytes > external_data_threshold:  # beyond protobuf's limit: go through files
                with tempfile.TemporaryDirectory(prefix="graphconv-onnx-") as tmp:
                    path = os.path.join(tmp, "model.onnx")
                    self.model = write_external(parts, path)
                    self.session = ort.InferenceSession(path, opts, providers=providers)
            else:
                self.model = inline(parts)
                self.session = ort.InferenceSession(self.model.SerializeToString(), opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            hint = ""
            if dtype == "float64" and "NOT_IMPLEMENTED" in str(e):
                hint = ("; onnxruntime has no float64 kernels for some ops (Conv among them): use dtype float32, "
                        "or the reference backend for float64")
            raise GraphconvError(f"onnxruntime cannot load the exported {self.graph.name}: {e}{hint}") from e
        if device == "cuda" and not any(p in self.session.get_providers()
                                        for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")):
            raise GraphconvError("device 'cuda' was requested, but onnxruntime could not start its CUDA provider "
                                 "(is a GPU with a matching CUDA/cuDNN present?); " + GPU_INSTALL_HINT)
        self.onnx_input_names = [i.name for i in self.session.get_inputs()]
        self.onnx_output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from ..reference.executor import check_inputs

        arrays, _ = check_inputs(self.graph, inputs)
        feed = {name: np.ascontiguousarray(arrays[name], dtype=self.dtype) for name in self.onnx_input_names}
        try:
            outs = self.session.run(self.onnx_output_names, feed)
        except Exception as e:  # noqa: BLE001
            raise ExecutionError(f"onnxruntime failed to run {self.graph.name}: {e}") from e
        return dict(zip(self.output_names, outs))

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.graph.name!r} backend=onnx device={self.device} dtype={self.dtype} "
                f"providers={self.session.get_providers()}>")
