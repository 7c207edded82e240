"""The training loop: epochs of shuffled mini-batches through a `TrainStep`, evaluation after each epoch, and a run
directory that can be resumed exactly.

    history = fit("specs/lenet5.gc", "digits", epochs=20, backend="onnx", out="runs/lenet")
    history[-1]["test_acc"], history.net          # the last epoch's metrics, the trained Network
    fit(None, None, resume="runs/lenet", epochs=30)  # continue the run (same settings unless given)

One epoch: the training samples in an order drawn from a generator seeded with (ORDER, seed, epoch), in
mini-batches of `batch_size` (the last, smaller batch is kept; a last batch of one sample joins the one before, as
batchnorm has no variance over one sample), optionally augmented (random crop with zero padding, horizontal flip;
seeded with (AUG, seed, epoch, batch)), one optimizer step each at the rate the schedule gives for the step.
Training loss and accuracy come from the steps' outputs (the network in training mode, the loss as optimized: weighted auxiliary
losses and label smoothing included). Then the inference network (batchnorm with its running statistics, no dropout)
with the current weights is compiled for the same backend and measures the validation loss and accuracy (plain
cross-entropy, or mean squared error, of the main output) and the test accuracy.

Everything random derives from `seed`: the initial weights, the validation split (stratified), the batch order,
augmentation and dropout masks (TrainStep draws them from the seed and the step number). Each of these streams
starts its seed with its own tag (the STREAM_* constants), so no two of them coincide. So a run resumed from its
checkpoint takes exactly the steps the uninterrupted run takes, and on the reference backend ends with bit-identical
weights.

The run directory (`out`):
    metrics.jsonl     one JSON object per epoch (METRIC_KEYS)
    plot.png          loss and accuracy curves (needs matplotlib: the `plot` extra)
    checkpoint-STEPS.npz  the TrainStep state after the last finished epoch (STEPS: the optimizer steps taken):
                      weights, buffers, optimizer state
    checkpoint.json   epoch, step count, settings, spec, data, seed, and the name and sha256 of the state file it
                      belongs to
    weights.npz       at the end: the network's parameters and buffers (`graphconv run SPEC --weights`)
Every file is written to a temporary name and moved into place, so a crash never leaves a half-written file. A
checkpoint is saved as a new state file (written and synced to disk), then checkpoint.json is replaced by one naming
it, and only then is the older state file deleted: a crash at any point leaves a checkpoint.json whose state file is
there. A diverged run (NaN, infinite or exploding loss) stops with a TrainingError before anything of its state is
written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import GraphconvError, TrainingError, WeightsError
from ..files import replacing
from .data import Data, DataError, Dataset, load_data

# autodiff, optim and step import the op registry: they are imported when training starts, so that the command line
# (which reads DEFAULTS for its help) stays quick to start

__all__ = ["fit", "History", "DEFAULT_BACKEND", "FALLBACK_BACKEND", "DEFAULTS", "METRIC_KEYS", "AUX_WEIGHT",
           "DIVERGENCE_FACTOR", "parse_augment", "augment_batch", "llvm_available", "resolve_backend",
           "read_checkpoint", "plot_run"]

DEFAULT_BACKEND = "llvm"  # native code; when its training runner is missing a defaulted backend falls back to:
FALLBACK_BACKEND = "onnx"
AUX_WEIGHT = 0.3  # the loss weight of each extra output shaped like the main one (GoogLeNet's auxiliary classifiers)
DIVERGENCE_FACTOR = 1e3  # a loss above this many times max(first loss, 1) has exploded
CHECKPOINT_VERSION = 2  # 2: checkpoint.json names its state file ("state"); 1 (still read): checkpoint.npz

# The leading word of every random stream's seed, one per use. numpy's SeedSequence ignores trailing zeros ([s, e] and
# [s, e, 0] are the same seed, and default_rng(s) is SeedSequence([s, 0, 0])), so streams seeded with bare counters
# would coincide: the dropout masks of step k with the batch order of epoch k, say. Initial weights use
# [seed, crc32(name)] (graphconv/weights.py).
STREAM_ORDER = 0x6F726472  # "ordr": the batch order of epoch e: [STREAM_ORDER, seed, e]
STREAM_AUG = 0x6175676D  # "augm": the augmentation of batch b of epoch e: [STREAM_AUG, seed, e, b]
STREAM_VAL_SPLIT = 0x76616C73  # "vals": the validation split: [STREAM_VAL_SPLIT, seed]
STREAM_DROPOUT = 0x64726F70  # "drop": mask k of step t (TrainStep.masks): [STREAM_DROPOUT, seed, t, k]

# What an unset setting is. `graphconv train specs/lenet5.gc --data digits` (onnx) reaches 97.2% test accuracy with
# these (seeds 0-4: 97.2%, 97.2%, 96.9%, 97.2%, 97.5%); without label smoothing and weight decay and with 20 epochs,
# 97.2%, 96.7%, 96.9%, 97.2%, 96.4%; with --augment crop:2 (seeds 0 and 1, 20 epochs) 98.3%, 97.8%.
DEFAULT_L2 = 5e-4  # the weight decay of sgd and adam when none is given (AlexNet's and ResNet's recipes)
DEFAULT_SMOOTHING = 0.1  # cross-entropy's label smoothing when none is given
DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 32,
    "lr": 0.05,
    "optimizer": "sgd",
    "momentum": 0.9,
    "nesterov": True,  # sgd only
    "beta1": 0.9,  # adam and adamw
    "beta2": 0.999,
    "eps": 1e-8,
    "weight_decay": None,  # DEFAULT_L2 for sgd and adam, 0.01 (decoupled) for adamw
    "schedule": "cosine",
    "warmup": 0,  # optimizer steps of linear warm-up
    "label_smoothing": None,  # DEFAULT_SMOOTHING for cross-entropy (mse has none)
    "augment": [],
    "val_fraction": 0.1,
    "seed": 0,
    "loss": None,  # cross_entropy for class labels, mse for real-valued targets
    "loss_weights": None,  # 1 for the first output, AUX_WEIGHT for extra outputs of the same shape, else 0; a dict
                           # sets the outputs it names, the others keep these
    "backend": None,  # DEFAULT_BACKEND (falling back to FALLBACK_BACKEND when its runner is missing)
    "device": "cpu",
    "threads": None,
    "dtype": "float32",
}

METRIC_KEYS = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "seconds",
               "samples_per_second")


# -- backends -------------------------------------------------------------------------------------------------------

def llvm_available() -> bool:
    """Whether the llvm backend's training runner (graphconv/llvm/train.py) is present."""
    try:
        from ..llvm import train as llvm_train
    except ImportError:
        return False
    return hasattr(llvm_train, "LLVMRunner")


