"""The control link as a tool would speak it: JSON text frames, batches, bad input."""

from __future__ import annotations

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.procs import master_proc, running

pytestmark = pytest.mark.timeout(30)


async def _receive_all(ws, count: int) -> list[dict]:
    """``count`` messages, whether they come one per frame or batched."""
    out: list[dict] = []
    with trio.fail_after(5):
        while len(out) < count:
            decoded = orjson.loads(await ws.get_message())
            out.extend(decoded if isinstance(decoded, list) else [decoded])
    return out


async def test_a_batch_of_claims_and_lookups_is_answered_in_full():
    with running(master_proc()) as (master,):
        url = master.http.replace("http://", "ws://") + "/v1/control"
        async with open_websocket_url(url) as ws:
            await ws.send_message(orjson.dumps({
                "type": "register", "worker": "tool", "url": "ws://127.0.0.1:1",
                "capacity": 10, "sessions": {}, "presence": [],
            }).decode())
            (registered,) = await _receive_all(ws, 1)
            assert registered["type"] == "registered"
            batch = [{"type": "claim", "id": i, "session": f"s{i}"} for i in range(50)]
            batch += [{"type": "lookup", "id": 100 + i, "session": f"s{i}"} for i in range(50)]
            await ws.send_message(orjson.dumps(batch).decode())
            replies = await _receive_all(ws, 100)
            assert sorted(r["id"] for r in replies) == [*range(50), *range(100, 150)]
            assert all(r["type"] == "owner" and r["worker"] == "tool" for r in replies)


@pytest.mark.parametrize("frame", [
    "not json",
    "[]",
    "[1, 2]",
    '{"type": "claim", "id": 1, "session": "s"}',  # before register
])
async def test_bad_control_frames_close_with_4000(frame):
    with running(master_proc()) as (master,):
        url = master.http.replace("http://", "ws://") + "/v1/control"
        async with open_websocket_url(url) as ws:
            await ws.send_message(frame)
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 4000


async def test_a_register_with_a_full_workers_presence_is_accepted():
    """20,000 presence entries (~900 KiB of JSON, far over max_body) in one register:
    what a busy worker sends after a master restart; 1009 here made it retry forever."""
    presence = [[f"client-{i:06d}-{'x' * 20}", "default"] for i in range(20_000)]
    with running(master_proc()) as (master,):
        url = master.http.replace("http://", "ws://") + "/v1/control"
        async with open_websocket_url(url) as ws:
            await ws.send_message(orjson.dumps({
                "type": "register", "worker": "big", "url": "ws://127.0.0.1:1",
                "capacity": 20_000, "sessions": {}, "presence": presence,
            }).decode())
            (registered,) = await _receive_all(ws, 1)
            assert registered["type"] == "registered"
