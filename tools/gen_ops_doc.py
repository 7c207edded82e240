"""Generate docs/ops.md, the op reference, from the op registry (graphconv.ops.REGISTRY, the single source of truth).

    python tools/gen_ops_doc.py            # (re)write docs/ops.md
    python tools/gen_ops_doc.py --check    # exit 1 if docs/ops.md is not what this script would write
    python tools/gen_ops_doc.py --stdout   # print the document instead of writing it

Per op: its doc string, its tensor inputs, its attributes in positional order (name, what values it accepts, default,
description), the parameters it owns and the fusion kind; then the aliases the spec language accepts and the named
initializers.

Nothing here is written by hand about a particular op. The parameters an op owns are not declared statically (their
shapes depend on the input), so they are found by building the op once on a sample input with sample values for its
required attributes, and shown as that example; which attribute sets each parameter's initializer is found the same
way, by giving every initializer attribute a distinct marker value.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from graphconv.errors import OpError  # noqa: E402
from graphconv.init import INITIALIZERS  # noqa: E402
from graphconv.ir.graph import Init, TensorType  # noqa: E402
from graphconv.ops import ALIASES, REGISTRY  # noqa: E402
from graphconv.ops import schema  # noqa: E402

OUT = os.path.join(ROOT, "docs", "ops.md")

# Presentation only: the order of the sections (op modules); a module not listed comes after these, by name.
SECTION_ORDER = ["conv", "dense", "pool", "norm", "activation", "elementwise", "resize", "shape"]

FUSION_KINDS = {
    "elementwise": "one output element from the same element of the input",
    "broadcast": "elementwise, with some operands broadcast (several inputs, or per-channel parameters)",
    "injective": "each output element copies one input element (data movement)",
    "reduction": "reduces over axes",
    "out_fusable": "complex op whose output can take elementwise ops fused into it",
    "opaque": "not fused",
}

SAMPLE_CHANNELS = 16
SAMPLE_INPUTS = [(SAMPLE_CHANNELS, 32, 32), (SAMPLE_CHANNELS,)]  # per-sample shapes tried in turn


# -- rendering values as the spec language writes them ----------------------------------------------------------------

def spec_literal(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, str):
        return v
    if isinstance(v, Init):
        if not v.args:
            return v.name
        return f"{v.name}(" + ", ".join(f"{k}={spec_literal(a)}" for k, a in v.args) + ")"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(spec_literal(i) for i in v) + "]"
    if isinstance(v, np.ndarray):
        return spec_literal(v.tolist())
    return str(v)


def default_text(a: schema.Attr) -> str:
    if a.required:
        return "**required**"
    if a.default is None:
        return "none"
    return f"`{spec_literal(a.default)}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text.endswith((".", "!", "?")) else text + "."


def first_clause(text: str) -> str:
    """The doc string up to its first top-level ';' or sentence end (not inside brackets, not '..')."""
    depth = 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and ch == ";":
            return text[:i]
        elif depth == 0 and ch == "." and text[i + 1:i + 2] == " " and text[i - 1:i] != ".":
            return text[:i]
    return text.rstrip(".")


def kind_text(k: schema.Kind) -> str:
    if isinstance(k, schema.InitKind):
        return "an initializer (see [Initializers](#initializers))"
    if isinstance(k, schema.OneOf):
        return " or ".join(kind_text(i) for i in k.kinds)
    return k.description


# -- probing an op for the parameters it owns --------------------------------------------------------------------------

def sample_value(k: schema.Kind) -> Any:
    """A valid value of an attribute kind, small and recognizable, for building a sample node."""
    if isinstance(k, schema.OneOf):
        for inner in k.kinds:
            v = sample_value(inner)
            if v is not None:
                return v
        return None
    if isinstance(k, schema.Int):
        lo = k.min if k.min is not None else 1
        v = max(lo, 8)
        return v if k.max is None else min(v, k.max)
    if isinstance(k, schema.Float):
        return 1.0 if k.max is None or k.max >= 1.0 else k.max
    if isinstance(k, schema.Bool):
        return True
    if isinstance(k, schema.Enum):
        return k.choices[0]
    if isinstance(k, schema.IntList):
        return [-1]
    if isinstance(k, schema.Pads):
        return 1
    if isinstance(k, schema.Padding):
        return 1
    if isinstance(k, schema.Ints):
        return 3 if k.min is None or k.min >= 1 else 0
    if isinstance(k, schema.InitKind):
        return Init("zeros")
    return None


def build_sample(op: schema.OpDef):
    """(given attributes, input types, resolved attributes) for one valid application of `op`, or None.

    Required attributes get sample values; an attribute the op rejects by name when it is left out (required only
    in combination with others, e.g. conv2d's out_channels or clip's bounds) is filled in and the attempt
    repeated."""
    n_inputs = max(op.min_inputs, 2) if op.variadic else len(op.inputs)
    for per_sample in SAMPLE_INPUTS:
        given: dict[str, Any] = {a.name: sample_value(a.kind) for a in op.attrs if a.required}
        in_types = [TensorType(("N", *per_sample), "float32")] * n_inputs
        for _ in range(len(op.attrs) + 1):
            try:
                attrs = op.check_attrs(given)
                resolved = op.resolve(attrs, in_types)
                op.infer(resolved, in_types)
                return given, in_types, resolved
            except OpError as e:
                if e.attr is not None and e.attr not in given:
                    given[e.attr] = sample_value(op.attr(e.attr).kind)
                    continue
                axes = list(range(len(in_types[0].shape)))
                if e.attr in given and isinstance(op.attr(e.attr).kind, schema.IntList) and given[e.attr] != axes:
                    given[e.attr] = axes  # a list of axes (transpose's perm) rather than a shape
                    continue
                break
    return None


def owned_params(op: schema.OpDef) -> list[str]:
    """Lines describing the parameters `op` creates, from a sample application."""
    sample = build_sample(op)
    if sample is None:
        print(f"warning: no sample application of {op.name} could be built; its parameters are not listed",
              file=sys.stderr)
        return ["See its definition in graphconv/ops/ for the parameters it owns (no sample application could "
                "be built)."]
    given, in_types, resolved = sample
    if not op.params(resolved, in_types):
        return []
    # which attribute initializes which parameter: give every initializer attribute a distinct marker
    init_attrs = [a.name for a in op.attrs if isinstance(a.kind, schema.InitKind)]
    markers = {name: Init("constant", (("value", 1000.0 + i),)) for i, name in enumerate(init_attrs)}
    by_marker: dict[str, str] = {}  # parameter name -> the attribute that initializes it
    if markers:
        marked = op.resolve(op.check_attrs({**given, **markers}), in_types)
        by_marker = {s.name: m for s in op.params(marked, in_types) for m, v in markers.items() if s.init == v}
    example = ", ".join(f"{k}={spec_literal(v)}" for k, v in given.items())
    x = in_types[0]
    lines = [f"Built on an input `{x}`" + (f" with `{example}`" if example else "") + ", it owns:", ""]
    for s in op.params(resolved, in_types):
        role = "buffer (state, not counted as a parameter)" if s.role == "buffer" else s.role
        if s.name in by_marker:
            attr = by_marker[s.name]
            init = f"initialized by `{attr}` (default `{spec_literal(op.attr(attr).default)}`)"
        else:
            init = f"initialized to `{spec_literal(s.init)}`"
        lines.append(f"- `{s.name}` `{list(s.shape)}`, {role}, {init}")
    return lines


# -- the document ------------------------------------------------------------------------------------------------------

def section_of(op: schema.OpDef) -> str:
    return type(op).__module__.rsplit(".", 1)[-1]


def section_title(module: str) -> str:
    mod = sys.modules[f"graphconv.ops.{module}"]
    doc = (mod.__doc__ or module).strip().split("\n")[0]
    for sep in (": ", ". "):
        doc = doc.split(sep)[0]
    doc = re.sub(r"\s+(of|over) x \[[^\]]*\]$", "", doc.rstrip(".").strip())
    return doc


def inputs_text(op: schema.OpDef) -> str:
    if op.variadic:
        name = op.inputs[-1]
        fixed = ", ".join(f"`{i}`" for i in op.inputs[:-1])
        return (f"{fixed + ', then ' if fixed else ''}`{name}`: {op.min_inputs} or more tensors "
                f"(`{op.name}(a, b, ...)` or `a -> {op.name}(b, ...)`)")
    if len(op.inputs) == 1:
        return f"`{op.inputs[0]}`: one tensor (`x -> {op.name}` or `{op.name}(x)`)"
    return ", ".join(f"`{i}`" for i in op.inputs) + f": {len(op.inputs)} tensors"


def op_section(op: schema.OpDef) -> list[str]:
    out = [f"### {op.name}", "", sentence(op.doc), ""]
    out.append(f"- **Tensor inputs:** {inputs_text(op)}")
    out.append(f"- **Fusion kind:** `{op.fusion}` ({FUSION_KINDS.get(op.fusion, 'see graphconv/ops/schema.py')})")
    aliases = [a for a, (target, _) in sorted(ALIASES.items()) if target == op.name]
    if aliases:
        out.append("- **Aliases:** " + ", ".join(f"`{a}`" for a in aliases))
    out.append("")
    if op.attrs:
        out += ["| # | attribute | accepts | default | description |", "|---|---|---|---|---|"]
        for i, a in enumerate(op.attrs, 1):
            out.append(f"| {i} | `{a.name}` | {cell(kind_text(a.kind))} | {default_text(a)} | {cell(a.doc)} |")
        out.append("")
        sig = ", ".join(a.name for a in op.attrs)
        out += [f"Positional order after the tensor inputs: `{op.name}(x, {sig})`."
                if not op.variadic else f"Attributes after the tensors: `{op.name}(a, b, ..., {sig})`.", ""]
    else:
        out += ["No attributes.", ""]
    params = owned_params(op)
    if params:
        out += ["**Parameters.** " + params[0], *params[1:], ""]
    return out


def generate() -> str:
    # the ops a spec can call; those only the autodiff pass adds (gradients, losses, updates) are in training.md
    ops = [op for op in REGISTRY.values() if not op.training_only]
    modules = sorted({section_of(op) for op in ops},
                     key=lambda m: (SECTION_ORDER.index(m) if m in SECTION_ORDER else len(SECTION_ORDER), m))
    out = [
        "# Op reference",
        "",
        "<!-- Generated by tools/gen_ops_doc.py from graphconv.ops.REGISTRY; do not edit by hand. -->",
        "",
        f"{len(ops)} ops, {len(ALIASES)} alias{'es' if len(ALIASES) != 1 else ''}, {len(INITIALIZERS)} initializers. "
        "How ops are called from a spec is described in [spec-language.md](spec-language.md): tensor inputs come "
        "first (the value piped in with `->` is the first of them), then attributes, by position in the order of "
        "each table or by name. An attribute that accepts a choice of words also accepts them bare "
        "(`padding=same`, `mode=nearest`, `init=he_normal`). Layouts are `[N, C, H, W]` for images and "
        "`[N, features]` for vectors.",
        "",
        "Every op that owns parameters names them `<layer>.<parameter>` (`layer1.block0.conv1.weight`). "
        "Parameter roles: *trainable*; *frozen* (the layer has `frozen=true`: loaded or initialized, never "
        "trained); *fixed* (the values are written in the spec); *buffer* (state such as running statistics, not "
        "counted as a parameter).",
        "",
        "| op | section | summary |",
        "|---|---|---|",
    ]
    for m in modules:
        for op in (o for o in ops if section_of(o) == m):
            out.append(f"| [`{op.name}`](#{op.name}) | {section_title(m)} | {cell(first_clause(op.doc))} |")
    out.append("")
    for m in modules:
        out += [f"## {section_title(m)}", ""]
        for op in (o for o in ops if section_of(o) == m):
            out += op_section(op)
    out += ["## Aliases", "",
            "An alias is an op with some attributes fixed; the fixed attributes cannot be given, the others keep "
            "their order.", "",
            "| alias | expands to |", "|---|---|"]
    for name, (target, preset) in sorted(ALIASES.items()):
        fixed = ", ".join(f"{k}={spec_literal(v)}" for k, v in preset.items())
        out.append(f"| `{name}` | `{target}({fixed})` |")
    out.append("")
    out += ["## Initializers", "",
            "Named in `init=` and `bias_init=` attributes: bare (`init=he_normal`) or called with arguments, by "
            "position in the order shown or by name (`init=normal(std=0.02)`). Fans follow PyTorch's convention "
            "for a weight `[out, in, *kernel]`: fan_in = in·∏kernel, fan_out = out·∏kernel; a vector counts its "
            "length as both. `mode` takes the string `\"fan_in\"` or `\"fan_out\"`.", "",
            "| initializer | arguments (defaults) | description |", "|---|---|---|"]
    for name, spec in sorted(INITIALIZERS.items()):
        args = ", ".join(f"{k}={spec_literal(v) if not isinstance(v, str) else chr(34) + v + chr(34)}"
                         for k, v in spec.args.items())
        out.append(f"| `{name}` | {cell(f'`{args}`') if args else 'none'} | {cell(spec.doc)} |")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/ops.md is out of date")
    p.add_argument("--stdout", action="store_true", help="print the document instead of writing it")
    p.add_argument("--output", default=OUT, help="where to write (default: docs/ops.md)")
    args = p.parse_args(argv)
    text = generate()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        try:
            with open(args.output, encoding="utf-8") as fh:
                current = fh.read()
        except OSError:
            current = ""
        if current != text:
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(), "docs/ops.md (current)",
                                        "docs/ops.md (generated)", lineterm="", n=1)
            shown = list(diff)[:40]
            print("\n".join(shown))
            print(f"{os.path.relpath(args.output)} is out of date: run python tools/gen_ops_doc.py", file=sys.stderr)
            return 1
        print(f"{os.path.relpath(args.output)} is up to date")
        return 0
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    print(f"wrote {os.path.relpath(args.output)} ({sum(not op.training_only for op in REGISTRY.values())} ops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
