"""The Python API: load a spec into a `Network`, compile it for a backend, call the result.

    net = graphconv.load("specs/resnet18.gc", num_classes=10, seed=0)     # or weights="resnet18.npz"
    model = graphconv.compile(net, backend="reference", dtype="float32")
    logits = model(x)                       # one input, one output
    outs = model(image=x, mask=m)           # several inputs by name (or a dict); several outputs -> a dict

`compile` takes a snapshot of the network's weights: load new weights, then compile again.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np

from .errors import GraphconvError, InputError, did_you_mean
from .ir.graph import DTYPES, Graph

__all__ = ["Network", "Model", "load", "import_onnx", "compile", "BACKENDS"]


class Network:
    """A graph and its weights (every parameter and buffer, by name)."""

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None = None, *, seed: int = 0):
        from .weights import init_weights

        self.graph = graph
        self.weights: dict[str, np.ndarray] = dict(weights) if weights is not None else init_weights(graph, seed)

    @property
    def name(self) -> str:
        """The network's name (from the spec's `network` line)."""
        return self.graph.name

    @property
    def input_names(self) -> list[str]:
        """The graph's input names, in the spec's order."""
        return [v.name for v in self.graph.inputs]

    @property
    def output_names(self) -> list[str]:
        """The graph's output names, in the spec's order."""
        return list(self.graph.outputs)

    def num_params(self, *, trainable_only: bool = False) -> int:
        """Parameters as torchvision counts them (buffers excluded)."""
        return self.graph.num_params(trainable_only=trainable_only)

    def summary(self) -> str:
        """The layer table (see graphconv.summary)."""
        from .summary import format_summary, summarize

        return format_summary(summarize(self.graph))

    def save_weights(self, path: str | os.PathLike) -> None:
        """Write every weight to an .npz file (no pickle), as `load(..., weights=path)` reads it."""
        from .weights import save_weights

        save_weights(path, self.weights)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Replace the weights with the ones in an .npz file, checked against the graph."""
        from .weights import load_weights

        self.weights = load_weights(path, self.graph)

    def __repr__(self) -> str:
        return f"Network({self.name!r}, {len(self.graph.nodes)} nodes, {self.num_params():,} params)"


def load(path: str | os.PathLike, *, weights: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
         seed: int = 0, **params: Any) -> Network:
    """Load the spec at `path` with network parameters `params` (e.g. num_classes=10). Weights come from an .npz
    file (or a dict, checked the same way) when `weights` is given, else from the initializers seeded with `seed`.
    An `.onnx` path is imported with its own weights (see `import_onnx`).
    Raises SpecError (every problem in the spec) or WeightsError."""
    if os.fspath(path).lower().endswith(".onnx"):
        if params:
            raise GraphconvError(f"network parameters ({', '.join(params)}) apply to specs, not to ONNX models")
        net = import_onnx(path)
        if weights is not None:
            net = Network(net.graph, _checked_weights(net.graph, weights))
        return net
    return load_network(path, params, weights=weights, seed=seed)


def import_onnx(path: str | os.PathLike) -> Network:
    """Import an ONNX model (e.g. exported by PyTorch) as a network with the model's weights. Raises
    GraphconvError naming every unsupported op, or any unsafe or malformed part of the file."""
    from .onnx.importer import import_onnx as _import

    graph, weights = _import(os.fspath(path))
    return Network(graph, weights)


