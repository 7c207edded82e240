"""Kernel emitters, one module per family of ops; importing this package registers them all.

    elementwise.py  activations, dropout/identity, add/mul/sub/div (broadcasting), batchnorm; the epilogue math
    conv.py         conv2d (plain and NCHW16c), channel_matmul (plain and NCHW16c), conv_transpose2d
    matmul.py       dense
    pool.py         max/avg/lp pooling, window_reduce, global pools, reduce_mean
    data.py         concat, slice, pad, transpose, reshape, flatten, upsample, layout conversions
    norm.py         softmax, log_softmax, lrn
    train.py        training: batchnorm with batch statistics and its gradients, reduce_sum, losses, optimizers
"""

from . import conv, data, elementwise, matmul, norm, pool, train  # noqa: F401
from . import train_conv_input, train_conv_weight, train_pool, train_shape  # noqa: F401  (gradients)
