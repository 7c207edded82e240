"""The command line: `graphconv COMMAND ...` (docs/cli.md describes every command and option).

    check SPEC...            fmt SPEC... [--check|--diff]     summary SPEC [--json]
    viz SPEC|MODEL.onnx -o OUT.html|OUT.svg                   run SPEC|MODEL.onnx [--backend B] [--image IMG]
    compile SPEC [-O LEVEL] [--target T] [--pass-log]         export-onnx SPEC -o M.onnx    import-onnx M.onnx -o S.gc
    train SPEC --data DATA    plot RUN_DIR    filters W.npz --layer L    featuremaps SPEC --image IMG
    bench [MODEL...]

Verbs live here or beside what they drive (`_VERB_MODULES`: viz, fmt, the picture commands); each gets examples
at the end of its --help (`EXAMPLES`, or the module's own epilog), which docs/cli.md repeats and the tests run.

Exit status: 0 success; 1 a problem with the user's input (a spec, weights, arrays, files: the message, no
traceback); 2 wrong usage of the command; 3 an internal error (a bug: please report it). `--debug` shows
tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Sequence

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


# -- argument parsing -----------------------------------------------------------------------------------------------

def _set_arg(text: str) -> tuple[str, Any]:
    """`--set k=v`: a network parameter and its value, parsed as the spec language writes literals."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. --set num_classes=10), got {text!r}")
    from .spec import parse_value

    try:
        return key, parse_value(raw.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--set {key}: {e}") from None


def _whole(minimum: int, too_small: str):
    """An argparse type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{too_small}, got {v}")
        return v

    return parse


_positive_int = _whole(1, "must be at least 1")
_seed = _whole(0, "must be >= 0")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors")
    sets = argparse.ArgumentParser(add_help=False)
    sets.add_argument("--set", dest="sets", metavar="NAME=VALUE", type=_set_arg, action="append", default=[],
                      help="set a network parameter (repeatable), e.g. --set num_classes=10")

    parser = argparse.ArgumentParser(prog="graphconv", parents=[common], formatter_class=_HelpFormatter,
                                     description="A declarative graph compiler and runtime for CNNs.",
                                     epilog="examples:\n"
                                            "  graphconv check specs/resnet50.gc\n"
                                            "  graphconv run specs/resnet18.gc --backend llvm\n"
                                            "  graphconv COMMAND --help         # every command's options and examples\n\n"
                                            "exit status: 0 success, 1 a problem with the input (spec, weights, "
                                            "files), 2 wrong usage,\n3 an internal error (a bug). "
                                            "--debug shows tracebacks. Documentation: docs/cli.md")
    parser.add_argument("--version", action="version", version=f"graphconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("check", parents=[common, sets], help="check specs completely, reporting every error",
                       description="Check specs; print 'ok' per valid spec, every located error otherwise.")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--json", action="store_true",
                   help="print one JSON record per spec: ok, network, nodes, params, or its located errors")

    p = sub.add_parser("summary", parents=[common, sets], help="the layer table of a network",
                       description="Per layer: name, op, output shape, parameters, MACs, receptive field.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true", help="print the table as JSON")

    p = sub.add_parser("run", parents=[common, sets], help="run a forward pass",
                       description="Run a forward pass (on a random seeded standard normal input when none is "
                                   "given) and print each output's shape and statistics.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--weights", metavar="W.npz", help="weights file (default: initializers seeded with --seed)")
    p.add_argument("--input", dest="inputs", metavar="NAME=FILE.npy", action="append", default=[],
                   help="an input array (repeatable); NAME= may be left out when the network has one input")
    p.add_argument("--output", metavar="FILE", help="save the output (.npy), or all outputs (.npz)")
    p.add_argument("--batch", type=_positive_int, default=None, metavar="N",
                   help="batch size of random inputs (default 1)")
    p.add_argument("--seed", type=_seed, default=0, metavar="S", help="seed of the weights and random inputs")
    p.add_argument("--backend", default="reference",
                   help="backend: reference (default, numpy), llvm (native code) or onnx (onnxruntime)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="device of the onnx backend (default cpu); cuda needs a GPU build of onnxruntime")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="T",
                   help="threads of the llvm and onnx backends (default: the number of cores)")
    p.add_argument("-O", dest="opt_level", type=int, default=None, choices=(0, 1, 2, 3), metavar="LEVEL",
                   help="optimization level of the llvm backend (default 3)")
    _target_args(p)
    from .imaging.command import add_run_arguments  # --image, --labels, --top, --resize, --normalize, --json

    add_run_arguments(p)

    from .onnx.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET

    p = sub.add_parser("export-onnx", parents=[common, sets], help="export a network to ONNX",
                       description="Export a network with its weights to an ONNX model (standard ops only). Models "
                                   "over 2 GiB keep their weights in MODEL.onnx.data next to the model.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="the model file to write")
    p.add_argument("--weights", metavar="W.npz", help="weights file (default: initializers seeded with --seed)")
    p.add_argument("--seed", type=_seed, default=0, metavar="S", help="seed of the initial weights")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    p.add_argument("-O", dest="opt_level", type=int, default=0, choices=(0, 1, 2, 3), metavar="LEVEL",
                   help="optimize first (default 0: the graph as written); fused ops export as standard ONNX ops")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="element type of the model (default: the spec's)")

    p = sub.add_parser("compile", parents=[common, sets], help="optimize a network and show what the passes did",
                       description="Run the optimizer on a network: -O0 (nothing) to -O3. --pass-log prints one "
                                   "line per pass saying what fired and how often.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-O", dest="opt_level", type=int, default=2, choices=(0, 1, 2, 3), metavar="LEVEL",
                   help="optimization level 0-3 (default 2)")
    p.add_argument("--training", action="store_true",
                   help="optimize for training: batchnorm statistics and dropout stay")
    p.add_argument("--target", choices=("reference", "onnx", "llvm", "llvm-aot"), default="reference",
                   help="the backend to optimize for (llvm at -O3 adds the blocked NCHW16c layout); llvm also "
                        "compiles native code (into the compile cache), llvm-aot writes an object file, C header "
                        "and weights for a C program into the folder given by -o")
    p.add_argument("--name", metavar="IDENT", default=None,
                   help="llvm-aot: the C name prefix of the entry point and files (default: from the network)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="llvm, llvm-aot: the float type of the native code")
    p.add_argument("--no-cache", action="store_true", help="llvm: compile again even when the cache has the code")
    p.add_argument("--emit-llvm", metavar="OUT.ll", default=None,
                   help="llvm, llvm-aot: write the optimized LLVM IR of the whole network")
    _target_args(p)
    p.add_argument("--passes", metavar="P1,P2", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                   help="run these passes, in this order, instead of a level's pipeline")
    p.add_argument("--pass-log", action="store_true", help="one line per pass: what fired and how often")
    p.add_argument("--json", action="store_true",
                   help="print a JSON report instead: every pass with what it did and its time, the node counts, "
                        "and what the native build made")
    p.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass")
    p.add_argument("--print-ir-after", metavar="PASS", action="append", default=[],
                   help="print the IR after this pass (repeatable)")
    p.add_argument("--print-ir", action="store_true", help="print the optimized IR")
    p.add_argument("--verify-passes", action="store_true",
                   help="run the reference executor before and after every pass on random inputs and name the "
                        "first pass that changed the result")
    p.add_argument("--verify-ir", action="store_true", help="run the IR verifier after every pass (also with --debug)")
    p.add_argument("--weights", metavar="W.npz", help="weights file (default: initializers seeded with --seed)")
    p.add_argument("--seed", type=_seed, default=0, metavar="S", help="seed of the weights and random inputs")
    p.add_argument("-o", "--output", metavar="OUT.json|OUTDIR",
                   help="write the optimized IR as JSON (and its weights to OUT.npz)")

    p = sub.add_parser("bench", parents=[common], help="time the llvm backend beside onnxruntime",
                       description="Time graphconv's llvm backend and onnxruntime side by side on zoo models "
                                   "(median of alternating rounds) and print the ratio.")
    from .bench import add_arguments as bench_arguments

    bench_arguments(p)

    _train_parser(sub, common, sets)

    p = sub.add_parser("import-onnx", parents=[common], help="import an ONNX model as a spec and weights",
                       description="Import an ONNX model (e.g. exported by PyTorch): writes a readable spec OUT.gc "
                                   "and its weights OUT.npz. `graphconv run MODEL.onnx` also runs a model directly.")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT.gc", help="the spec to write (weights: OUT.npz)")

    for module in _verb_modules():
        module.add_parsers(sub, common, sets)
    for name, p in sub.choices.items():  # every verb's --help ends with examples
        p.formatter_class = _HelpFormatter
        if name in EXAMPLES:
            p.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
    # `graphconv --help` lists the commands in the order of work (docs/cli.md), not the order they were added
    sub._choices_actions.sort(key=lambda a: VERB_ORDER.index(a.dest) if a.dest in VERB_ORDER else len(VERB_ORDER))
    return parser


VERB_ORDER = ["check", "fmt", "summary", "viz", "run", "compile", "export-onnx", "import-onnx", "train", "plot",
              "filters", "featuremaps", "bench"]


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def _nonnegative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return v


TRAIN_EXAMPLES = """\
examples:
  graphconv train specs/lenet5.gc --data digits --out runs/lenet
  graphconv train --resume runs/lenet --epochs 40        # continue a run (its settings unless given)
  graphconv train specs/cifar_cnn.gc --data cifar.npz --augment crop:4,flip --optimizer adamw --epochs 2 --backend onnx
  graphconv run specs/lenet5.gc --weights runs/lenet/weights.npz

DATA is 'digits' (bundled with scikit-learn), a folder of MNIST-format IDX files, or an .npz file with x, y
(and optionally x_test, y_test). Unset options take the defaults shown, or the checkpoint's settings with --resume.
See docs/training.md.
"""


def _train_parser(sub, common, sets) -> None:
    from .train.loop import DEFAULTS, FALLBACK_BACKEND

    d = DEFAULTS
    p = sub.add_parser("train", parents=[common, sets], help="train a network (writes a run directory)",
                       description="Train a network on a dataset: mini-batch SGD/Adam/AdamW with a learning-rate "
                                   "schedule, validation after every epoch, a resumable checkpoint and the trained "
                                   "weights in the run directory (--out).",
                       epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC", nargs="?", default=None,
                   help="the network spec (with --resume: default the checkpoint's)")
    p.add_argument("--data", metavar="DATA", default=None,
                   help="digits, a folder of MNIST IDX files or an .npz file (with --resume: default the "
                        "checkpoint's)")
    p.add_argument("--epochs", type=_positive_int, default=None, metavar="E",
                   help=f"epochs of the whole run (default {d['epochs']})")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                   help=f"mini-batch size (default {d['batch_size']}; the last, smaller batch is kept)")
    p.add_argument("--lr", type=_positive_float, default=None, metavar="LR",
                   help=f"base learning rate (default {d['lr']})")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None,
                   help=f"update rule (default {d['optimizer']})")
    p.add_argument("--momentum", type=_fraction, default=None, metavar="M",
                   help=f"sgd momentum (default {d['momentum']})")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help="sgd: Nesterov momentum (default on)")
    p.add_argument("--weight-decay", type=_nonnegative_float, default=None, metavar="WD",
                   help="L2 weight decay (default 5e-4 for sgd and adam, 0.01 for adamw, decoupled)")
    p.add_argument("--schedule", choices=("constant", "step", "cosine"), default=None,
                   help=f"learning-rate schedule (default {d['schedule']}; step: x0.1 after each third of the run)")
    p.add_argument("--warmup", type=_whole(0, "must be >= 0"), default=None, metavar="N",
                   help="optimizer steps of linear warm-up (default 0)")
    p.add_argument("--label-smoothing", type=_fraction, default=None, metavar="S",
                   help="cross-entropy label smoothing (default 0.1)")
    p.add_argument("--augment", metavar="crop:4,flip", default=None,
                   help="augment training images: random crop after zero padding, random horizontal flip "
                        "(default none)")
    p.add_argument("--backend", choices=("llvm", "reference", "onnx"), default=None,
                   help=f"where the training step runs (default llvm; {FALLBACK_BACKEND} when this build's llvm "
                        f"backend cannot train)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="cpu (default) or cuda (with --backend onnx and a GPU build of onnxruntime)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="T",
                   help="threads of the llvm and onnx backends (default: the number of cores)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None, help="element type (default float32)")
    p.add_argument("--out", metavar="RUN_DIR", default=None,
                   help="run directory: metrics.jsonl, plot.png, checkpoint.json and its checkpoint-STEPS.npz, "
                        "weights.npz")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its checkpoint (writes there unless --out is given)")
    p.add_argument("--seed", type=_seed, default=None, metavar="S",
                   help=f"seed of weights, validation split, batch order, augmentation, dropout (default {d['seed']})")
    p.add_argument("--val-fraction", type=_fraction, default=None, metavar="F",
                   help=f"share of the training data held out for validation, per class (default "
                        f"{d['val_fraction']}; 0: none)")
    p.add_argument("--max-steps", type=_positive_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the run's history as JSON at the end")
    _add_plot(sub, common)


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions to the terminal; keeps text with line breaks (the examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


# The examples at the end of each verb's --help (verbs defined in other modules bring their own epilog).
# tests/test_cli_help.py runs every one of them.
EXAMPLES: dict[str, list[str]] = {
    "check": ["graphconv check specs/*.gc",
              "graphconv check examples/mistakes.gc          # exit 1, every error with path:line:col",
              "graphconv check specs/resnet50.gc --set num_classes=10 --json"],
    "summary": ["graphconv summary specs/resnet50.gc",
                "graphconv summary specs/googlenet.gc --set aux_logits=true --json"],
    "run": ["graphconv run specs/resnet18.gc --backend llvm --threads 2",
            "graphconv run specs/lenet5.gc --batch 8 --output logits.npy",
            "graphconv run specs/lenet5.gc --input image=digit.npy --json",
            "graphconv run specs/lenet5.gc --weights runs/lenet/weights.npz --image examples/digits/digit-3.png "
            "--labels examples/digits/labels.txt"],
    "export-onnx": ["graphconv export-onnx specs/resnet18.gc -o resnet18.onnx",
                    "graphconv export-onnx specs/resnet50.gc -o resnet50-fused.onnx -O2 --set num_classes=10"],
    "compile": ["graphconv compile specs/resnet50.gc -O2 --pass-log",
                "graphconv compile specs/resnet18.gc --target llvm -O3 --json",
                "graphconv compile specs/resnet18.gc --target llvm-aot -O3 --name model -o build"],
    "bench": ["graphconv bench lenet5 --batch 1 --min-time 0.5",
              "graphconv bench resnet18 --batch 1,8 --threads 2 --json",
              "graphconv bench --train"],
    "import-onnx": ["graphconv import-onnx resnet18.onnx -o imported.gc   # also writes imported.npz",
                    "graphconv run imported.gc --weights imported.npz"],
}


# Verbs defined beside the code they drive. Each module has `add_parsers(sub, common, sets)`, which adds its
# subcommands, and `VERBS`, a dict from each subcommand's name to its function `(args) -> exit status`.
_VERB_MODULES = (
    "graphconv.viz.command",
    "graphconv.imaging.command",
    "graphconv.spec.fmt",
)


def _verb_modules():
    from importlib import import_module

    return [import_module(name) for name in _VERB_MODULES]


def _add_plot(sub, common) -> None:
    p = sub.add_parser("plot", parents=[common], help="redraw a training run's loss and accuracy curves",
                       description="Draw the loss and accuracy curves of a run directory (from its metrics.jsonl) "
                                   "as a PNG picture; needs matplotlib (pip install 'graphconv[plot]').",
                       epilog="examples:\n  graphconv plot runs/lenet            # writes runs/lenet/plot.png\n"
                              "  graphconv plot runs/lenet -o curves.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of graphconv train (--out)")
    p.add_argument("-o", "--output", metavar="OUT.png", default=None, help="where to write (default RUN_DIR/plot.png)")


def cmd_plot(args) -> int:
    from .train.loop import plot_run

    print(f"wrote {plot_run(args.run_dir, args.output)}")
    return 0


def _target_args(p) -> None:
    p.add_argument("--target-cpu", metavar="CPU", default=None,
                   help="llvm: the CPU to generate code for, e.g. skylake-avx512, znver3, x86-64-v3 (default: "
                        "this machine's)")
    p.add_argument("--target-features", metavar="+F,-G", default=None,
                   help="llvm: CPU features to add or remove, e.g. -avx512f (default: the CPU's)")


# -- commands -------------------------------------------------------------------------------------------------------

def _params(args) -> dict[str, Any]:
    return dict(args.sets)


def _load(args, path: str, *, weights: bool = True):
    """(graph, weights) of a spec or of an ONNX model. A model brings its own weights; a spec's come from --weights
    or from its initializers seeded with --seed. With weights=False only the graph is made."""
    from .errors import GraphconvError
    from .weights import init_weights, load_weights

    if path.lower().endswith(".onnx"):
        if _params(args):
            raise GraphconvError("--set applies to specs, not to ONNX models")
        from .onnx.importer import import_onnx

        graph, w = import_onnx(path)
        if weights and getattr(args, "weights", None):
            w = load_weights(args.weights, graph)
        return graph, w
    from .spec import load_graph

    graph = load_graph(path, _params(args) or None)
    if not weights:
        return graph, None
    return graph, (load_weights(args.weights, graph) if args.weights else init_weights(graph, args.seed))


def cmd_check(args) -> int:
    from .errors import GraphconvError

    failed = False
    records = []
    for path in args.specs:
        try:
            graph, _ = _load(args, path, weights=False)
        except GraphconvError as e:
            failed = True
            if args.json:
                records.append({"path": path, "ok": False, "errors": _error_records(e)})
            else:
                _err(str(e) if _is_spec_error(e) else f"error: {e}")
            continue
        if args.json:
            records.append({"path": path, "ok": True, "network": graph.name, "nodes": len(graph.nodes),
                            "params": graph.num_params()})
        else:
            print(f"ok: {path} (network {graph.name}, {len(graph.nodes)} nodes, {graph.num_params():,} params)")
    if args.json:
        print(json.dumps(records, indent=2))
    return EXIT_USER if failed else EXIT_OK


def _error_records(e: BaseException) -> list[dict[str, Any]]:
    """A located error as JSON records: one per diagnostic of a SpecError, else one with the message."""
    diagnostics = getattr(e, "diagnostics", None)
    if not diagnostics:
        return [{"severity": "error", "message": str(e)}]
    out = []
    for d in diagnostics:
        rec: dict[str, Any] = {"severity": d.severity, "message": d.message}
        if d.loc is not None:
            rec.update(path=d.loc.path, line=d.loc.line, col=d.loc.col)
        if d.hint:
            rec["hint"] = d.hint
        if d.notes:
            rec["notes"] = [{"path": loc.path, "line": loc.line, "col": loc.col, "message": text}
                            for loc, text in d.notes]
        out.append(rec)
    return out


def cmd_summary(args) -> int:
    from .summary import format_summary, summarize

    graph, _ = _load(args, args.spec, weights=False)
    d = summarize(graph)
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(format_summary(d))
    return EXIT_OK


def _load_npy(path: str, what: str):
    import numpy as np

    from .errors import InputError

    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:  # object arrays, bad headers
        raise InputError(f"{what}: '{path}' is not a plain .npy array: {e}") from None
    except OSError as e:
        raise InputError(f"{what}: cannot read '{path}': {e.strerror or e}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise InputError(f"{what}: '{path}' is an .npz archive; give one array saved with np.save (.npy)")
    return arr


def _gather_inputs(args, graph) -> dict[str, Any]:
    from .errors import InputError

    names = [v.name for v in graph.inputs]
    given: dict[str, Any] = {}
    for text in args.inputs:
        name, sep, file = text.partition("=")
        if sep and name in names:
            pass
        elif len(names) == 1 and not (sep and name.isidentifier()):
            name, file = names[0], text  # the one input, and a file name that may hold '='
        else:
            raise InputError(f"--input {text!r}: " + (f"{graph.name} has no input '{name}'" if sep else
                                                      "give NAME=FILE.npy")
                             + f"; its inputs: {', '.join(names)}")
        if name in given:
            raise InputError(f"--input: '{name}' is given twice")
        given[name] = _load_npy(file, f"input '{name}'")
    return given


def _random_inputs(graph, given: dict[str, Any], batch: int | None, seed: int, dtype: str,
                   notes: list[str]) -> dict[str, Any]:
    import numpy as np

    if batch is None:
        batch = next((int(a.shape[0]) for a in given.values() if getattr(a, "ndim", 0) >= 1), 1)
    from .errors import InputError

    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        if v.name in given:
            continue
        shape = v.type.concrete(batch)
        size = v.type.numel(batch) * np.dtype(dtype).itemsize
        if size > MAX_RANDOM_INPUT_BYTES:
            raise InputError(f"a random input {v.name} of {list(shape)} {dtype} would take {size / 2**30:,.1f} GiB "
                             f"(at most {MAX_RANDOM_INPUT_BYTES / 2**30:.0f} GiB); choose a smaller --batch")
        out[v.name] = rng.standard_normal(shape).astype(dtype)  # float64 draws: the same numbers in either dtype
        notes.append(f"input {v.name}: random standard normal {list(shape)} (seed {seed})")
    return out


MAX_RANDOM_INPUT_BYTES = 1 << 32  # what `run` allocates for random inputs before it starts


def _stats_lines(name: str, y) -> list[str]:
    import numpy as np

    lines = [f"output {name}: shape {list(y.shape)} {y.dtype}"]
    if y.size:
        finite = np.isfinite(y)
        lines.append(f"  mean {float(np.mean(y)):.6g}  std {float(np.std(y)):.6g}  min {float(np.min(y)):.6g}  "
                     f"max {float(np.max(y)):.6g}" + ("" if finite.all() else
                                                      f"  ({int(y.size - finite.sum())} non-finite)"))
    if y.ndim == 2 and y.shape[1] > 1 and y.size:
        k = min(5, y.shape[1])
        for i in range(min(y.shape[0], 4)):
            top = np.argsort(-y[i], kind="stable")[:k]
            lines.append(f"  top-{k} sample {i}: " + ", ".join(f"{int(c)} ({float(y[i, c]):.4g})" for c in top))
        if y.shape[0] > 4:
            lines.append(f"  ... {y.shape[0] - 4} more samples")
    return lines


def _save_outputs(path: str, outputs: dict[str, Any]) -> None:
    import numpy as np

    from .errors import GraphconvError
    from .weights import save_weights

    if path.endswith(".npz"):
        save_weights(path, outputs)
        return
    if len(outputs) > 1:
        raise GraphconvError(f"the network has {len(outputs)} outputs ({', '.join(outputs)}); give an --output "
                             f"file ending in .npz to save them all")
    (y,) = outputs.values()
    with open(path, "wb") as fh:
        np.save(fh, y, allow_pickle=False)


def cmd_run(args) -> int:
    from .network import Network, compile

    graph, weights = _load(args, args.spec)
    given = _gather_inputs(args, graph)
    from .imaging.command import image_run

    classes = image_run(args, graph, given)  # --image (into `given`), --labels, --top, --json; None for a plain run
    net = Network(graph, weights)
    options: dict[str, Any] = {}
    if args.threads is not None:
        options["threads"] = args.threads
    if args.backend == "llvm":
        options.update(opt_level=3 if args.opt_level is None else args.opt_level, target_cpu=args.target_cpu,
                       target_features=args.target_features)
    else:
        from .errors import GraphconvError

        used = [flag for flag, v in (("-O", args.opt_level), ("--target-cpu", args.target_cpu),
                                     ("--target-features", args.target_features)) if v is not None]
        if used:
            raise GraphconvError(f"{', '.join(used)} apply to --backend llvm")
        if args.threads is not None and args.backend != "onnx":
            raise GraphconvError("--threads applies to the llvm and onnx backends")
    model = compile(net, args.backend, dtype=args.dtype, device=args.device, **options)
    notes: list[str] = []
    inputs = {**given, **_random_inputs(graph, given, args.batch, args.seed, args.dtype, notes)}
    outputs = model.run(inputs)
    if classes is not None:
        return classes.report(outputs)  # the top classes per picture or sample (or --json)
    source = (f"weights {args.weights}" if args.weights else "the model's weights"
              if args.spec.lower().endswith(".onnx") else f"initial weights (seed {args.seed})")
    print(f"network {graph.name}: {graph.num_params():,} params, backend {args.backend}, {args.dtype}, {source}")
    notes = [f"input {k}: {list(a.shape)} {a.dtype} from file" for k, a in given.items()] + notes
    for line in notes:
        print(line)
    for name, y in outputs.items():
        print("\n".join(_stats_lines(name, y)))
    if args.output:
        _save_outputs(args.output, outputs)
        print(f"saved {', '.join(outputs)} to {args.output}")
    return EXIT_OK


def cmd_export_onnx(args) -> int:
    from .network import Network
    from .onnx.export import export_onnx

    graph, weights = _load(args, args.spec)
    net = Network(graph, weights)
    if args.opt_level:
        from .passes import optimize

        net, _ = optimize(net, args.opt_level)
    model = export_onnx(net, args.output, opset=args.opset, dtype=args.dtype)
    external = any(t.data_location == 1 for t in model.graph.initializer)
    print(f"wrote {args.output}: network {graph.name}, {len(model.graph.node)} ONNX nodes, opset {args.opset}, "
          f"{net.graph.num_params():,} params"
          + (f" (weights in {os.path.basename(args.output)}.data)" if external else "")
          + ("" if args.weights else f", initial weights (seed {args.seed})"))
    return EXIT_OK


def cmd_compile(args) -> int:
    from .errors import GraphconvError
    from .ir.printer import print_graph
    from .network import Network
    from .passes import optimize, registry

    known = registry()
    for name in args.print_ir_after:
        if name not in known:
            raise GraphconvError(f"--print-ir-after: unknown pass '{name}'; passes: {', '.join(known)}")

    def after(p, result, program):
        if args.print_ir_after_all or p.name in args.print_ir_after:
            print(f"// IR after {p.name} ({result.line()})")
            print(print_graph(program.graph))

    if args.json:
        printing = [flag for flag, v in (("--print-ir", args.print_ir), ("--print-ir-after-all", args.print_ir_after_all),
                                         ("--print-ir-after", args.print_ir_after)) if v]
        if printing:
            raise GraphconvError(f"{', '.join(printing)} print IR text; leave out --json to see it")
    report: dict[str, Any] = {}
    say = (lambda *a: None) if args.json else print  # with --json, the report replaces the text lines
    graph, weights = _load(args, args.spec)
    native = args.target in ("llvm", "llvm-aot")
    if args.target == "llvm-aot" and not args.output:
        raise GraphconvError("--target llvm-aot needs -o OUTDIR, the folder to write the object file, header and "
                             "weights into")
    if not native:
        used = [flag for flag, v in (("--target-cpu", args.target_cpu), ("--target-features", args.target_features),
                                     ("--name", args.name), ("--emit-llvm", args.emit_llvm)) if v is not None]
        used += ["--no-cache"] if args.no_cache else []
        if used:
            raise GraphconvError(f"{', '.join(used)} apply to --target llvm and llvm-aot")
    before = len(graph.nodes)
    if native:  # the optimizer folds in float64 and stores in the weights' precision: the build's
        weights = {k: v.astype(args.dtype, copy=False) for k, v in weights.items()}
    net, log = optimize(Network(graph, weights), args.opt_level, training=args.training,
                        target="llvm" if native else args.target,
                        passes=args.passes,
                        verify_ir=args.verify_ir or getattr(args, "debug", False), verify_passes=args.verify_passes,
                        after=after, seed=args.seed)
    if args.pass_log:
        for record in log:
            say(record.line())
    if args.print_ir:
        print(print_graph(net.graph))
    what = "training" if args.training else "inference"
    how = f"with {','.join(args.passes)}" if args.passes else f"at -O{args.opt_level}"
    say(f"compiled {net.graph.name} {how} ({what}): {before} -> {len(net.graph.nodes)} nodes, "
        f"{len(log)} passes" + (", every pass verified on the reference executor" if args.verify_passes else ""))
    report.update(network=net.graph.name, level=None if args.passes else args.opt_level, mode=what, target=args.target, nodes_before=before,
                  nodes_after=len(net.graph.nodes), verified=bool(args.verify_passes),
                  passes=[{"name": r.name, "changed": r.result.changed, "counts": dict(r.result.counts),
                           "notes": list(r.result.notes), "seconds": round(r.seconds, 6)} for r in log])
    status = _compile_native(args, net, say, report) if native else EXIT_OK
    if not native and args.output:
        report["files"] = _write_optimized(args.output, net, say)
    if args.json:
        print(json.dumps(report, indent=2))
    return status


def _write_optimized(path: str, net, say=print) -> list[str]:
    """The optimized graph as JSON at `path` and its weights next to it (.npz); returns the two paths."""
    from .ir.serialize import dumps
    from .weights import save_weights

    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dumps(net.graph))
    weights_path = os.path.splitext(path)[0] + ".npz"
    save_weights(weights_path, net.weights)
    say(f"wrote {path} and {weights_path}")
    return [path, weights_path]


def _compile_native(args, net, say=print, report: dict[str, Any] | None = None) -> int:
    """compile --target llvm / llvm-aot: native code for the optimized network `net`; what it made goes into
    `report` (compile --json)."""
    report = {} if report is None else report
    import time

    from .llvm.compiler import compile_graph
    from .llvm.target import Target

    target = Target.host(args.target_cpu, args.target_features)
    if args.target == "llvm-aot":
        from .llvm.aot import write_aot

        t0 = time.perf_counter()
        res = write_aot(net, args.output, opt_level=args.opt_level, dtype=args.dtype, target=target, name=args.name,
                        optimized=True, emit_llvm=args.emit_llvm)
        took = time.perf_counter() - t0
        say(f"native code for {target.describe()}: {res.layout.kernels} kernels for {res.layout.layers} layers, "
            f"{took:.2f} s")
        for path in res.files:
            say(f"wrote {path} ({path.stat().st_size:,} bytes)")
        report["native"] = {"target": target.describe(), "kernels": res.layout.kernels, "layers": res.layout.layers,
                            "seconds": round(took, 3),
                            "files": [{"path": str(p), "bytes": p.stat().st_size} for p in res.files]}
        return EXIT_OK
    t0 = time.perf_counter()
    compiled = compile_graph(net.graph, net.weights, dtype=args.dtype, target=target,
                             use_cache=not args.no_cache, keep_ir=bool(args.emit_llvm))
    took = time.perf_counter() - t0
    lay = compiled.layout
    say(f"native code for {target.describe()}: {lay.kernels} kernels for {lay.layers} layers, "
        f"{len(compiled.object_code):,} bytes of machine code, weights {lay.blob_bytes:,} bytes, arena "
        f"{lay.arena_per_sample:,} bytes per sample; "
        + ("from the cache" if compiled.cached else f"compiled in {took:.2f} s"))
    report["native"] = {"target": target.describe(), "kernels": lay.kernels, "layers": lay.layers,
                        "machine_code_bytes": len(compiled.object_code), "weights_bytes": lay.blob_bytes,
                        "arena_bytes_per_sample": lay.arena_per_sample, "cached": compiled.cached,
                        "seconds": round(took, 3)}
    if args.emit_llvm:
        with open(args.emit_llvm, "w", encoding="utf-8") as fh:
            fh.write(compiled.llvm_ir or "")
        say(f"wrote {args.emit_llvm}")
        report["files"] = [args.emit_llvm]
    if args.output:
        report["files"] = report.get("files", []) + _write_optimized(args.output, net, say)
    return EXIT_OK


def cmd_bench(args) -> int:
    from .bench import run

    return run(args)


def cmd_import_onnx(args) -> int:
    from .onnx.importer import import_onnx
    from .spec.writer import write_spec
    from .weights import save_weights

    graph, weights = import_onnx(args.model)
    out = args.output
    weights_path = os.path.splitext(out)[0] + ".npz"
    text = write_spec(graph)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    save_weights(weights_path, weights)
    print(f"wrote {out} and {weights_path}: network {graph.name}, {len(graph.nodes)} layers, "
          f"{graph.num_params():,} params")
    print(f"run it with: graphconv run {out} --weights {weights_path}")
    return EXIT_OK


def cmd_train(args) -> int:
    import time

    from .errors import GraphconvError
    from .train.loop import fit

    if args.spec is None and args.resume is None:
        raise GraphconvError("give the SPEC of the network to train (or --resume RUN_DIR)")
    if args.data is None and args.resume is None:
        raise GraphconvError("give the training data: --data digits, a folder of MNIST IDX files or an .npz file")
    if args.threads is not None and args.backend == "reference":
        raise GraphconvError("--threads applies to the llvm and onnx backends")
    if args.spec is not None and args.spec.lower().endswith(".onnx"):
        raise GraphconvError("training starts from a spec; import the model first (graphconv import-onnx)")
    t0 = time.perf_counter()
    quiet = args.json

    def log(text: str) -> None:
        _err(text)

    def on_epoch(r: dict) -> None:
        if quiet:
            return
        print(_epoch_line(r, total[0] if total else None), flush=True)

    total: list[int] = []

    def on_start(info: dict) -> None:
        total.append(info["epochs"])
        if quiet:
            return
        s = info["settings"]
        sets = "".join(f", {k}={v}" for k, v in info["spec_params"].items())
        counts = f"{info['train']:,} training, {info['val']:,} validation" + (
            f", {info['test']:,} test samples" if info["test"] else " samples")
        extras = []
        if s["optimizer"] == "sgd":
            extras.append(f"momentum {s['momentum']:g}" + (" nesterov" if s["nesterov"] and s["momentum"] else ""))
        if s["weight_decay"]:
            extras.append(f"weight decay {s['weight_decay']:g}")
        opt = s["optimizer"] + (f" ({', '.join(extras)})" if extras else "")
        print(f"training {info['network']} ({info['params']:,} params{sets}) on {info['data']}: {counts}; "
              f"{info['backend']}" + (f" ({info['device']})" if info["device"] != "cpu" else "")
              + f", {opt}, lr {s['lr']:g} {s['schedule']}, batch {s['batch_size']}, {info['epochs']} epochs"
              + (f", resuming at epoch {info['first_epoch']} (step {info['steps']})" if args.resume else ""),
              flush=True)

    h = fit(args.spec, args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            optimizer=args.optimizer, momentum=args.momentum, nesterov=args.nesterov,
            weight_decay=args.weight_decay, schedule=args.schedule, warmup=args.warmup,
            label_smoothing=args.label_smoothing, augment=args.augment, val_fraction=args.val_fraction,
            seed=args.seed, backend=args.backend, device=args.device, threads=args.threads, dtype=args.dtype,
            params=_params(args) or None, out=args.out, resume=args.resume, max_steps=args.max_steps,
            progress=not quiet, on_start=on_start, on_epoch=on_epoch, log=log)
    took = time.perf_counter() - t0
    if quiet:
        print(json.dumps({**h.to_json(), "seconds": round(took, 3)}, indent=2))
        return EXIT_OK
    s = h.settings
    last = h.last
    acc = last.get("test_acc") if last.get("test_acc") is not None else last.get("val_acc")
    what = "test" if last.get("test_acc") is not None else "validation"
    print(f"trained {h.net.name} ({h.net.num_params():,} params) for {h.steps} steps on {h.backend}, "
          f"{s['optimizer']} lr {s['lr']:g} {s['schedule']}, batch {s['batch_size']}, in {took:.1f} s"
          + (f"; {what} accuracy {acc:.2%}" if acc is not None else ""))
    if h.out is not None:
        spec = args.spec or s.get("spec")
        sets = "".join(f" --set {k}={v}" for k, v in (s.get("params") or {}).items())
        shown = spec or "SPEC"
        if spec and os.path.isabs(spec) and not os.path.relpath(spec).startswith(".."):
            shown = os.path.relpath(spec)
        weights = os.path.join(str(h.out), "weights.npz")
        print(f"wrote {h.out}/: metrics.jsonl, checkpoint.json, weights.npz"
              + (", plot.png" if (h.out / "plot.png").exists() else ""))
        print(f"run it with: graphconv run {shown}{sets} --weights {weights}")
    else:
        print("note: nothing was saved; give --out RUN_DIR to keep the weights, metrics and a checkpoint")
    return EXIT_OK


def _epoch_line(r: dict, total: int | None) -> str:
    def pct(v):
        return "-" if v is None else f"{v:.2%}"

    def num(v):
        return "-" if v is None else f"{v:.4f}"

    parts = [f"epoch {r['epoch']}" + (f"/{total}" if total else ""), f"loss {num(r['train_loss'])}"]
    if r.get("train_acc") is not None:
        parts.append(f"acc {pct(r['train_acc'])}")
    if r.get("val_loss") is not None:
        parts.append(f"val_loss {num(r['val_loss'])}")
    if r.get("val_acc") is not None:
        parts.append(f"val_acc {pct(r['val_acc'])}")
    if r.get("test_acc") is not None:
        parts.append(f"test_acc {pct(r['test_acc'])}")
    parts += [f"lr {r['lr']:.3g}", f"{r['seconds']:.1f} s", f"{r['samples_per_second']:,.0f} samples/s"]
    return "  ".join(parts)


COMMANDS = {"check": cmd_check, "summary": cmd_summary, "run": cmd_run, "compile": cmd_compile,
            "export-onnx": cmd_export_onnx, "import-onnx": cmd_import_onnx, "bench": cmd_bench,
            "train": cmd_train, "plot": cmd_plot}


def _command(name: str):
    if name in COMMANDS:
        return COMMANDS[name]
    for module in _verb_modules():
        if name in module.VERBS:
            return module.VERBS[name]
    raise KeyError(name)


# -- entry point ----------------------------------------------------------------------------------------------------

def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _is_spec_error(e: BaseException) -> bool:
    from .errors import SpecError

    return isinstance(e, SpecError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    debug = getattr(args, "debug", False)

    from . import progress
    from .errors import GraphconvError

    progress.enable(True)  # shown only when standard error is a terminal

    try:
        return _command(args.command)(args)
    except GraphconvError as e:
        if debug:
            traceback.print_exc()
        _err(str(e) if _is_spec_error(e) else f"error: {e}")
        return EXIT_USER
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_USER
    except OSError as e:
        if debug:
            traceback.print_exc()
        where = f" '{e.filename}'" if getattr(e, "filename", None) else ""
        _err(f"error: cannot access{where}: {e.strerror or e}")
        return EXIT_USER
    except MemoryError:  # e.g. a batch too large for this machine: the user's input, not a bug
        if debug:
            traceback.print_exc()
        _err("error: out of memory; try a smaller batch or network")
        return EXIT_USER
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: say so, briefly
        if debug:
            traceback.print_exc()
        _err(f"internal error: {type(e).__name__}: {e}")
        _err(f"note: this is a bug in graphconv {_version()}; please report it with the command you ran"
             + ("" if debug else " and the traceback that --debug shows"))
        return EXIT_INTERNAL
    finally:
        progress.enable(False)  # the library is silent again for a caller of main()


def _version() -> str:
    from . import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
