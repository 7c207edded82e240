"""The layer table: per node its op, output shape, parameters, multiply-accumulates and receptive field.

    summarize(graph)   -> a JSON-ready dict (what `graphconv summary --json` prints)
    format_summary(d)  -> the table as text, in the manner of torchinfo and Keras' model.summary()

Parameters are counted as torchvision counts them: trainable, frozen and fixed parameters; buffers (BatchNorm
running statistics) are not. MACs are per sample.

The receptive field is propagated along the DAG from each spatial input (a [N, C, H, W] graph input starts with a
1×1 field and a jump of 1): through an op with window extent k, stride s and upsampling scale u,

    rf_out = rf_in + (k - 1)·jump_in        jump_out = jump_in·s / u

taking the largest field and jump over a node's data inputs. A global op (global pooling) sees the whole input, and
so does anything that mixes the features of a flattened tensor (dense after flatten): their field is reported as the
input's spatial size, with `receptive_field_global` set. The field is null where no spatial input reaches the node
or the input's spatial size is symbolic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .ir.graph import Graph, Node, TensorType, Value

__all__ = ["summarize", "format_summary"]

# ops of these fusion kinds work element by element on a flattened tensor, so they keep its receptive field
_POINTWISE = ("elementwise", "broadcast", "injective")


@dataclass(frozen=True)
class _Field:
    rf: tuple[float, float]
    jump: tuple[float, float]
    whole: tuple[int, int] | None  # spatial size of the inputs this value depends on
    global_: bool = False


def _shape(t: TensorType) -> list[int | str]:
    return [d if isinstance(d, int) else str(d) for d in t.shape]


def _merge(fields: list[_Field]) -> _Field:
    wholes = [f.whole for f in fields if f.whole is not None]
    whole = (max(w[0] for w in wholes), max(w[1] for w in wholes)) if wholes else None
    return _Field((max(f.rf[0] for f in fields), max(f.rf[1] for f in fields)),
                  (max(f.jump[0] for f in fields), max(f.jump[1] for f in fields)), whole,
                  any(f.global_ for f in fields))


def _propagate(node: Node, fields: dict[str, _Field]) -> _Field | None:
    from .ops import REGISTRY, epilogue

    ins = [fields[v.name] for v in node.inputs if v.name in fields]
    if not ins:
        return None
    f = _merge(ins)
    if f.global_:
        return f
    op = REGISTRY.get(node.op)
    if op is None:
        return f
    x = node.inputs[0].type
    if x.rank != 4:  # a flattened tensor: pointwise ops keep the field, anything else mixes every feature
        return f if op.fusion in _POINTWISE else _Field(f.rf, f.jump, f.whole, True)
    rf, jump = f.rf, f.jump
    for win in epilogue.windows(op, node.attrs):  # the op's window, then a fused pool's
        if win.global_:
            return _Field(rf, jump, f.whole, True)
        rf = tuple(r + (k - 1) * j for r, k, j in zip(rf, win.kernel, jump))
        jump = tuple(j * s / u for j, s, u in zip(jump, win.stride, win.scale))
    return _Field(rf, jump, f.whole, False)


def _rf_json(f: _Field | None) -> tuple[list[int] | None, bool]:
    if f is None:
        return None, False
    if f.global_:
        return (list(f.whole) if f.whole is not None else None), True
    return [math.ceil(f.rf[0] - 1e-9), math.ceil(f.rf[1] - 1e-9)], False


def _input_field(v: Value) -> _Field | None:
    t = v.type
    if t.rank != 4:
        return None
    h, w = t.shape[2], t.shape[3]
    whole = (h, w) if isinstance(h, int) and isinstance(w, int) else None
    return _Field((1.0, 1.0), (1.0, 1.0), whole)


def summarize(graph: Graph) -> dict[str, Any]:
    """The layer table of `graph` as a dict: network, inputs, layers, outputs and totals."""
    from .ops import REGISTRY, epilogue

    fields: dict[str, _Field] = {}
    for v in graph.inputs:
        f = _input_field(v)
        if f is not None:
            fields[v.name] = f
    layers = []
    total_macs = 0
    for node in graph.nodes:
        counted = trainable = 0
        for pv in node.params.values():
            p = graph.params.get(pv.name)
            if p is None or not p.counted:
                continue
            n = pv.type.numel()
            counted += n
            if p.role == "trainable":
                trainable += n
        op = REGISTRY.get(node.op)
        macs = epilogue.macs(op, node.attrs, [v.type for v in node.inputs]) if op else 0
        total_macs += macs
        f = _propagate(node, fields)
        if f is not None:
            fields[node.output.name] = f
        rf, is_global = _rf_json(f)
        layers.append({
            "name": node.name,
            "op": node.op,
            "output_shape": _shape(node.output.type),
            "params": counted,
            "trainable_params": trainable,
            "macs": macs,
            "receptive_field": rf,
            "receptive_field_global": is_global,
            "inputs": [v.name for v in node.inputs],
        })
    total = graph.num_params()
    trainable_total = graph.num_params(trainable_only=True)
    buffers = sum(p.value.type.numel() for p in graph.iter_params() if not p.counted)
    return {
        "network": graph.name,
        "inputs": [{"name": v.name, "shape": _shape(v.type), "dtype": v.type.dtype} for v in graph.inputs],
        "layers": layers,
        "outputs": [{"name": k, "value": v.name, "shape": _shape(v.type)} for k, v in graph.outputs.items()],
        "total_params": total,
        "trainable_params": trainable_total,
        "non_trainable_params": total - trainable_total,
        "buffer_elements": buffers,
        "total_macs": total_macs,
    }


# -- text -----------------------------------------------------------------------------------------------------------

def _human(n: int, suffix: str) -> str:
    for unit, size in (("T", 10 ** 12), ("G", 10 ** 9), ("M", 10 ** 6), ("k", 10 ** 3)):
        if n >= size:
            return f"{n / size:.2f} {unit}{suffix}"
    return f"{n} {suffix}"


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _rf_text(layer: dict) -> str:
    rf = layer.get("receptive_field")
    if rf is None:
        return "global" if layer.get("receptive_field_global") else "-"
    text = f"{rf[0]}×{rf[1]}"
    return text + " (all)" if layer.get("receptive_field_global") else text


def format_summary(d: dict[str, Any]) -> str:
    """The summary dict as an aligned table with totals."""
    header = ("Layer", "Op", "Output shape", "Params", "MACs", "RF")
    rows: list[tuple[str, ...]] = []
    for inp in d.get("inputs", []):
        rf = "1×1" if len(inp["shape"]) == 4 else "-"
        rows.append((inp["name"], "input", _shape_text(inp["shape"]), "0", "0", rf))
    for layer in d["layers"]:
        rows.append((layer["name"], layer["op"], _shape_text(layer["output_shape"]), f"{layer['params']:,}",
                     f"{layer['macs']:,}", _rf_text(layer)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    right = {3, 4}  # numbers align right

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    width = max(len(line(header)), 40)
    out = [f"Network: {d['network']}", "=" * width, line(header), "-" * width]
    out += [line(r) for r in rows]
    out.append("=" * width)
    outs = d.get("outputs", [])
    if outs:
        out.append("Outputs: " + ", ".join(f"{o['name']} {_shape_text(o['shape'])}" for o in outs))
    total, trainable = d["total_params"], d["trainable_params"]
    out += [
        f"Total params:         {total:,}",
        f"Trainable params:     {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
    ]
    if d.get("buffer_elements"):
        out.append(f"Buffers (not params): {d['buffer_elements']:,}")
    out.append(f"Total MACs:           {d['total_macs']:,} ({_human(d['total_macs'], 'MAC')} per sample)")
    out.append("=" * width)
    return "\n".join(out)
