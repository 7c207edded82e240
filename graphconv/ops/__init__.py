"""The op registry: `REGISTRY[name]` is the one definition of each op (see schema.py). Importing this package
registers every op. `ALIASES` maps a name the spec language accepts to the op and fixed attributes it expands to."""

from . import activation, conv, dense, elementwise, layout, loss, norm, optim, pool, resize, shape  # noqa: F401
from . import grad  # noqa: F401  (registration: the ops training graphs add)
from .schema import REGISTRY, OpDef, RefContext

ALIASES: dict[str, tuple[str, dict]] = {
    "relu6": ("clip", {"min": 0.0, "max": 6.0}),
}

__all__ = ["ALIASES", "REGISTRY", "OpDef", "RefContext"]
