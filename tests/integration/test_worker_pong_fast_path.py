"""The reactor's pong fast path on a real worker (mc/worker/reactor.py).

A read that is exactly one empty masked pong only marks the connection alive;
the same six bytes arriving inside a frame must still reach the parser.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import trio

from mc.websocket import OP_CLOSE, OP_PING, OP_TEXT
from tests.procs import Proc, running, worker_proc

from .wsclient import raw_connect, unique

pytestmark = pytest.mark.timeout(60)

HB = 0.5
BARE_PONG_HEAD = b"\x8a\x80"


@pytest.fixture(scope="module")
def fast_worker() -> Iterator[Proc]:
    """A 0.5 s heartbeat: a connection silent for 1.5 s is closed with 4008."""
    with running(worker_proc("--heartbeat", str(HB))) as (w,):
        yield w


@pytest.mark.parametrize("mask", [b"\x00\x00\x00\x00", os.urandom(4)], ids=["zero-key", "random-key"])
async def test_bare_pongs_keep_a_connection_open(fast_worker, mask):
    """Answering each ping with one 6-byte pong (as holdgen does) is activity: the
    connection outlives 3 x heartbeat several times over and still works."""
    async with raw_connect(fast_worker.url, "/v1/app", client=unique("pong")) as raw:
        pings = 0
        with trio.move_on_after(8 * HB):
            while True:
                op, payload = await raw.read_frame(10 * HB)
                assert op == OP_PING, (op, payload)  # never a 4008 close
                pings += 1
                await raw.send_bytes(BARE_PONG_HEAD + mask)
        assert pings >= 6
        await raw.send({"type": "ping", "id": "after"})
        assert await raw.recv() == {"type": "pong", "id": "after"}


async def test_pong_bytes_inside_a_frame_go_to_the_parser(fast_worker):
    """The tail of a text frame that looks like a bare pong, read on its own: it is
    frame payload (here invalid UTF-8, so 1007), not a pong."""
    async with raw_connect(fast_worker.url, "/v1/app", client=unique("split")) as raw:
        payload = b'{"type":"ping"}' + BARE_PONG_HEAD + b"\x00\x00\x00\x00"
        frame = bytes((0x80 | OP_TEXT, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload
        await raw.send_bytes(frame[:-6])
        await trio.sleep(0.2)  # read apart: the parser now holds a partial frame
        await raw.send_bytes(frame[-6:])
        with trio.fail_after(2 * HB):  # well before the idle timeout could close it
            while True:
                op, payload = await raw.read_frame()
                if op == OP_CLOSE:
                    break
        assert payload[0] == 1007, payload