def resolve_backend(backend: str | None) -> tuple[str, str | None]:
    """(backend, note): None means DEFAULT_BACKEND, or FALLBACK_BACKEND with a note when the llvm training runner
    is missing; a backend asked for by name must be there."""
    if backend is None:
        if DEFAULT_BACKEND != "llvm" or llvm_available():
            return DEFAULT_BACKEND, None
        return FALLBACK_BACKEND, (f"note: the llvm training runner is not available in this build; training on "
                                  f"{FALLBACK_BACKEND} instead (choose with --backend)")
    from .step import STEP_BACKENDS

    if backend not in STEP_BACKENDS:
        raise TrainingError(f"unknown training backend {backend!r}; choose {', '.join(STEP_BACKENDS)}")
    if backend == "llvm" and not llvm_available():
        raise TrainingError("the llvm backend cannot train in this build (its training runner, "
                            "graphconv/llvm/train.py, is missing); use backend 'onnx' or 'reference'")
    return backend, None


# -- augmentation ---------------------------------------------------------------------------------------------------

AUGMENTATIONS = ("crop", "flip")
DEFAULT_CROP_PADDING = 4


def parse_augment(augment: str | Sequence[str] | None) -> list[str]:
    """Normalized augmentation names: "crop:4,flip" or ["crop:4", "flip"] -> ["crop:4", "flip"] ("crop" alone
    pads by 4). Raises TrainingError for anything else."""
    if not augment:
        return []
    items = augment.split(",") if isinstance(augment, str) else list(augment)
    out: list[str] = []
    for raw in items:
        if not isinstance(raw, str):
            raise TrainingError(f"augmentations are names such as 'crop:4' or 'flip', got {raw!r}")
        text = raw.strip()
        name, _, arg = text.partition(":")
        if name == "flip" and not arg:
            item = "flip"
        elif name == "crop":
            try:
                pad = int(arg) if arg else DEFAULT_CROP_PADDING
            except ValueError:
                pad = -1
            if pad < 1:
                raise TrainingError(f"augmentation {text!r}: the crop padding must be a whole number >= 1 "
                                    f"(e.g. crop:4)")
            item = f"crop:{pad}"
        else:
            raise TrainingError(f"unknown augmentation {text!r}; choose crop:PADDING (random crop after zero "
                                f"padding) or flip (random horizontal flip)")
        if any(o.partition(":")[0] == name for o in out):
            raise TrainingError(f"augmentation '{name}' is given twice")
        out.append(item)
    return out


def augment_batch(x: np.ndarray, augment: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """Images [N, C, H, W] augmented as `augment` (parse_augment's names) says, in that order; a new array."""
    if x.ndim != 4:
        raise TrainingError(f"augmentation applies to images [N, C, H, W]; the samples have shape "
                            f"{list(x.shape[1:])}")
    n, c, h, w = x.shape
    out = x
    for item in augment:
        name, _, arg = item.partition(":")
        if name == "crop":
            p = int(arg)
            padded = np.pad(out, ((0, 0), (0, 0), (p, p), (p, p)))
            oy = rng.integers(0, 2 * p + 1, n)
            ox = rng.integers(0, 2 * p + 1, n)
            rows = (oy[:, None] + np.arange(h))[:, None, :, None]
            cols = (ox[:, None] + np.arange(w))[:, None, None, :]
            out = padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]
        elif name == "flip":
            flip = rng.random(n) < 0.5
            out = out.copy() if out is x else out
            out[flip] = out[flip][..., ::-1]
    return np.ascontiguousarray(out) if out is not x else x.copy()


# -- history --------------------------------------------------------------------------------------------------------

@dataclass
class History:
    """What `fit` returns: one record per epoch (METRIC_KEYS; the records of a resumed run's earlier epochs too),
    the network with the trained weights, and where the run directory is."""

    records: list[dict[str, Any]]
    net: Any  # graphconv.Network
    out: Path | None
    steps: int
    backend: str
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __getitem__(self, i):
        return self.records[i]

    @property
    def last(self) -> dict[str, Any]:
        """The last epoch's metrics ({} before the first epoch)."""
        return self.records[-1] if self.records else {}

    def to_json(self) -> dict[str, Any]:
        """The run as JSON-ready data: network, backend, steps, run directory, time and every epoch's metrics."""
        return {"network": self.net.name, "backend": self.backend, "steps": self.steps,
                "out": str(self.out) if self.out else None, "seconds": round(self.seconds, 3),
                "settings": self.settings, "epochs": self.records}


# -- files ----------------------------------------------------------------------------------------------------------

