"""The top classes of a classifier's output, as probabilities.

An output is a classifier's when it is [N, K] with K >= 2. Its rows are taken as probabilities as they are when
every row already is a distribution (values in [0, 1] summing to 1 within PROBABILITY_TOLERANCE: the network ends
in softmax); otherwise they are logits, and the probabilities are their softmax. The logit is reported beside the
probability either way it exists, so nothing is hidden by the choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Ranked", "is_classifier", "is_distribution", "softmax", "top_classes", "PROBABILITY_TOLERANCE"]

PROBABILITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Ranked:
    """One class of a sample's top list."""

    rank: int  # 1 = most probable
    index: int
    probability: float
    logit: float | None  # None when the output already holds probabilities


def is_classifier(y: np.ndarray) -> bool:
    """Whether `y` is [N, K] with K >= 2 classes."""
    return y.ndim == 2 and y.shape[1] >= 2 and y.shape[0] >= 1


def is_distribution(y: np.ndarray) -> bool:
    """Whether every row of the [N, K] array `y` is a probability distribution."""
    y = np.asarray(y, np.float64)
    if not np.all(np.isfinite(y)) or y.min() < -PROBABILITY_TOLERANCE or y.max() > 1 + PROBABILITY_TOLERANCE:
        return False
    return bool(np.all(np.abs(y.sum(axis=1) - 1.0) <= PROBABILITY_TOLERANCE))


def softmax(y: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (stable: the row maximum subtracted first). A row with +inf logits
    gives them equal shares of probability 1 (softmax's limit); a row holding NaN, or only -inf, is NaN."""
    z = np.asarray(y, np.float64)
    with np.errstate(invalid="ignore"):  # NaN in, NaN out: no warning on the way
        m = z.max(axis=-1, keepdims=True)
        z = np.where(np.isposinf(m), np.where(np.isposinf(z), 0.0, -np.inf), z - m)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)


def top_classes(y: np.ndarray, k: int) -> tuple[list[list[Ranked]], bool]:
    """(the `k` most probable classes of each row of the [N, K] output `y`, best first; whether the probabilities
    are a softmax of `y` rather than `y` itself). Ties keep the lower class index first."""
    from_softmax = not is_distribution(y)
    probs = softmax(y) if from_softmax else np.asarray(y, np.float64)
    k = min(k, y.shape[1])
    out = []
    key = np.asarray(y, np.float64) if from_softmax else probs  # logits: their order survives underflow to 0
    for i in range(y.shape[0]):
        order = np.argsort(-key[i], kind="stable")[:k]
        out.append([Ranked(r + 1, int(c), float(probs[i, c]), float(y[i, c]) if from_softmax else None)
                    for r, c in enumerate(order)])
    return out, from_softmax
