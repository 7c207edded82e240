"""What a name in a spec can refer to, shared by the static checker and the evaluator.

- ops (and aliases such as `relu6`) from the op registry, and blocks defined in the spec: callable as layers;
- builtin functions of numbers and tensor shapes (`channels(x)`, `max(a, b)`, `make_divisible(v, 8)`);
- initializers, callable with arguments (`normal(std=0.01)`) or named bare (`he_normal`);
- bare words: the enum values op attributes accept (`same`, `nearest`, `reflect`) and initializer names. They
  evaluate to strings, so `padding=same` and `padding="same"` are the same.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any, Callable

from ..init import INITIALIZERS, MODES as INIT_MODES
from ..ops import ALIASES, REGISTRY
from ..ops.schema import Enum, OneOf, Padding


@cache
def spec_ops() -> dict[str, Any]:
    """The ops a spec may call: every registered op but those only training graphs hold (gradients, losses,
    optimizer updates; see OpDef.training_only)."""
    return {name: op for name, op in REGISTRY.items() if not op.training_only}


def op_for(name: str) -> tuple[str, dict[str, Any]] | None:
    """(op name, preset attributes) for an op or alias name, else None."""
    if name in ALIASES:
        return ALIASES[name]
    if name in spec_ops():
        return name, {}
    return None


@cache
def bare_words() -> frozenset[str]:
    words = {"same", "valid", *INITIALIZERS, *INIT_MODES}

    def collect(kind):
        if isinstance(kind, Enum):
            words.update(kind.choices)
        elif isinstance(kind, OneOf):
            for k in kind.kinds:
                collect(k)
        elif isinstance(kind, Padding):
            words.update(("same", "valid"))

    for op in spec_ops().values():
        for a in op.attrs:
            collect(a.kind)
    return frozenset(words)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor`, never below 90% of `v` (MobileNet's rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# name -> (function, minimum arguments, maximum arguments or None, what it takes); tensor functions get an
# `ir.Value`-carrying Tensor and are applied by the evaluator.
NUMERIC_BUILTINS: dict[str, tuple[Callable[..., Any], int, int | None, str]] = {
    "min": (min, 1, None, "numbers"),
    "max": (max, 1, None, "numbers"),
    "abs": (abs, 1, 1, "a number"),
    "int": (int, 1, 1, "a number (truncated toward zero)"),
    "float": (float, 1, 1, "a number"),
    "round": (round, 1, 1, "a number (halves to even)"),
    "ceil": (math.ceil, 1, 1, "a number"),
    "floor": (math.floor, 1, 1, "a number"),
    "len": (len, 1, 1, "a list"),
    "make_divisible": (make_divisible, 1, 3, "a number, a divisor (8) and a minimum"),
}
TENSOR_BUILTINS = {"channels": 1, "height": 2, "width": 3, "rank": None, "shape": None}


def builtin_names() -> set[str]:
    return set(NUMERIC_BUILTINS) | set(TENSOR_BUILTINS)


def callable_names(blocks) -> set[str]:
    return set(spec_ops()) | set(ALIASES) | set(blocks) | builtin_names() | set(INITIALIZERS)