def _file_mode() -> int:
    """The mode a new file gets from open() (temporary files are created private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _publish(path: Path) -> None:
    try:
        os.chmod(path, _file_mode())
    except OSError:
        pass


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the renames in `folder` durable (where directories can be opened: not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    with replacing(path, sync=True, before_rename=_publish) as fh:
        fh.write(data)
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps({k: _jsonable(r.get(k)) for k in METRIC_KEYS}) + "\n" for r in records)
    _atomic_write(path, text.encode("utf-8"))


STATE_NAME = re.compile(r"checkpoint-(\d+)(-\d+)?\.npz")  # the state files save_checkpoint writes
LEGACY_STATE = "checkpoint.npz"  # the state file of a version 1 checkpoint


def _is_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))


def _is_whole(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def _is_loss_weights(v: Any) -> bool:
    def ok(w):
        return _is_number(w) and math.isfinite(w) and w >= 0

    if isinstance(v, Mapping):
        return all(isinstance(k, str) and ok(w) for k, w in v.items())
    if isinstance(v, np.ndarray):
        v = v.tolist() if v.ndim == 1 else None
    return isinstance(v, (list, tuple)) and all(ok(w) for w in v)


def _is_augment(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(a, str) for a in v))


# the type of every setting, checked before its value: (what it must be, test, whether None is allowed)
SETTING_TYPES: dict[str, tuple[str, Callable[[Any], bool], bool]] = {
    "epochs": ("a whole number", _is_whole, False),
    "batch_size": ("a whole number", _is_whole, False),
    "lr": ("a number", _is_number, False),
    "optimizer": ("a name", lambda v: isinstance(v, str), False),
    "momentum": ("a number", _is_number, False),
    "nesterov": ("true or false", lambda v: isinstance(v, (bool, np.bool_)), False),
    "beta1": ("a number", _is_number, False),
    "beta2": ("a number", _is_number, False),
    "eps": ("a number", _is_number, False),
    "weight_decay": ("a number or null", _is_number, True),
    "schedule": ("a name", lambda v: isinstance(v, str), False),
    "warmup": ("a whole number", _is_whole, False),
    "label_smoothing": ("a number or null", _is_number, True),
    "augment": ("a list of augmentation names", _is_augment, True),
    "val_fraction": ("a number", _is_number, False),
    "seed": ("a whole number", _is_whole, False),
    "loss": ("a loss name or null", lambda v: isinstance(v, str), True),
    "loss_weights": ("a list of numbers >= 0, one per output, or an object of them by output name, or null",
                     _is_loss_weights, True),
    "backend": ("a backend name or null", lambda v: isinstance(v, str), True),
    "device": ("a device name", lambda v: isinstance(v, str), False),
    "threads": ("a whole number or null", _is_whole, True),
    "dtype": ("a dtype name", lambda v: isinstance(v, str), False),
}
assert set(SETTING_TYPES) == set(DEFAULTS)


def _setting_problem(name: str, v: Any) -> str | None:
    """Why `v` cannot be setting `name` by its type ("must be a number, got 'x'"), or None; the values are checked
    by _resolve_settings."""
    what, test, nullable = SETTING_TYPES[name]
    if v is None and nullable:
        return None
    if v is None or not test(v):
        return f"must be {what}, got {v!r}"
    return None


def _is_param_value(v: Any) -> bool:
    return (isinstance(v, (str, int, float, bool)) and not (isinstance(v, float) and not math.isfinite(v))) or \
        (isinstance(v, list) and all(_is_param_value(x) for x in v))


# the other fields of checkpoint.json: (what each must be, test); "settings" is checked setting by setting
CHECKPOINT_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "version": ("a whole number", _is_whole),
    "epoch": ("a whole number >= 0", lambda v: _is_whole(v) and v >= 0),
    "batch": ("a whole number >= 0", lambda v: _is_whole(v) and v >= 0),
    "steps": ("a whole number >= 0", lambda v: _is_whole(v) and v >= 0),
    "settings": ("an object", lambda v: isinstance(v, dict)),
    "state_sha256": ("a sha256 in hex", lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None),
}
OPTIONAL_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "state": ("the name of a state file in the run directory (checkpoint-STEPS.npz)",
              lambda v: isinstance(v, str) and STATE_NAME.fullmatch(v) is not None),
    "network": ("a name or null", lambda v: v is None or isinstance(v, str)),
    "spec": ("a path or null", lambda v: v is None or isinstance(v, str)),
    "data": ("a path or name, or null", lambda v: v is None or isinstance(v, str)),
    "params": ("an object of network parameters (numbers, strings, lists) or null",
               lambda v: v is None or (isinstance(v, dict) and all(_is_param_value(x) for x in v.values()))),
    "seed": ("a whole number >= 0", lambda v: _is_whole(v) and v >= 0),
    "per_epoch": ("a whole number >= 1 or null", lambda v: v is None or (_is_whole(v) and v >= 1)),
    "partial": ("an object (loss_sum, correct, seen, train_seconds) or null",
                lambda v: v is None or isinstance(v, dict)),
    "initial_loss": ("a finite number or null", lambda v: v is None or (_is_number(v) and math.isfinite(v))),
}
PARTIAL_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "loss_sum": ("a finite number", lambda v: _is_number(v) and math.isfinite(v)),
    "correct": ("a whole number >= 0", lambda v: _is_whole(v) and v >= 0),
    "seen": ("a whole number >= 0", lambda v: _is_whole(v) and v >= 0),
    "train_seconds": ("a number >= 0", lambda v: _is_number(v) and math.isfinite(v) and v >= 0),
}


def read_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """checkpoint.json of a run directory, checked field by field (a bad one is a TrainingError naming it), with
    "state" the name of its state file in the run directory (which is there)."""
    folder = Path(run_dir)
    meta_path = folder / "checkpoint.json"
    if not folder.is_dir():
        raise TrainingError(f"cannot resume: '{folder}' is not a run directory")
    if not meta_path.is_file():
        raise TrainingError(f"cannot resume: '{folder}' holds no checkpoint (checkpoint.json and its state file "
                            f"are written after the first epoch)")
    try:
        if meta_path.stat().st_size > 1 << 20:
            raise ValueError("the file is over 1 MiB")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainingError(f"cannot resume: '{meta_path}' is not readable JSON: {e}") from None
    bad = [k for k, (_, test) in CHECKPOINT_FIELDS.items() if not isinstance(meta, dict) or k not in meta
           or not test(meta[k])]
    if bad:
        raise TrainingError(f"cannot resume: '{meta_path}' is not a graphconv checkpoint (missing or wrong: "
                            f"{', '.join(bad)})")
    if meta["version"] not in (1, CHECKPOINT_VERSION):
        raise TrainingError(f"cannot resume: '{meta_path}' has checkpoint version {meta['version']}; this "
                            f"graphconv reads versions 1 and {CHECKPOINT_VERSION}")

    def wrong(field: str, what: str) -> TrainingError:
        return TrainingError(f"cannot resume: '{meta_path}' has a bad {field}: it must be {what}")

    if meta["version"] >= 2 and "state" not in meta:
        raise TrainingError(f"cannot resume: '{meta_path}' names no state file (\"state\" is missing)")
    for k, (what, test) in OPTIONAL_FIELDS.items():
        if k in meta and not test(meta[k]):
            raise wrong(k, f"{what}, got {meta[k]!r}")
    for k, (what, test) in PARTIAL_FIELDS.items():
        if meta.get("partial") is not None and k in meta["partial"] and not test(meta["partial"][k]):
            raise wrong(f"partial.{k}", f"{what}, got {meta['partial'][k]!r}")
    for k, v in meta["settings"].items():
        problem = _setting_problem(k, v) if k in SETTING_TYPES else None
        if problem:
            raise TrainingError(f"cannot resume: '{meta_path}' has a bad settings.{k}: it {problem}")
    if meta["version"] == 1:
        meta["state"] = LEGACY_STATE
    if not (folder / meta["state"]).is_file():
        raise TrainingError(f"cannot resume: {folder / meta['state']}, the state file {meta_path} names, is missing")
    return meta


def _read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """The records of epochs 1..upto_epoch from an earlier run (later lines are of work the checkpoint lost)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) and rec["epoch"] <= upto_epoch:
            out.append(rec)
    return out


MAX_METRICS_BYTES = 64 << 20  # a metrics.jsonl `plot_run` reads (a run of a million epochs is ~300 MB: not ours)


