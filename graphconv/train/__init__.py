"""Training (issue 6): data loading (`data.py`), learning-rate schedules (`schedule.py`), autodiff (`autodiff.py`),
optimizers (`optim.py`), the training step (`step.py`) and the training loop (`loop.py`).

    history = graphconv.train.fit("specs/lenet5.gc", "digits", epochs=20, backend="onnx", out="runs/lenet")

`fit`, `History` and `TrainStep` are imported on first use, so importing `graphconv.train.data` stays light.
See docs/training.md.
"""

__all__ = ["fit", "History", "TrainStep", "load_data", "DEFAULT_BACKEND"]

_LAZY = {"fit": "loop", "History": "loop", "DEFAULT_BACKEND": "loop", "TrainStep": "step", "load_data": "data"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graphconv.train' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
