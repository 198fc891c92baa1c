"""The reconnect schedule: exponential, capped, jittered within bounds; immediate retries."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mc.client import Backoff
from mc.client.backoff import UNPROVOKED, Retries


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


# ------------------------------------------------- Retries: when to reconnect at once

NO_JITTER = Backoff(initial=0.2, maximum=5.0, jitter=0.0, stable=5.0)


@pytest.mark.parametrize("code", [*sorted(UNPROVOKED), None], ids=repr)
def test_unprovoked_end_of_an_up_connection_retries_at_once_then_backs_off(code):
    r = Retries(NO_JITTER)
    assert r.after(lived=60.0, close_code=code) == 0.0  # the worker died / drained / went away
    # the next attempts fail (the dead worker's address refuses): the usual schedule
    assert [r.after(lived=None, close_code=None) for _ in range(4)] == pytest.approx([0.2, 0.4, 0.8, 1.6])


def test_first_connection_dropping_early_still_retries_at_once():
    r = Retries(NO_JITTER)
    assert r.after(lived=0.3, close_code=1006) == 0.0


@pytest.mark.parametrize("code", [4008, 4029, 1005, 1011, 1013])
def test_provoked_or_unclear_closes_back_off(code):
    r = Retries(NO_JITTER)
    assert r.after(lived=60.0, close_code=code) == pytest.approx(0.2)


def test_never_up_backs_off_even_on_unprovoked_codes():
    r = Retries(NO_JITTER)  # refused connects, 503s, a handshake that died: no immediate retry
    assert r.after(lived=None, close_code=1006) == pytest.approx(0.2)
    assert r.after(lived=None, close_code=None, retry_after=1.0) == pytest.approx(1.0)


def test_one_immediate_retry_per_stable_period():
    """A server that accepts and drops at once (a crash loop) is backed off from."""
    r = Retries(NO_JITTER)
    assert r.after(lived=10.0, close_code=1006) == 0.0
    delays = [r.after(lived=0.1, close_code=1006) for _ in range(5)]
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])
    # once a connection has stayed up for `stable`, the next unprovoked end is immediate again
    assert r.after(lived=5.0, close_code=1006) == 0.0
    assert r.after(lived=None, close_code=None) == pytest.approx(0.2)


def test_draining_restarts_the_schedule():
    r = Retries(NO_JITTER)
    assert r.after(lived=10.0, close_code=4503) == 0.0
    for _ in range(3):
        r.after(lived=None, close_code=None)
    assert r.after(lived=1.0, close_code=4503) == pytest.approx(0.2)  # quick spent: from the start


def test_retry_after_is_capped_at_the_maximum():
    r = Retries(NO_JITTER)
    assert r.after(lived=None, close_code=None, retry_after=60.0) == pytest.approx(5.0)
