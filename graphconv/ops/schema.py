"""How an op is defined.

One `OpDef` per op feeds every consumer: the spec language (attribute names, positional order, defaults,
validation), shape inference, the parameters the op owns, the numpy reference implementation, MAC counting and
receptive-field analysis. Later stages add their hooks to the same class (gradient rule, ONNX mapping, fusion kind).

Attribute values arrive from the spec evaluator as Python values: int, float, bool, str (a string literal or a bare
word such as `same`), list, `Init`, or numpy arrays. Each `Attr` converts and validates its value, raising
`OpError(attr=...)` so the error points at that argument in the spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import OpError
from ..init import INITIALIZERS, make_init
from ..ir.graph import Init, TensorType

REQUIRED = object()  # default of an attribute that must be given


# -- attribute kinds ----------------------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, (float, np.floating)) and not isinstance(v, bool))


def _describe(v: Any) -> str:
    if isinstance(v, bool):
        return f"bool {str(v).lower()}"
    if _is_int(v):
        return f"int {v}"
    if isinstance(v, float):
        return f"float {v:g}"
    if isinstance(v, str):
        return f"'{v}'"
    if isinstance(v, (list, tuple)):  # a tuple: from the ONNX importer or the API
        return "a list" if len(v) > 8 else f"list {list(v)}"
    if isinstance(v, Init):
        return f"initializer {v}"
    return type(v).__name__


class Kind:
    """Converts a raw attribute value to its normalized form or raises OpError (without `attr`; the caller adds
    it)."""

    description = "a value"

    def convert(self, v: Any) -> Any:
        raise NotImplementedError


class Int(Kind):
    def __init__(self, min: int | None = None, max: int | None = None):
        self.min, self.max = min, max
        self.description = "an integer" + _range_text(min, max)

    def convert(self, v):
        if not _is_int(v):
            raise OpError(f"expected {self.description}, got {_describe(v)}")
        v = int(v)
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            raise OpError(f"expected {self.description}, got {v}")
        return v


class Float(Kind):
    def __init__(self, min: float | None = None, max: float | None = None, min_exclusive: bool = False):
        self.min, self.max, self.min_exclusive = min, max, min_exclusive
        lo = "" if min is None else (f" > {min:g}" if min_exclusive else f" >= {min:g}")
        hi = "" if max is None else f" <= {max:g}"
        self.description = "a number" + (lo + (" and" if lo and hi else "") + hi if lo or hi else "")

    def convert(self, v):
        if not _is_number(v):
            raise OpError(f"expected {self.description}, got {_describe(v)}")
        try:
            v = float(v)
        except OverflowError:
            raise OpError(f"expected {self.description}, got a number too large") from None
        if not math.isfinite(v):
            raise OpError(f"expected a finite number, got {v}")
        if self.min is not None and (v <= self.min if self.min_exclusive else v < self.min):
            raise OpError(f"expected {self.description}, got {v:g}")
        if self.max is not None and v > self.max:
            raise OpError(f"expected {self.description}, got {v:g}")
        return v


class Bool(Kind):
    description = "true or false"

    def convert(self, v):
        if not isinstance(v, (bool, np.bool_)):
            raise OpError(f"expected true or false, got {_describe(v)}")
        return bool(v)


class Enum(Kind):
    def __init__(self, *choices: str):
        self.choices = choices
        self.description = "one of " + ", ".join(choices)

    def convert(self, v):
        if not isinstance(v, str) or v not in self.choices:
            raise OpError(f"expected {self.description}, got {_describe(v)}")
        return v


class Ints(Kind):
    """n integers; a single integer means the same value n times (`kernel=3` is 3×3)."""

    def __init__(self, n: int = 2, min: int | None = 1):
        self.n, self.min = n, min
        self.description = f"an integer or a list of {n} integers" + _range_text(min, None)

    def convert(self, v):
        items = [v] * self.n if _is_int(v) else v
        if not isinstance(items, (list, tuple)) or len(items) != self.n or not all(_is_int(i) for i in items):
            raise OpError(f"expected {self.description}, got {_describe(v)}")
        if self.min is not None and any(i < self.min for i in items):
            raise OpError(f"expected {self.description}, got {_describe(v)}")
        return tuple(int(i) for i in items)


class IntList(Kind):
    """A list of integers of any length from `min_len` (reshape targets)."""

    def __init__(self, min_len: int = 1, min: int | None = None):
        self.min_len, self.min = min_len, min
        self.description = "a list of integers"

    def convert(self, v):
        if _is_int(v):
            v = [v]
        if not isinstance(v, (list, tuple)) or len(v) < self.min_len or not all(_is_int(i) for i in v):
            raise OpError(f"expected {self.description}, got {_describe(v)}")
        if self.min is not None and any(i < self.min for i in v):
            raise OpError(f"expected integers >= {self.min}, got {_describe(v)}")
        return tuple(int(i) for i in v)


class Padding(Kind):
    """`same`, `valid`, an integer, [pad_h, pad_w] or [top, left, bottom, right].

    Normalizes to "same" (resolved against the input shape by the op) or a 4-tuple (top, left, bottom, right)."""

    description = "same, valid, an integer, [pad_h, pad_w] or [top, left, bottom, right] (all >= 0)"

    def convert(self, v):
        if v == "valid":
            return (0, 0, 0, 0)
        if v == "same":
            return "same"
        if _is_int(v):
            v = [v, v]
        if isinstance(v, (list, tuple)) and all(_is_int(i) for i in v) and all(i >= 0 for i in v):
            if len(v) == 2:
                return (int(v[0]), int(v[1]), int(v[0]), int(v[1]))
            if len(v) == 4:
                return tuple(int(i) for i in v)
        raise OpError(f"expected {self.description}, got {_describe(v)}")


class Pads(Padding):
    """Explicit padding only (conv_transpose2d, pad): an integer, [pad_h, pad_w] or [top, left, bottom, right].
    Normalizes to a 4-tuple (top, left, bottom, right); `same` is rejected with its own message."""

    description = "an integer, [pad_h, pad_w] or [top, left, bottom, right] (all >= 0)"

    def convert(self, v):
        if isinstance(v, str) and v == "same":
            raise OpError("padding 'same' is not supported here", hint=f"give the pads explicitly: {self.description}")
        return super().convert(v)


class InitKind(Kind):
    description = "an initializer (" + ", ".join(sorted(INITIALIZERS)) + ")"

    def convert(self, v):
        if isinstance(v, str):
            v = Init(v)
        if not isinstance(v, Init):
            raise OpError(f"expected {self.description}, got {_describe(v)}")
        make_init(v)  # validates the name and arguments
        return v


class TensorLiteral(Kind):
    """Numbers written in the spec: a number or a nested list, rectangular. Normalized to a float64 array."""

    description = "a tensor literal (a nested list of numbers)"

    def convert(self, v):
        if isinstance(v, np.ndarray):
            arr = v
        else:
            if not isinstance(v, (list, tuple)) and not _is_number(v):
                raise OpError(f"expected {self.description}, got {_describe(v)}")
            try:
                arr = np.array(v, dtype=np.float64)
            except (ValueError, TypeError):
                raise OpError("a tensor literal must be a rectangular nested list of numbers") from None
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise OpError("a tensor literal must be a rectangular nested list of numbers")
        if not np.all(np.isfinite(arr)):
            raise OpError("a tensor literal must contain finite numbers")
        return arr.astype(np.float64)


class OneOf(Kind):
    """The first kind that accepts the value wins (e.g. `bias`: true/false or a tensor literal)."""

    def __init__(self, *kinds: Kind):
        self.kinds = kinds
        self.description = " or ".join(k.description for k in kinds)

    def convert(self, v):
        for k in self.kinds:
            try:
                return k.convert(v)
            except OpError:
                continue
        raise OpError(f"expected {self.description}, got {_describe(v)}")


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


@dataclass(frozen=True)
class Attr:
    name: str
    kind: Kind
    default: Any = REQUIRED
    doc: str = ""
    optional: bool = False  # None is accepted (and is the default when `default` is None)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


# -- what an op declares --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParamSpec:
    """A parameter an op owns, named `<node>.<name>` in the graph."""

    name: str
    shape: tuple[int, ...]
    role: str = "trainable"  # "trainable" | "buffer"; "frozen"/"fixed" are applied by the builder
    init: Init = Init("zeros")
    data: np.ndarray | None = None  # fixed values written in the spec


@dataclass
class RefContext:
    """What the reference implementation may need besides its inputs."""

    training: bool = False
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


@dataclass(frozen=True)
class Window:
    """For receptive-field analysis: the effective kernel extent and stride in (h, w); `global_` ops see the whole
    input; `scale` > 1 for upsampling."""

    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    global_: bool = False
    scale: tuple[float, float] = (1.0, 1.0)


class OpDef:
    """Base class of op definitions; subclasses set the class attributes and override the hooks they need."""

    name: str = ""
    doc: str = ""
    inputs: tuple[str, ...] = ("x",)  # names of the data inputs
    variadic: bool = False  # the last input may repeat; at least `min_inputs` in all
    min_inputs: int = 1
    attrs: tuple[Attr, ...] = ()
    fusion: str = "opaque"  # elementwise | broadcast | injective | reduction | out_fusable | opaque
    commutative: bool = False  # a two-input op whose inputs may be swapped (a fused epilogue may absorb it)
    blocked_layout: bool = False  # a backend runs it in the blocked channel layout (NCHW16c; see ops/layout.py)
    window_step: bool = False  # a window reduction a producer may apply to its output as it writes it (max pool)
    stochastic: bool = False  # draws random numbers in training (the optimizer never merges or fuses it then)
    passes_through: str | None = None  # "always" or "inference": then the op returns its input unchanged
    training_only: bool = False  # added by the autodiff pass (gradients, losses, updates), never written in a spec

    # ---- attributes ----
    def attr(self, name: str) -> Attr:
        for a in self.attrs:
            if a.name == name:
                return a
        raise KeyError(name)

    def check_attrs(self, given: dict[str, Any]) -> dict[str, Any]:
        """Validate and normalize attribute values given by keyword; fill defaults. Unknown names, bad values and
        missing required attributes raise OpError: the first problem, with the others in `others`, so a call's
        mistakes are all reported at once."""
        names = {a.name for a in self.attrs}
        problems: list[OpError] = []
        for k in given:
            if k not in names:
                from ..errors import did_you_mean
                problems.append(OpError(f"{self.name} has no attribute '{k}'", attr=k,
                                        hint=did_you_mean(k, names)
                                        or f"its attributes: {', '.join(sorted(names)) or 'none'}"))
        out: dict[str, Any] = {}
        for a in self.attrs:
            if a.name in given:
                v = given[a.name]
                if v is None and a.optional:
                    out[a.name] = None
                    continue
                try:
                    out[a.name] = a.kind.convert(v)
                except OpError as e:
                    problems.append(OpError(f"{self.name}: attribute '{a.name}': {e.message}", attr=a.name,
                                            hint=e.hint))
            elif a.required:
                problems.append(OpError(f"{self.name}: missing required attribute '{a.name}'", attr=a.name))
            else:
                out[a.name] = a.default
        if problems:
            raise OpError(problems[0].message, attr=problems[0].attr, hint=problems[0].hint, others=problems[1:])
        self.check_attr_combination(out)
        return out

    def check_attr_combination(self, attrs: dict[str, Any]) -> None:
        """Constraints between attributes that need no shapes (e.g. out_channels or depthwise)."""

    # Attributes that only say how parameters are made; the IR keeps the parameters, not these.
    param_attr_names: tuple[str, ...] = ("weight", "init", "bias_init", "frozen")

    def ir_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The attributes stored on the IR node: resolved attributes minus parameter construction; a fixed bias
        literal becomes `bias=True` (its values live in the parameter)."""
        out = {k: v for k, v in attrs.items() if k not in self.param_attr_names}
        if isinstance(out.get("bias"), np.ndarray):  # not a number attribute such as lrn's bias
            out["bias"] = True
        return out

    # ---- hooks ----
    def resolve(self, attrs: dict[str, Any], in_types: Sequence[TensorType]) -> dict[str, Any]:
        """Shape-dependent normalization, e.g. `padding=same` to explicit pads. Returns the attributes stored in
        the IR."""
        return attrs

    def params(self, attrs: dict[str, Any], in_types: Sequence[TensorType]) -> list[ParamSpec]:
        return []

    def infer(self, attrs: dict[str, Any], in_types: Sequence[TensorType]) -> TensorType:
        raise NotImplementedError

    def reference(self, attrs: dict[str, Any], xs: list[np.ndarray], ps: dict[str, np.ndarray],
                  ctx: RefContext) -> np.ndarray:
        raise NotImplementedError

    def macs(self, attrs: dict[str, Any], in_types: Sequence[TensorType], out_type: TensorType) -> int:
        """Multiply-accumulates per sample."""
        return 0

    def window(self, attrs: dict[str, Any]) -> Window:
        return Window()

    # ---- optimizer hooks ----
    def channel_affine(self, attrs: dict[str, Any], ps: dict[str, np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray] | None:
        """At inference, is this op x·scale + shift per channel (axis 1)? Then (scale, shift) in float64; else
        None. Batchnorm folding uses it."""
        return None

    def scale_output(self, attrs: dict[str, Any], ps: dict[str, np.ndarray], scale: np.ndarray,
                     shift: np.ndarray) -> dict[str, np.ndarray] | None:
        """For an op linear in its parameters per output channel (axis 1): parameters computing y·scale + shift
        (float64; a "bias" entry is returned even when the op had none). None when the op cannot."""
        return None

    def blockable(self, attrs: dict[str, Any], in_types: Sequence[TensorType]) -> bool:
        """Whether this node can run in the blocked channel layout (its inputs and output [N, C, H, W] with C a
        multiple of the block is checked by the layout pass)."""
        return self.blocked_layout

    def packed_shape(self, attrs: dict[str, Any], role: str, shape: tuple[int, ...], block: int) -> tuple[int, ...]:
        """The shape of a parameter repacked for the blocked layout (default: unchanged)."""
        return tuple(shape)

    def pack_param(self, attrs: dict[str, Any], role: str, arr: np.ndarray, block: int) -> np.ndarray:
        return arr

    def unpack_param(self, attrs: dict[str, Any], role: str, arr: np.ndarray, block: int) -> np.ndarray:
        return arr

    def scale_input(self, attrs: dict[str, Any], ps: dict[str, np.ndarray], scale: np.ndarray,
                    shift: np.ndarray) -> dict[str, np.ndarray] | None:
        """For an op linear in its input channels (axis 1) with no zero padding that a shift would change: parameters
        computing the op of x·scale + shift per input channel (float64, with a "bias"). None when the op cannot."""
        return None

    # ---- training ----
    def gradient(self, node: Any, dy: Any, gb: Any) -> dict[int | str, Any]:
        """Reverse mode (graphconv.train.autodiff): `dy` is the loss's gradient with respect to `node.output` (a
        Value of its type). Return the gradients of the inputs this op can differentiate, keyed by data-input
        position (int) or parameter role (str), as Values built with `gb.op(...)`. Ask `gb.wants(key)` first and
        leave out what nobody needs (a frozen weight, the network's input). Ops without a rule raise."""
        from ..errors import GraphconvError
        raise GraphconvError(f"op '{self.name}' has no gradient rule")

    def to_onnx(self, node: Any, e: Any) -> None:
        """Emit standard ONNX nodes computing `node` (an IR node of this op) through the emitter `e` of
        graphconv.onnx.export: `e.value(v)` is the ONNX name of an IR value (inputs, parameters, earlier nodes),
        `e.out(node)` the name this node's result must get, `e.add_node(op_type, inputs, outputs, **attrs)`,
        `e.const(array, hint)` an extra initializer, `e.param_array(v)` a parameter's data, `e.opset`, `e.dtype`.
        Inference semantics (dropout off, batchnorm with running statistics)."""
        from ..errors import GraphconvError
        raise GraphconvError(f"op '{self.name}' has no ONNX mapping")


REGISTRY: dict[str, OpDef] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    """Class decorator: instantiate the definition and add it to the registry under its name."""
    op = cls()
    if not op.name or op.name in REGISTRY:
        raise ValueError(f"bad or duplicate op name {op.name!r}")
    REGISTRY[op.name] = op
    return cls


# -- shared shape helpers ------------------------------------------------------------------------------------------

def same_dtype(op: str, in_types: Sequence[TensorType]) -> str:
    dtypes = {t.dtype for t in in_types}
    if len(dtypes) > 1:
        raise OpError(f"{op}: inputs have different dtypes: {', '.join(str(t) for t in in_types)}")
    return in_types[0].dtype


def expect_rank(op: str, t: TensorType, rank: int | Sequence[int], arg: int = 0, hint: str | None = None) -> None:
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    if t.rank not in ranks:
        want = " or ".join(str(r) for r in ranks)
        layout = {4: " [N, C, H, W]", 2: " [N, features]"}
        what = layout.get(ranks[0], "") if len(ranks) == 1 else ""
        raise OpError(f"{op} expects a rank-{want} input{what}, got {t}", arg=arg, hint=hint)


def window_out(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int = 1,
               ceil_mode: bool = False) -> int:
    """Output length of a sliding window (convolution or pooling), as PyTorch and ONNX compute it. With ceil_mode
    the last window must start inside the input or left padding (PyTorch's rule)."""
    extent = dilation * (kernel - 1) + 1
    span = size + pad_lo + pad_hi - extent
    if span < 0:
        return 0
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad_lo:
            out -= 1
        return out
    return span // stride + 1


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """`same` padding as in TensorFlow and ONNX SAME_UPPER: output length ceil(size / stride); when the total is
    odd the extra row or column goes at the end."""
    extent = dilation * (kernel - 1) + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def resolve_padding(attrs: dict[str, Any], in_type: TensorType, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int] = (1, 1)) -> tuple[int, int, int, int]:
    pad = attrs["padding"]
    if pad != "same":
        return pad
    top, bottom = same_pads(int(in_type.shape[2]), kernel[0], stride[0], dilation[0])
    left, right = same_pads(int(in_type.shape[3]), kernel[1], stride[1], dilation[1])
    return (top, left, bottom, right)


def sliding_windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                    out_hw: tuple[int, int]) -> np.ndarray:
    """A strided view [N, C, OH, OW, KH, KW] of an already padded [N, C, H, W] array (no copy)."""
    kh, kw = kernel
    eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (eh, ew), axis=(2, 3))
    win = win[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]
    return win[:, :, :out_hw[0], :out_hw[1]]
