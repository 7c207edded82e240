"""graphconv: a declarative graph compiler and runtime for convolutional neural networks.

    net = graphconv.load("specs/resnet18.gc", num_classes=10)   # a Network: graph + weights
    model = graphconv.compile(net, backend="reference")
    y = model(x)

`load`, `compile`, `Network` and `Model` are imported on first use, so `import graphconv` stays light.
"""

from .errors import (ExecutionError, GraphconvError, InputError, SpecError,  # noqa: F401
                     WeightsError)

__version__ = "0.1.0"

__all__ = [
    "__version__", "load", "import_onnx", "compile", "Network", "Model",
    "GraphconvError", "SpecError", "WeightsError", "InputError", "ExecutionError",
]

_LAZY = {"load": "network", "import_onnx": "network", "compile": "network", "Network": "network",
         "Model": "network"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graphconv' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