def plot_run(run_dir: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Redraw the loss and accuracy curves of a run directory from its metrics.jsonl (`graphconv plot RUN_DIR`);
    returns the picture's path (default RUN_DIR/plot.png). Lines that are not an epoch's record, and values that
    are not finite numbers, are skipped. Raises TrainingError (no metrics, matplotlib missing)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise TrainingError(f"{run_dir}: no metrics.jsonl (is it a run directory of graphconv train?)")
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise TrainingError(f"{path}: {path.stat().st_size:,} bytes is more than a metrics file can be "
                            f"({MAX_METRICS_BYTES:,})")
    records = []
    for rec in _read_metrics(path, upto_epoch=1 << 62):
        clean = {"epoch": rec["epoch"]}
        for key in ("train_loss", "val_loss", "train_acc", "val_acc", "test_acc"):
            v = rec.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                clean[key] = float(v)
        records.append(clean)
    if not records:
        raise TrainingError(f"{path}: no epoch records to plot")
    out = Path(output) if output is not None else Path(run_dir) / "plot.png"
    note = _plot(out, sorted(records, key=lambda r: r["epoch"]))
    if note is not None:
        raise TrainingError(note.replace("note: plot.png skipped: ", "cannot draw the plot: "))
    return out


def _plot(path: Path, records: list[dict[str, Any]]) -> str | None:
    """Write the loss and accuracy curves; returns a note when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return ("note: plot.png skipped: the loss and accuracy curves need matplotlib (pip install "
                "'graphconv[plot]')")
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    epochs = [r["epoch"] for r in records]

    def series(ax, key, label):
        pts = [(e, r.get(key)) for e, r in zip(epochs, records) if r.get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=label)

    ax = fig.add_subplot(1, 2, 1)
    series(ax, "train_loss", "training")
    series(ax, "val_loss", "validation")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(1, 2, 2)
    series(ax, "train_acc", "training")
    series(ax, "val_acc", "validation")
    series(ax, "test_acc", "test")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return None


# -- settings -------------------------------------------------------------------------------------------------------

def _resolve_settings(given: Mapping[str, Any], saved: Mapping[str, Any] | None) -> dict[str, Any]:
    """Given settings over the checkpoint's over DEFAULTS, checked: a bad one is a TrainingError naming it (as
    "the checkpoint's settings.NAME" when it came from there)."""
    from .autodiff import LOSS_KINDS
    from .optim import OPTIMIZERS
    from .schedule import SCHEDULES

    s = dict(DEFAULTS)
    from_checkpoint: set[str] = set()
    if saved:
        s.update({k: v for k, v in saved.items() if k in DEFAULTS})
        from_checkpoint = {k for k in saved if k in DEFAULTS}
    s.update({k: v for k, v in given.items() if v is not None})
    from_checkpoint -= {k for k, v in given.items() if v is not None}

    def fail(name: str, text: str) -> TrainingError:
        label = f"the checkpoint's settings.{name}" if name in from_checkpoint else name
        return TrainingError(f"{label} {text}")

    for name in DEFAULTS:
        problem = _setting_problem(name, s[name])
        if problem:
            raise fail(name, problem)

    def whole(name, minimum):
        v = s[name]
        if v < minimum:
            raise fail(name, f"must be a whole number >= {minimum}, got {v!r}")
        s[name] = int(v)

    def real(name, lo, hi, *, lo_open=False, hi_open=True):
        v = s[name]
        if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi or (hi_open and v == hi):
            lo_s, hi_s = ("(" if lo_open else "["), (")" if hi_open else "]")
            raise fail(name, f"must be in {lo_s}{lo}, {hi}{hi_s}, got {v!r}")
        s[name] = float(v)

    def choice(name, options, what, joiner=", "):
        if s[name] not in options:
            label = f"the checkpoint's settings.{name}: " if name in from_checkpoint else ""
            raise TrainingError(f"{label}unknown {what} {s[name]!r}; choose {joiner.join(options)}")

    whole("epochs", 1)
    whole("batch_size", 1)
    whole("warmup", 0)
    whole("seed", 0)
    if s["threads"] is not None:
        whole("threads", 1)
    real("lr", 0.0, math.inf, lo_open=True)
    real("momentum", 0.0, 1.0)
    real("beta1", 0.0, 1.0)
    real("beta2", 0.0, 1.0)
    real("eps", 0.0, math.inf)
    if s["label_smoothing"] is not None:
        real("label_smoothing", 0.0, 1.0)
    real("val_fraction", 0.0, 1.0)
    if s["weight_decay"] is not None:
        real("weight_decay", 0.0, math.inf)
    choice("optimizer", OPTIMIZERS, "optimizer")
    choice("schedule", SCHEDULES, "learning-rate schedule")
    if s["loss"] is not None:
        choice("loss", LOSS_KINDS, "loss", " or ")
    choice("dtype", ("float32", "float64"), "dtype", " or ")
    choice("device", ("cpu", "cuda"), "device", " or ")
    try:
        s["augment"] = parse_augment(s["augment"])
    except TrainingError as e:
        raise fail("augment", f"is wrong: {e}") if "augment" in from_checkpoint else e
    s["nesterov"] = bool(s["nesterov"])
    lw = s["loss_weights"]
    if lw is not None:
        if isinstance(lw, Mapping):
            lw = {str(k): float(v) for k, v in lw.items()}
        else:
            lw = [float(v) for v in lw]
        s["loss_weights"] = lw
    return s


# -- the network and the data ---------------------------------------------------------------------------------------

def _load_net(spec: str, params: dict[str, Any], seed: int, classes: Callable[[Any], int | None]):
    """The network of `spec` with `params`; num_classes (when the spec takes it and it is not given) from the data:
    `classes(graph)` returns the number of classes the data holds."""
    from ..network import Network
    from ..spec import load_graph

    graph = load_graph(spec, params or None)
    declared = graph.meta.get("params", {})
    if "num_classes" in declared and "num_classes" not in params:
        k = classes(graph)
        if k is not None and k != declared["num_classes"]:
            params = {**params, "num_classes": k}
            graph = load_graph(spec, params)
    return Network(graph, seed=seed), params


def _sample_shape(graph) -> tuple[int, ...]:
    if len(graph.inputs) != 1:
        raise TrainingError(f"{graph.name} has {len(graph.inputs)} inputs ({', '.join(v.name for v in graph.inputs)})"
                            f"; training feeds one input")
    t = graph.inputs[0].type
    shape = t.concrete(1)
    return tuple(int(d) for d in shape[1:])


def _as_data(data: Any) -> Data:
    if isinstance(data, Data):
        return data
    if isinstance(data, Dataset):
        return Data(data)
    if isinstance(data, tuple) and len(data) == 2:
        return Data(Dataset(np.asarray(data[0]), np.asarray(data[1]), "data"))
    raise TrainingError(f"data must be a dataset name or path, a Data or Dataset, or (x, y); got "
                        f"{type(data).__name__}")


def _is_labels(y: np.ndarray) -> bool:
    return y.ndim == 1 and np.issubdtype(y.dtype, np.integer)


def _check_given(ds: Dataset, sample: tuple[int, ...]) -> Dataset:
    """A Dataset given through the API: the checks load_data makes on files."""
    x = np.asarray(ds.x)
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{ds.name}: no samples")
    if tuple(x.shape[1:]) != sample:
        raise DataError(f"{ds.name}: samples have shape {list(x.shape[1:])}; the network's input takes "
                        f"{list(sample)} per sample")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{ds.name}: samples have dtype {x.dtype}, not numbers")
    y = np.asarray(ds.y)
    if len(y) != len(x):
        raise DataError(f"{ds.name}: {len(x)} samples but {len(y)} labels or targets")
    if np.issubdtype(y.dtype, np.floating) and y.ndim == 1 and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)  # class indices stored as floats
    elif not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"{ds.name}: labels have dtype {y.dtype}, not numbers")
    if _is_labels(y) and y.size and y.min() < 0:
        raise DataError(f"{ds.name}: label {int(y.min())} is negative")
    return Dataset(x, y, ds.name)


def _stream(tag: int, seed: int, *counters: int) -> np.random.SeedSequence:
    """The seed of one random stream (see STREAM_ORDER)."""
    return np.random.SeedSequence([tag, seed, *counters])


def _split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    if fraction == 0.0:
        return ds, None
    if _is_labels(ds.y):
        return ds.split(fraction, seed=_stream(STREAM_VAL_SPLIT, seed))
    rng = np.random.default_rng(_stream(STREAM_VAL_SPLIT, seed))
    order = rng.permutation(len(ds))
    k = int(round(fraction * len(ds)))
    if k < 1 or k >= len(ds):
        raise DataError(f"{ds.name}: {len(ds)} samples are too few to split off {fraction:.0%}")
    held, rest = np.sort(order[:k]), np.sort(order[k:])
    return Dataset(ds.x[rest], ds.y[rest], ds.name), Dataset(ds.x[held], ds.y[held], f"{ds.name} (held out)")


# -- losses ---------------------------------------------------------------------------------------------------------

def _losses(graph, settings: dict[str, Any], classification: bool) -> list:
    from .autodiff import Loss

    outputs = list(graph.outputs)
    main = outputs[0]
    shape = tuple(graph.outputs[main].type.shape)

    def like_main(o: str) -> bool:
        return tuple(graph.outputs[o].type.shape) == shape

    # the defaults: 1 for the main output, AUX_WEIGHT for the others shaped like it (they share its targets), else 0
    weights = {o: 1.0 if i == 0 else (AUX_WEIGHT if like_main(o) else 0.0) for i, o in enumerate(outputs)}
    lw = settings["loss_weights"]
    if isinstance(lw, Mapping):  # sets the outputs it names; the others keep their defaults
        unknown = [k for k in lw if k not in outputs]
        if unknown:
            raise TrainingError(f"loss weights for {', '.join(unknown)}: {graph.name} has no such output; its "
                                f"outputs: {', '.join(outputs)}")
        weights.update({o: float(lw[o]) for o in outputs if o in lw})
        named = set(lw)
    elif lw is not None:
        if len(lw) != len(outputs):
            raise TrainingError(f"{len(lw)} loss weights for {len(outputs)} outputs ({', '.join(outputs)})")
        weights = {o: float(w) for o, w in zip(outputs, lw)}
        named = set(outputs)
    else:
        named = set()
    if weights[main] <= 0:
        raise TrainingError(f"the main output '{main}' needs a loss weight above 0")
    for o in outputs[1:]:
        if o in named and weights[o] > 0 and not like_main(o):
            raise TrainingError(f"output '{o}' has shape {_fmt(graph.outputs[o].type.shape)}, the main output "
                                f"'{main}' {_fmt(shape)}: it cannot have a loss (every loss is against the main "
                                f"output's targets); give it loss weight 0")
    kind = settings["loss"] or ("cross_entropy" if classification else "mse")
    if kind == "cross_entropy" and not classification and settings["loss"] is not None:
        pass  # real-valued targets read as class probabilities
    given = settings["label_smoothing"]
    smoothing = (DEFAULT_SMOOTHING if given is None else given) if kind == "cross_entropy" else 0.0
    if given and kind != "cross_entropy":
        raise TrainingError("label smoothing applies to the cross_entropy loss")
    return [Loss(o, kind, w, smoothing) for o, w in weights.items() if w > 0]


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _targets(y: np.ndarray, losses: list, classes: int | None, dtype: str) -> dict[str, np.ndarray]:
    if classes is not None:
        t = np.zeros((len(y), classes), dtype)
        t[np.arange(len(y)), y] = 1.0
    else:
        t = np.asarray(y, dtype)
    return {loss.output: t for loss in losses}


def _eval_loss(pred: np.ndarray, y: np.ndarray, kind: str, classes: int | None) -> np.ndarray:
    """Per-sample loss of the main output (cross-entropy without smoothing, or squared error)."""
    p = pred.astype(np.float64)
    if kind == "cross_entropy":
        if classes is not None:
            t = np.zeros_like(p)
            t[np.arange(len(y)), y] = 1.0
        else:
            t = np.asarray(y, np.float64)
        m = p.max(axis=1, keepdims=True)
        logsm = p - m - np.log(np.exp(p - m).sum(axis=1, keepdims=True))
        return -(t * logsm).sum(axis=1)
    t = (np.eye(p.shape[1])[y] if classes is not None else np.asarray(y, np.float64)).reshape(p.shape)
    return ((p - t) ** 2).reshape(len(p), -1).mean(axis=1)


# -- the loop -------------------------------------------------------------------------------------------------------

def _first_not_finite(x: np.ndarray, y: np.ndarray | None) -> int | None:
    """The position in the batch of the first sample (or real-valued target) holding NaN or infinity, or None."""
    for a in (x, y):
        if a is None or not np.issubdtype(a.dtype, np.floating):
            continue
        ok = np.isfinite(a.reshape(len(a), -1)).all(axis=1)
        if not ok.all():
            return int(np.flatnonzero(~ok)[0])
    return None


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    # disable=None: tqdm shows the bar only when stderr is a terminal
    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=None, dynamic_ncols=True)


def _spec_path(net: Any) -> str | None:
    src = getattr(net, "graph", None) and net.graph.meta.get("source")
    return os.path.abspath(src) if src and os.path.isfile(src) else None


def fit(net: Any = None, data: Any = None, *, epochs: int | None = None, batch_size: int | None = None,
        lr: float | None = None, optimizer: Any = None, momentum: float | None = None,
        nesterov: bool | None = None, weight_decay: float | None = None, schedule: str | None = None,
        warmup: int | None = None, label_smoothing: float | None = None,
        augment: str | Sequence[str] | None = None, val_fraction: float | None = None, seed: int | None = None,
        loss: str | None = None, loss_weights: Sequence[float] | Mapping[str, float] | None = None,
        backend: str | None = None, device: str | None = None, threads: int | None = None,
        dtype: str | None = None, params: Mapping[str, Any] | None = None, out: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None, progress: bool = True, max_steps: int | None = None,
        on_start: Callable[[dict[str, Any]], None] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        log: Callable[[str], None] | None = None) -> History:
    """Train `net` (a spec path, with network parameters `params`, or a graphconv.Network) on `data` (a name or path
    for load_data, a Data or Dataset, or (x, y)); see the module docstring. Unset settings come from the checkpoint
    when resuming, else from DEFAULTS. `epochs` counts the whole run (a resumed run trains the epochs still to go).
    `on_start(info)` is called once training is set up (network, sample counts, backend, first epoch),
    `on_epoch(record)` after each epoch, `log(text)` with notes. `max_steps` stops after that many
    optimizer steps in all (tests). Raises TrainingError, DataError, SpecError, GraphconvError."""
    from ..network import Network, compile as compile_net
    from ..weights import load_weights, save_weights
    from .optim import Optimizer
    from .schedule import make_schedule
    from .step import TrainStep

    t_start = time.perf_counter()
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if log is not None:
            log(text)

    opt_given = optimizer if isinstance(optimizer, Optimizer) else None
    betas: dict[str, float | None] = dict(beta1=None, beta2=None, eps=None)
    if opt_given is not None:
        optimizer, momentum, nesterov = opt_given.kind, opt_given.momentum, opt_given.nesterov
        weight_decay = opt_given.weight_decay if weight_decay is None else weight_decay
        betas = dict(beta1=opt_given.beta1, beta2=opt_given.beta2, eps=opt_given.eps)
    given = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                 nesterov=nesterov, **betas, weight_decay=weight_decay, schedule=schedule, warmup=warmup,
                 label_smoothing=label_smoothing, augment=augment, val_fraction=val_fraction, seed=seed, loss=loss,
                 loss_weights=loss_weights, backend=backend, device=device, threads=threads, dtype=dtype)

    # -- resume: the checkpoint's settings, network and data unless given -----------------------------------------
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        ckpt = read_checkpoint(resume)
        if optimizer is not None and optimizer != ckpt["settings"].get("optimizer"):
            raise TrainingError(f"cannot resume with optimizer {optimizer}: the checkpoint holds the state of "
                                f"{ckpt['settings'].get('optimizer')}")
    s = _resolve_settings(given, ckpt["settings"] if ckpt else None)
    if s["backend"] is None or (ckpt and backend is None and s["backend"] == "llvm" and not llvm_available()):
        s["backend"] = None
    defaulted = s["backend"] is None
    if ckpt is not None and ckpt["epoch"] >= s["epochs"]:
        raise TrainingError(f"the run in {resume} already finished {ckpt['epoch']} epochs; give more epochs "
                            f"(--epochs, counting the whole run) to train on")
    out_dir = Path(out) if out is not None else (Path(resume) if resume is not None else None)
    if out_dir is not None:
        continuing = resume is not None and Path(resume).resolve() == out_dir.resolve()
        if not continuing and (out_dir / "checkpoint.json").exists():
            raise TrainingError(f"{out_dir} already holds a run (checkpoint.json); continue it with resume "
                                f"(--resume {out_dir}) or choose another run directory")
    backend_name, fallback_note = resolve_backend(s["backend"])
    if fallback_note:
        note(fallback_note)
    s["backend"] = backend_name
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise TrainingError(f"max_steps must be a whole number >= 1, got {max_steps!r}")

    if net is None:
        if ckpt is None or not ckpt.get("spec"):
            raise TrainingError("no network to train: give a spec" + (" (the checkpoint names none)" if ckpt else ""))
        net = ckpt["spec"]
        if params is None:
            params = ckpt.get("params") or {}
    if data is None:
        if ckpt is None or not ckpt.get("data"):
            raise TrainingError("no data to train on: give a dataset ('digits', a folder of MNIST IDX files or "
                                "an .npz file)" + (" (the checkpoint names none)" if ckpt else ""))
        data = ckpt["data"]
    params = dict(params or {})

    # -- the network and the data ---------------------------------------------------------------------------------
    loaded: dict[str, Data] = {}
    data_source = os.fspath(data) if isinstance(data, (str, os.PathLike)) else None

    def get_data(graph) -> Data:
        key = repr(_sample_shape(graph))
        if key not in loaded:
            if data_source is not None:
                loaded[key] = load_data(data_source, _sample_shape(graph))
            else:
                d = _as_data(data)
                sample = _sample_shape(graph)
                loaded[key] = Data(_check_given(d.train, sample),
                                   _check_given(d.test, sample) if d.test is not None else None)
        return loaded[key]

    def classes_of(graph) -> int | None:
        d = get_data(graph)
        if not _is_labels(d.train.y):
            return None
        top = int(d.train.y.max())
        if d.test is not None and _is_labels(d.test.y) and d.test.y.size:
            top = max(top, int(d.test.y.max()))
        return top + 1

    if isinstance(net, (str, os.PathLike)):
        spec_path: str | None = os.path.abspath(os.fspath(net))
        network, params = _load_net(os.fspath(net), params, s["seed"], classes_of)
    elif isinstance(net, Network):
        if params:
            raise TrainingError("network parameters apply to a spec path, not to a loaded Network")
        network, spec_path = net, _spec_path(net)
        # the parameters the spec was loaded with (graphconv.load(spec, num_classes=12)): a resume loads it again
        # with them
        params = {k: v for k, v in (net.graph.meta.get("params") or {}).items() if _is_param_value(v)}
    else:
        raise TrainingError(f"fit() trains a spec path or a graphconv.Network, got {type(net).__name__}")
    graph = network.graph
    sample = _sample_shape(graph)
    d = get_data(graph)
    input_name = graph.inputs[0].name
    main = list(graph.outputs)[0]
    out_shape = tuple(graph.outputs[main].type.concrete(1))[1:]

    classification = _is_labels(d.train.y)
    kind = s["loss"] or ("cross_entropy" if classification else "mse")
    classes: int | None = None
    if classification:
        if len(out_shape) != 1:
            raise TrainingError(f"class labels need a main output [N, classes]; '{main}' of {graph.name} is "
                                f"{list(out_shape)} per sample")
        classes = int(out_shape[0])
        for ds in (d.train, d.test):
            if ds is not None and ds.y.size and int(ds.y.max()) >= classes:
                raise DataError(f"{ds.name}: label {int(ds.y.max())} is out of range ({graph.name}'s output "
                                f"'{main}' has {classes} classes: 0..{classes - 1})")
    elif tuple(d.train.y.shape[1:]) != out_shape:
        raise DataError(f"{d.train.name}: targets have shape {list(d.train.y.shape[1:])} per sample; output "
                        f"'{main}' gives {list(out_shape)}")
    s["loss"] = kind
    losses = _losses(graph, s, classification)
    if s["augment"] and len(sample) != 3:
        raise TrainingError(f"augmentation applies to image inputs [N, C, H, W]; {graph.name} takes "
                            f"{list(sample)} per sample")

    train_set, val_set = _split(d.train, s["val_fraction"], s["seed"])
    test_set = d.test
    n_train = len(train_set)
    per_epoch = -(-n_train // s["batch_size"])
    if per_epoch > 1 and n_train % s["batch_size"] == 1:
        # a last batch of one sample joins the one before it: batchnorm has no variance over a single sample
        per_epoch -= 1
    total_steps = per_epoch * s["epochs"]
    try:
        sched = make_schedule(s["schedule"], s["lr"], total_steps=total_steps, warmup_steps=s["warmup"],
                              step_size=step_schedule_size(total_steps, s["warmup"]))
    except GraphconvError as e:
        raise TrainingError(str(e)) from None

    sgd = s["optimizer"] == "sgd"
    # Nesterov is on by default for sgd with momentum; asked for explicitly, Optimizer checks that it applies
    nest = s["nesterov"] if nesterov is not None else s["nesterov"] and sgd and s["momentum"] > 0
    if s["weight_decay"] is None:  # the effective value is what the checkpoint keeps
        if opt_given is not None:
            s["weight_decay"] = opt_given.decay
        elif s["optimizer"] != "adamw":  # (adamw keeps its own default, 0.01 decoupled)
            s["weight_decay"] = DEFAULT_L2
    opt = Optimizer(s["optimizer"], momentum=s["momentum"] if sgd else 0.9, nesterov=nest,
                    weight_decay=s["weight_decay"], beta1=s["beta1"], beta2=s["beta2"], eps=s["eps"])
    if opt_given is not None:
        opt = Optimizer(opt_given.kind, momentum=opt_given.momentum, nesterov=opt_given.nesterov,
                        weight_decay=s["weight_decay"], beta1=s["beta1"], beta2=s["beta2"], eps=s["eps"])
    try:
        step = TrainStep(network, losses, opt, backend=backend_name, dtype=s["dtype"], device=s["device"],
                         threads=s["threads"], seed=s["seed"])
    except GraphconvError as e:
        if not (defaulted and backend_name == "llvm"):
            raise
        # the default backend cannot build this step (an op without a training kernel yet): say so, and go on
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        note(f"note: the llvm backend cannot train {graph.name} ({reason}); training on {FALLBACK_BACKEND} "
             f"instead (choose with --backend)")
        backend_name = s["backend"] = FALLBACK_BACKEND
        step = TrainStep(network, losses, opt, backend=backend_name, dtype=s["dtype"], device=s["device"],
                         threads=s["threads"], seed=s["seed"])

    # -- where to start -------------------------------------------------------------------------------------------
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    done_epochs, start_batch = 0, 0
    partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "train_seconds": 0.0}
    initial_loss: float | None = None
    records: list[dict[str, Any]] = []
    state_name: str | None = None  # the state file checkpoint.json names in out_dir
    if ckpt is not None:
        rdir = Path(resume)
        npz = rdir / ckpt["state"]
        if _sha256(npz) != ckpt["state_sha256"]:
            raise TrainingError(f"cannot resume: {npz} does not belong to {rdir / 'checkpoint.json'} (its sha256 "
                                f"differs: changed or damaged since it was saved)")
        try:
            state = load_weights(npz, step.tg.graph)
        except WeightsError as e:
            raise TrainingError(f"cannot resume: the checkpoint does not fit this network and optimizer (other "
                                f"network parameters? give them with --set / params=): {e}") from None
        step.set_state({k: v for k, v in state.items() if step.tg.graph.params[k].data is None}, ckpt["steps"])
        done_epochs, start_batch = ckpt["epoch"], ckpt["batch"]
        if ckpt.get("per_epoch") not in (None, per_epoch) and start_batch:
            raise TrainingError("cannot resume in the middle of an epoch with another batch size or data")
        if start_batch:
            saved = ckpt.get("partial") or {}
            partial = {k: type(v)(saved.get(k, v)) for k, v in partial.items()}
        initial_loss = ckpt.get("initial_loss")
        records = _read_metrics(rdir / "metrics.jsonl", done_epochs)
    if out_dir is not None:
        _write_metrics(out_dir / "metrics.jsonl", records)
    last_good = (done_epochs if ckpt is not None and resume is not None and out_dir is not None
                 and Path(resume).resolve() == out_dir.resolve() else None)
    if last_good is not None and ckpt is not None:
        state_name = ckpt["state"]

    settings_json = {k: s[k] for k in DEFAULTS}
    if isinstance(settings_json["loss_weights"], dict):
        settings_json["loss_weights"] = dict(settings_json["loss_weights"])
    data_json = (data_source if data_source in (None, "digits") else os.path.abspath(data_source))

    def save_checkpoint(epoch_done: int, batch: int) -> None:
        nonlocal last_good, state_name
        if out_dir is None:
            return
        state = step.state()
        for k, v in state.items():
            if not np.all(np.isfinite(v)):
                raise TrainingError(f"training diverged by epoch {epoch_done + (1 if batch else 0)}, step "
                                    f"{step.steps}: '{k}' holds NaN or infinite values; "
                                    + _kept(out_dir, last_good, state_name))
        # 1. the state under a name of its own (never the one checkpoint.json names now), on disk before 2.
        name = f"checkpoint-{step.steps}.npz"
        if name == state_name:
            name = f"checkpoint-{step.steps}-{time.time_ns()}.npz"
        npz = out_dir / name
        save_weights(npz, state)  # written to a temporary name and moved into place
        _publish(npz)
        _fsync_file(npz)
        _fsync_dir(out_dir)
        meta = {"version": CHECKPOINT_VERSION, "network": graph.name, "spec": spec_path, "params": params,
                "data": data_json, "seed": s["seed"], "epoch": epoch_done, "batch": batch, "steps": step.steps,
                "per_epoch": per_epoch, "partial": dict(partial) if batch else None, "initial_loss": initial_loss,
                "settings": settings_json, "state": name, "state_sha256": _sha256(npz)}
        text = json.dumps(meta, indent=2, default=str) + "\n"
        # 2. checkpoint.json naming it replaces the old one in one move (synced): until then the old one, and the
        # state file it names, are the checkpoint
        _atomic_write(out_dir / "checkpoint.json", text.encode("utf-8"))
        state_name, last_good = name, epoch_done
        # 3. only now the older state files (and any a crash left between 1 and 2) go
        _remove_old_states(out_dir, keep=name)

    def evaluate(weights: dict[str, np.ndarray]):
        if val_set is None and test_set is None:
            return None, None, None
        options: dict[str, Any] = {}
        if backend_name != "reference":
            if s["threads"] is not None:
                options["threads"] = s["threads"]
            if backend_name == "onnx":
                options["device"] = s["device"]
        model = compile_net(Network(graph, weights), backend_name, dtype=s["dtype"], **options)

        def predict(ds: Dataset) -> np.ndarray:
            parts = []
            for i in range(0, len(ds), s["batch_size"]):
                res = model.run({input_name: np.asarray(ds.x[i:i + s["batch_size"]], s["dtype"])})
                parts.append(np.asarray(res[main]))
            return np.concatenate(parts)

        val_loss = val_acc = test_acc = None
        if val_set is not None:
            p = predict(val_set)
            val_loss = float(_eval_loss(p, val_set.y, kind, classes).mean())
            if classes is not None:
                val_acc = float((p.argmax(axis=1) == val_set.y).mean())
        if test_set is not None and classes is not None:
            p = predict(test_set)
            test_acc = float((p.argmax(axis=1) == test_set.y).mean())
        return val_loss, val_acc, test_acc

    if on_start is not None:
        on_start({"network": graph.name, "params": network.num_params(), "spec_params": dict(params),
                  "data": data_source or d.train.name, "train": n_train, "val": len(val_set) if val_set else 0,
                  "test": len(test_set) if test_set is not None else 0, "backend": backend_name,
                  "device": s["device"], "loss": kind, "outputs": [x.output for x in losses],
                  "steps_per_epoch": per_epoch, "epochs": s["epochs"], "first_epoch": done_epochs + 1,
                  "steps": step.steps, "settings": dict(settings_json)})

    # -- epochs ---------------------------------------------------------------------------------------------------
    stopped = False
    lr_now = sched(min(step.steps, max(total_steps - 1, 0)))
    for epoch in range(done_epochs + 1, s["epochs"] + 1):
        t_epoch = time.perf_counter()
        order = np.random.default_rng(_stream(STREAM_ORDER, s["seed"], epoch)).permutation(n_train)
        first = start_batch if epoch == done_epochs + 1 else 0
        if first == 0:
            partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "train_seconds": 0.0}
        bar = _progress_bar(per_epoch, f"epoch {epoch}/{s['epochs']}", progress)
        if bar is not None and first:
            bar.update(first)
        t_train = time.perf_counter()
        b = first
        try:
            for b in range(first, per_epoch):
                if max_steps is not None and step.steps >= max_steps:
                    stopped = True
                    break
                idx = order[b * s["batch_size"]:(b + 1) * s["batch_size"] if b < per_epoch - 1 else n_train]
                x = train_set.x[idx]
                y = train_set.y[idx]
                bad = _first_not_finite(x, None if classification else y)
                if bad is not None:
                    raise TrainingError(f"epoch {epoch}, step {step.steps + 1}: the batch holds NaN or infinite "
                                        f"values (training sample {int(idx[bad])} of {train_set.name}); "
                                        + _kept(out_dir, last_good, state_name))
                if s["augment"]:
                    rng = np.random.default_rng(_stream(STREAM_AUG, s["seed"], epoch, b))
                    x = augment_batch(np.asarray(x, s["dtype"]), s["augment"], rng)
                lr_now = sched(min(step.steps, max(total_steps - 1, 0)))
                result = step.run({input_name: x}, _targets(y, losses, classes, s["dtype"]), lr_now)
                loss_v = result.loss
                if initial_loss is None and math.isfinite(loss_v):
                    initial_loss = loss_v
                limit = DIVERGENCE_FACTOR * max(initial_loss or 1.0, 1.0)
                if not math.isfinite(loss_v) or loss_v > limit:
                    what = (f"the loss is {loss_v}" if not math.isfinite(loss_v) else
                            f"the loss exploded to {loss_v:.4g} (over {DIVERGENCE_FACTOR:g} times the first, "
                            f"{initial_loss:.4g})")
                    raise TrainingError(f"training diverged at epoch {epoch}, step {step.steps}: {what}; "
                                        + _kept(out_dir, last_good, state_name) + f"; try a lower learning rate (was "
                                        f"{lr_now:.4g})")
                partial["loss_sum"] += loss_v * len(idx)
                partial["seen"] += len(idx)
                if classes is not None:
                    partial["correct"] += int((result.outputs[main].argmax(axis=1) == y).sum())
                if bar is not None:
                    seconds = partial["train_seconds"] + time.perf_counter() - t_train
                    bar.set_postfix_str(f"loss {partial['loss_sum'] / partial['seen']:.4f}, "
                                        f"{partial['seen'] / max(seconds, 1e-9):,.0f} samples/s", refresh=False)
                    bar.update(1)
            else:
                b = per_epoch
        finally:
            if bar is not None:
                bar.close()
        partial["train_seconds"] += time.perf_counter() - t_train
        if partial["seen"] == 0:
            break  # max_steps reached right at an epoch boundary: nothing of this epoch was trained
        weights = step.weights()
        if not all(np.all(np.isfinite(v)) for v in weights.values()):
            raise TrainingError(f"training diverged at epoch {epoch}, step {step.steps}: the weights hold NaN or "
                                f"infinite values; " + _kept(out_dir, last_good, state_name))
        val_loss, val_acc, test_acc = evaluate(weights)
        record = {"epoch": epoch, "step": step.steps, "lr": lr_now,
                  "train_loss": partial["loss_sum"] / partial["seen"],
                  "train_acc": partial["correct"] / partial["seen"] if classes is not None else None,
                  "val_loss": val_loss, "val_acc": val_acc, "test_acc": test_acc,
                  "seconds": time.perf_counter() - t_epoch,
                  "samples_per_second": partial["seen"] / max(partial["train_seconds"], 1e-9)}
        finished = b >= per_epoch
        records.append(record)
        if out_dir is not None:
            save_checkpoint(epoch if finished else epoch - 1, 0 if finished else b)
            _write_metrics(out_dir / "metrics.jsonl", records)
        if on_epoch is not None:
            on_epoch(dict(record))
        if stopped or not finished:
            break

    final = step.weights()
    trained = Network(graph, {**network.weights, **final})
    if out_dir is not None:
        save_weights(out_dir / "weights.npz", final)
        _publish(out_dir / "weights.npz")
        if records:
            msg = _plot(out_dir / "plot.png", records)
            if msg:
                note(msg)
    return History(records, trained, out_dir, step.steps, backend_name,
                   {**settings_json, "spec": spec_path, "params": params, "data": data_json}, notes,
                   time.perf_counter() - t_start)


def _kept(out_dir: Path | None, last_good: int | None, state_name: str | None) -> str:
    if out_dir is None:
        return "nothing was saved (no run directory)"
    if last_good is None:
        return f"no checkpoint had been written yet in {out_dir}"
    where = f"{out_dir / 'checkpoint.json'} with {state_name}"
    if last_good == 0:
        return f"the last good checkpoint ({where}, before the first epoch ended) was kept"
    return f"the last good checkpoint ({where}, epoch {last_good}) was kept"


def _remove_old_states(out_dir: Path, keep: str) -> None:
    """Delete the state files in `out_dir` other than `keep`: the ones older checkpoints named, ones a crash left
    before checkpoint.json named them, a version 1 checkpoint.npz."""
    for p in out_dir.iterdir():
        if p.name != keep and (STATE_NAME.fullmatch(p.name) or p.name == LEGACY_STATE) and p.is_file():
            try:
                p.unlink()
            except OSError:
                pass


def step_schedule_size(total_steps: int, warmup: int) -> int:
    """The steps between two decays of the `step` schedule: a third of the steps after the warm-up (rounded up, so
    the run has three stretches: lr, lr/10 and lr/100)."""
    return max(1, -(-(total_steps - warmup) // 3))
