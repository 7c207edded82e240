"""Ops that only training graphs use: the gradients of the forward ops (one module per op family), added by the
ops' `gradient` rules (schema.OpDef.gradient) through graphconv.train.autodiff. Each is a full op definition:
attributes, shape rule, numpy reference, ONNX mapping."""

from . import activation, conv, elementwise, lrn, norm, pool, reduce, resize, shape  # noqa: F401  (registration)
