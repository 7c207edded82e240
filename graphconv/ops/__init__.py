"""The op registry: `REGISTRY[name]` is the one definition of each op (see schema.py). Importing this package
registers every op."""

from . import activation, conv, elementwise  # noqa: F401  (registration side effects)
from .schema import REGISTRY, OpDef, RefContext

__all__ = ["REGISTRY", "OpDef", "RefContext"]
