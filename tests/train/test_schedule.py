"""Learning-rate schedules against their closed forms (and PyTorch's definitions)."""

import math

import pytest

from graphconv.errors import GraphconvError
from graphconv.train.schedule import make_schedule


def test_constant_and_step():
    assert [make_schedule("constant", 0.1)(s) for s in (0, 5, 1000)] == [0.1, 0.1, 0.1]
    s = make_schedule("step", 1.0, step_size=3, gamma=0.5)
    assert [s(k) for k in range(7)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_cosine_with_warmup():
    s = make_schedule("cosine", 0.2, total_steps=110, warmup_steps=10, min_ratio=0.1)
    assert s(0) == pytest.approx(0.02) and s(9) == pytest.approx(0.2)  # linear warm-up to the base rate
    assert s(10) == pytest.approx(0.2)  # cosine starts at the top
    assert s(60) == pytest.approx(0.2 * (0.1 + 0.9 * 0.5))  # half way
    assert s(110) == pytest.approx(0.02) and s(500) == pytest.approx(0.02)  # floor: min_ratio·lr
    values = [s(k) for k in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    t = 0.3
    assert s(10 + 30) == pytest.approx(0.2 * (0.1 + 0.9 * (1 + math.cos(math.pi * t)) / 2))


@pytest.mark.parametrize("kwargs,message", [
    ({"kind": "linear", "lr": 0.1}, "unknown learning-rate schedule 'linear'"),
    ({"kind": "constant", "lr": 0.0}, "positive number"),
    ({"kind": "constant", "lr": float("nan")}, "positive number"),
    ({"kind": "cosine", "lr": 0.1, "total_steps": 5, "warmup_steps": 5}, "beyond the warm-up"),
    ({"kind": "step", "lr": 0.1, "step_size": 0}, "step_size >= 1"),
    ({"kind": "step", "lr": 0.1, "gamma": 0.0}, "gamma"),
])
def test_bad_settings(kwargs, message):
    kind = kwargs.pop("kind")
    lr = kwargs.pop("lr")
    with pytest.raises(GraphconvError, match=message):
        make_schedule(kind, lr, **kwargs)


def test_negative_step():
    with pytest.raises(GraphconvError, match="counts from 0"):
        make_schedule("constant", 0.1)(-1)
