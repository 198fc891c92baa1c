"""The SDK's token source (mc.client.tokens): fixed tokens, providers, when to renew."""

from __future__ import annotations

import time

import jwt
import pytest

from mc.client.tokens import TokenSource, expiry


def token(ttl: float) -> str:
    return jwt.encode({"sub": "a", "exp": time.time() + ttl}, "k" * 32, algorithm="HS256")


def test_expiry_reads_exp_without_verifying() -> None:
    t = token(100)
    assert expiry(t) == pytest.approx(time.time() + 100, abs=2)
    assert expiry("not-a-jwt") is None and expiry("a.b.c") is None
    assert expiry(jwt.encode({"sub": "a"}, "k" * 32, algorithm="HS256")) is None


async def test_fixed_token_never_renews() -> None:
    source = TokenSource("abc", None)
    assert not source.renews and await source.current() == "abc"
    assert await source.headers() == [(b"authorization", b"Bearer abc")]
    assert await TokenSource(None, None).headers() is None
    with pytest.raises(ValueError):
        TokenSource("a", lambda: "b")


async def test_provider_is_called_when_due_sync_or_async() -> None:
    calls = []

    def sync() -> str:
        calls.append(1)
        return token(120)

    source = TokenSource(None, sync)
    first = await source.current()
    assert await source.current() == first and len(calls) == 1  # not due yet
    assert 85 < source.renew_in() <= 90  # 30 s before exp
    short = TokenSource(None, lambda: token(4))
    await short.current()
    assert 1.0 < short.renew_in() <= 2.0  # half the lifetime for short tokens

    asked = []

    async def asynchronous() -> str:
        asked.append(1)
        return token(-1)  # already due: asked again each time

    stale = TokenSource(None, asynchronous)
    await stale.current()
    assert stale.renew_in() < 0
    await stale.current()
    assert len(asked) == 2
    with pytest.raises(TypeError):
        await TokenSource(None, lambda: "").current()