def _checked_weights(graph: Graph, weights: str | os.PathLike | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from .weights import load_weights

    if isinstance(weights, Mapping):
        from .reference.executor import prepare_weights

        prepare_weights(graph, weights)  # raises WeightsError listing every problem
        return dict(weights)
    return load_weights(weights, graph)


def load_network(path: str | os.PathLike, params: Mapping[str, Any] | None = None, *,
                 weights: str | os.PathLike | Mapping[str, np.ndarray] | None = None, seed: int = 0) -> Network:
    """`load` with the network parameters as a dict (for parameters named like load's own keywords)."""
    from . import spec

    graph = spec.load_graph(os.fspath(path), dict(params) if params else None)
    if weights is None:
        return Network(graph, seed=seed)
    return Network(graph, _checked_weights(graph, weights))


class Model:
    """A compiled network. Call it with the input array (one input), input arrays by keyword, or a dict; it
    returns the output array (one output) or a dict of outputs by name."""

    backend = ""

    def __init__(self, net: Network, dtype: str):
        if dtype not in DTYPES:
            raise GraphconvError(f"unknown dtype {dtype!r}; choose {' or '.join(DTYPES)}")
        self.graph = net.graph
        self.dtype = dtype
        self.input_names = net.input_names
        self.output_names = net.output_names

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Inputs by name -> outputs by name (always a dict)."""
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Run the model: `model(x)` for one input; `model(image=x, mask=m)` or a dict for several.
        One output comes back as an array, several as a dict by name."""
        outputs = self.run(self._gather(args, kwargs))
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs

    def _gather(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        names = self.input_names
        usage = ("call it as model(x)" if len(names) == 1
                 else f"call it as model({', '.join(f'{n}=...' for n in names)}) or with a dict")
        if len(args) > 1:
            raise InputError(f"{self.graph.name} got {len(args)} positional arguments; {usage}")
        if args:
            if kwargs:
                raise InputError(f"{self.graph.name}: give the inputs either positionally or by name, not both; "
                                 f"{usage}")
            (arg,) = args
            if isinstance(arg, Mapping):
                return dict(arg)
            if len(names) != 1:
                raise InputError(f"{self.graph.name} has {len(names)} inputs ({', '.join(names)}); {usage}")
            return {names[0]: arg}
        return dict(kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.graph.name!r} backend={self.backend} dtype={self.dtype}>"


class ReferenceModel(Model):
    """The numpy reference executor."""

    backend = "reference"

    def __init__(self, net: Network, dtype: str = "float32", *, device: str = "cpu"):
        from .reference.executor import prepare_weights

        if device != "cpu":
            raise GraphconvError(f"the reference backend runs on the CPU only, not on device {device!r}; for a GPU "
                                 "use backend='onnx', device='cuda'")
        super().__init__(net, dtype)
        self.weights = prepare_weights(net.graph, net.weights, dtype)  # cast once; a snapshot

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from .reference.executor import run_graph

        return run_graph(self.graph, inputs, self.weights, dtype=self.dtype)


def _onnx_model(net: Network, dtype: str = "float32", **options: Any) -> Model:
    """onnxruntime (graphconv.onnx.runtime.OnnxModel; options: device="cpu"|"cuda", threads, opset, tensorrt)."""
    from .onnx.runtime import OnnxModel

    return OnnxModel(net, dtype, **options)


def _llvm_model(net: Network, dtype: str = "float32", **options: Any) -> Model:
    """Native code through LLVM (graphconv.llvm.runtime.LLVMModel; options: threads, opt_level, target_cpu,
    target_features, cache, llvm_opt)."""
    from .llvm.runtime import LLVMModel

    return LLVMModel(net, dtype, **options)


# backend name -> factory (net, dtype=..., **options) -> Model. Later backends register here.
BACKENDS: dict[str, Callable[..., Model]] = {
    "reference": ReferenceModel,
    "onnx": _onnx_model,
    "llvm": _llvm_model,
}


def compile(net: Network, backend: str = "reference", *, dtype: str = "float32", device: str | None = None,
            **options: Any) -> Model:  # noqa: A001
    """Compile `net` for `backend` on `device` ("cpu", the default, or "cuda" with backend="onnx"); `options` go to
    the backend (onnx: threads=, opset=, tensorrt=). Raises GraphconvError for an unknown backend, dtype, device or
    option."""
    if not isinstance(net, Network):
        raise GraphconvError(f"compile() takes a Network (from graphconv.load), got {type(net).__name__}")
    factory = BACKENDS.get(backend)
    if factory is None:
        hint = did_you_mean(str(backend), BACKENDS)
        raise GraphconvError(f"unknown backend {backend!r}" + (f" ({hint})" if hint else "")
                             + f"; available backends: {', '.join(sorted(BACKENDS))}")
    if device is not None:
        options["device"] = device
    import inspect

    try:
        sig = inspect.signature(factory.__init__ if isinstance(factory, type) else factory)
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        unknown = [] if accepts_any else [k for k in options if k not in sig.parameters]
    except (TypeError, ValueError):  # pragma: no cover - no signature
        unknown = []
    if backend in ("onnx", "llvm"):
        if backend == "onnx":
            from .onnx.runtime import OnnxModel as cls
        else:
            from .llvm.runtime import LLVMModel as cls

        sig = inspect.signature(cls.__init__)
        unknown = [k for k in options if k not in sig.parameters]
    if unknown:
        raise GraphconvError(f"backend {backend!r} has no option {', '.join(map(repr, unknown))}")
    return factory(net, dtype=dtype, **options)
