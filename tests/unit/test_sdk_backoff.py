"""The reconnect schedule: exponential, capped, jittered within bounds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mc.client import Backoff


def test_default_schedule_doubles_up_to_the_cap():
    b = Backoff()
    assert [b.ceiling(i) for i in range(7)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


def test_jitter_extremes():
    b = Backoff(initial=1.0, maximum=8.0, jitter=0.5)
    assert b.delay(2, rand=lambda: 0.0) == 4.0
    assert b.delay(2, rand=lambda: 1.0) == 2.0


def test_no_jitter_is_deterministic():
    b = Backoff(initial=0.1, jitter=0.0)
    assert [b.delay(3) for _ in range(20)] == [pytest.approx(0.8)] * 20


def test_huge_attempt_numbers_do_not_overflow():
    assert Backoff().delay(10_000) <= 5.0


@given(
    initial=st.floats(0.001, 10), maximum=st.floats(0.001, 100), factor=st.floats(1, 10),
    jitter=st.floats(0, 1), attempt=st.integers(0, 200), seed=st.integers(0, 2**32),
)
def test_delay_within_bounds(initial, maximum, factor, jitter, attempt, seed):
    b = Backoff(initial=initial, maximum=maximum, factor=factor, jitter=jitter)
    top = b.ceiling(attempt)
    assert top <= maximum
    assert top <= b.ceiling(attempt + 1)  # never shrinks
    d = b.delay(attempt, rand=random.Random(seed).random)
    assert top * (1 - jitter) - 1e-9 <= d <= top


@pytest.mark.parametrize("kw", [{"initial": 0}, {"maximum": -1}, {"factor": 0.5}, {"jitter": 1.5}])
def test_invalid_parameters(kw):
    with pytest.raises(ValueError):
        Backoff(**kw)
