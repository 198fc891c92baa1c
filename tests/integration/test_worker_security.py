"""App tokens, consumer API keys and rate limits on a real worker (PROTOCOL.md "Security", "Limits").

Tokens are minted with ``mc token`` (the shell command users run), so the
README's commands are what is tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.procs import Proc, running, worker_proc

from .wsclient import connect, rejected

SECRET = "integration-secret-0123456789abcdef0123456789"
KEY = "consumer-key-0123456789"

pytestmark = pytest.mark.timeout(60)


def mint(sub: str, ttl: float, *extra: str) -> str:
    argv = [sys.executable, "-m", "mc.cli", "token", "--sub", sub, "--ttl", str(ttl), *extra]
    out = subprocess.run(argv, env=dict(os.environ, MC_JWT_SECRET=SECRET), capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def secured() -> Proc:
    env_args = ("--jwt-secret", SECRET, "--api-keys", KEY, "--publish-rate", "5")
    with running(worker_proc(*env_args)) as (w,):
        yield w


async def test_token_required_and_checked(secured: Proc) -> None:
    assert (await rejected(secured.url, "/v1/app", client="alice")).status_code == 401
    assert (await rejected(secured.url, "/v1/app", token=mint("alice", 60) + "x")).status_code == 401
    assert (await rejected(secured.url, "/v1/app", client="bob", token=mint("alice", 60))).status_code == 401
    assert (await rejected(secured.url, "/v1/chat/private", token=mint("a", 60, "--chat", "public.*"))
            ).status_code == 403
    async with connect(secured.url, "/v1/app", token=mint("alice", 60, "--tags", "vip")) as app:
        assert app.welcome["client"] == "alice"


async def test_expiry_closes_4001_and_refresh_keeps_it_open(secured: Proc) -> None:
    started = time.monotonic()
    async with connect(secured.url, "/v1/app", token=mint("short", 2)) as short, \
            connect(secured.url, "/v1/app", token=mint("kept", 2)) as kept:
        renewed = await kept.request({"type": "refresh", "token": mint("kept", 60), "id": "r"})
        assert renewed["type"] == "ack"
        with pytest.raises(ConnectionClosed) as closed:
            with trio.fail_after(5):
                while True:
                    await short.recv(timeout=5)
        assert closed.value.reason.code == 4001
        assert 1.5 < time.monotonic() - started < 4.0
        await trio.sleep_until(started + 4.0)  # past both original expiries
        await kept.send({"type": "ping", "id": "alive"})
        assert (await kept.recv_type("pong"))["id"] == "alive"


async def test_publish_claim_and_rate_limit(secured: Proc) -> None:
    async with connect(secured.url, "/v1/app", token=mint("pub", 60, "--publish", "orders.>")) as app:
        denied = await app.request({"type": "publish", "topic": "admin.x", "data": 1, "id": "no"})
        assert denied["type"] == "error" and denied["code"] == "forbidden" and denied["id"] == "no"
        answers = [await app.request({"type": "publish", "topic": "orders.eu", "data": i, "id": f"p{i}"})
                   for i in range(12)]
        kinds = [a.get("code", a["type"]) for a in answers]
        assert "rate_limited" in kinds and kinds.count("ack") >= 9  # burst 2 x 5/s, then 5/s


async def test_consumer_api_key(secured: Proc) -> None:
    assert (await rejected(secured.url, "/v1/consumer", name="c")).status_code == 401
    assert (await rejected(secured.url, "/v1/consumer", name="c", token="wrong")).status_code == 401
    async with connect(secured.url, "/v1/consumer", name="c", token=KEY) as consumer:
        assert consumer.welcome["name"] == "c"


async def test_sdk_token_provider_renews_before_expiry(secured: Proc) -> None:
    """A 3 s token renewed by the SDK itself (refresh frame): still connected after 7 s;
    the provider is also what a reconnect uses."""
    import mc

    calls: list[float] = []

    async def provider() -> str:
        calls.append(time.monotonic())
        return await trio.to_thread.run_sync(mint, "renewed", 3)

    http_url = secured.url.replace("ws://", "http://", 1)
    async with mc.connect_app(http_url, client="renewed", token_provider=provider) as app:
        first = app.worker
        await trio.sleep(7)
        assert app.worker == first  # the same connection: never closed with 4001
        assert await app.publish("orders.eu", 1) == 0
    assert len(calls) >= 3  # connect, then a renewal every ~1.5 s (half of a 3 s lifetime)


async def test_consumer_sdk_api_key(secured: Proc) -> None:
    import mc

    http_url = secured.url.replace("ws://", "http://", 1)
    async with mc.connect_consumer(http_url, name="keyed", api_key=KEY) as consumer:
        await consumer.subscribe("orders.>")
    with pytest.raises(mc.McError) as refused:
        async with mc.connect_consumer(http_url, name="keyless", connect_timeout=3):
            pass
    assert refused.value.code == "unauthorized"
