"""Keepalive on a real worker: ping/pong frames, server pings, 4008 on silence."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from mc.websocket import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT
from tests.procs import Proc, running, worker_proc

from .wsclient import PROTOCOLS, connect, raw_connect, unique

pytestmark = pytest.mark.timeout(60)

FAST_HB = 0.5


@pytest.fixture(scope="module")
def fast_worker() -> Iterator[Proc]:
    """A worker with a 0.5 s heartbeat: silent connections close after ~1.5 s."""
    with running(worker_proc("--heartbeat", str(FAST_HB))) as (w,):
        yield w


def endpoints():
    return [
        ("/v1/app", {"client": unique("app")}),
        ("/v1/consumer", {"name": unique("svc")}),
        (f"/v1/chat/{unique('room')}", {"client": unique("app")}),
    ]


ENDPOINT_IDS = ["app", "consumer", "chat"]


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("which", range(3), ids=ENDPOINT_IDS)
async def test_ping_frame_gets_pong_with_same_id(worker, proto, which):
    path, query = endpoints()[which]
    async with connect(worker.url, path, proto=proto, **query) as c:
        await c.send({"type": "ping", "id": "abc-123"})
        assert await c.recv_type("pong") == {"type": "pong", "id": "abc-123"}
        await c.send({"type": "ping"})
        assert await c.recv_type("pong") == {"type": "pong"}
        # a pong frame from the client is accepted silently
        await c.send({"type": "pong", "id": "whatever"})
        assert await c.fence() == []


async def _silent_until_4008(url: str, path: str, query: dict) -> None:
    start = trio.current_time()
    async with raw_connect(url, path, **query) as raw:
        pings = 0
        with trio.fail_after(10 * FAST_HB):
            while True:
                event = await raw.read_frame(10 * FAST_HB)
                assert event is not None, f"{path}: dropped without a close frame"
                op, payload = event
                if op == OP_PING:  # seen, deliberately not answered
                    pings += 1
                    continue
                assert op == OP_CLOSE, event
                code, reason = payload
                break
        elapsed = trio.current_time() - start
        assert code == 4008, (path, code, reason)
        assert 3 * FAST_HB * 0.8 <= elapsed <= 3 * FAST_HB + 1.5, (path, elapsed)
        assert pings >= 1, path  # the server kept pinging meanwhile
        # our close reply ends it; the server then drops the socket
        await raw.send_frame(OP_CLOSE, (4008).to_bytes(2, "big"))
        await raw.wait_eof(5)


async def test_silent_clients_are_closed_with_4008(fast_worker):
    """App, consumer and chat connections that send nothing, concurrently."""
    async with trio.open_nursery() as nursery:
        for path, query in endpoints():
            nursery.start_soon(_silent_until_4008, fast_worker.url, path, query)


STAY = 4.5 * FAST_HB  # longer than the 3 x heartbeat idle timeout


async def _browser_like(url: str) -> None:
    """Answers no WebSocket pings but sends ``ping`` frames: any frame counts."""
    async with raw_connect(url, "/v1/app", client=unique("browser")) as raw:
        deadline = trio.current_time() + STAY
        n = 0
        while trio.current_time() < deadline:
            n += 1
            await raw.send({"type": "ping", "id": f"k{n}"})
            with trio.fail_after(2):
                while True:
                    op, payload = await raw.read_frame()
                    assert op in (OP_PING, OP_TEXT), (op, payload)  # never a close
                    if op == OP_TEXT:
                        assert b'"pong"' in payload and f'"k{n}"'.encode() in payload
                        break
            await trio.sleep(FAST_HB)


async def _pong_only(url: str) -> None:
    """Only answers the server's WebSocket pings."""
    async with raw_connect(url, "/v1/consumer", name=unique("svc")) as raw:
        with trio.move_on_after(STAY):
            while True:
                op, payload = await raw.read_frame(10)
                assert op == OP_PING, (op, payload)
                await raw.send_frame(OP_PONG, payload)
        await raw.send({"type": "ping", "id": "alive"})
        frame = await raw.recv()  # recv answers any further pings itself
        assert frame == {"type": "pong", "id": "alive"}


async def _idle_trio_websocket(url: str) -> None:
    async with connect(url, "/v1/app", client=unique("idle")) as c:
        await trio.sleep(STAY)  # trio-websocket answers pings in the background
        await c.send({"type": "ping", "id": "still"})
        assert await c.recv_type("pong") == {"type": "pong", "id": "still"}


async def test_active_clients_stay_connected(fast_worker):
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_browser_like, fast_worker.url)
        nursery.start_soon(_pong_only, fast_worker.url)
        nursery.start_soon(_idle_trio_websocket, fast_worker.url)


async def test_server_sends_websocket_pings(worker):
    # the shared worker pings every second
    async with raw_connect(worker.url, "/v1/app", client=unique("app")) as raw:
        for _ in range(2):  # every heartbeat, not once (bounded: a few heartbeats)
            op, payload = await raw.read_frame(5)
            assert op == OP_PING
            await raw.send_frame(OP_PONG, payload)


async def test_client_websocket_ping_gets_pong_with_payload(worker):
    async with raw_connect(worker.url, "/v1/consumer", name=unique("svc")) as raw:
        await raw.send_frame(OP_PING, b"hello?")
        with trio.fail_after(3):
            while True:
                op, payload = await raw.read_frame()
                if op == OP_PONG:
                    assert payload == b"hello?"
                    break
                assert op == OP_PING
