"""The worker's reactor (one task reads every open connection) through a real worker.

Every way a connection can end is reported to the core once and its socket
closed: a close frame from the client, a FIN, a reset, a close frame that
came in the same packet as the upgrade request, a protocol violation. Many
connections at once, so that one reactor pass handles several of them.
"""

from __future__ import annotations

import socket
import struct

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from mc.websocket import OP_CLOSE, encode_masked_frame
from tests.procs import Proc

from .cluster import wait_for
from .wsclient import RawClient, raw_connect, unique

EACH = 40  # connections ended each way


def _metric(worker: Proc, name: str, **labels: str) -> float:
    text = httpx.get(f"{worker.http}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            if all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def _closes(worker: Proc) -> dict[str, float]:
    return {code: _metric(worker, "mc_connections_closed", code=code) for code in ("1000", "1002", "1006")}


async def _bye(raw: RawClient) -> None:
    await raw.send_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
    close = await raw.read_close()
    assert close is not None and close[0] == 1000
    await raw.wait_eof()


def _reset(raw: RawClient) -> None:
    sock = raw.stream.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_every_ending_is_reported_once_and_the_sockets_close(worker: Proc) -> None:
    before = _closes(worker)
    assert _metric(worker, "mc_connections", endpoint="app") == 0
    async with trio.open_nursery() as nursery:
        for way in ("bye", "fin", "reset", "violation"):
            for i in range(EACH):
                nursery.start_soon(_one, worker, way, i)

    async def none_open() -> bool:
        return _metric(worker, "mc_connections", endpoint="app") == 0

    await wait_for(none_open, timeout=10, what="no app connection open")
    after = _closes(worker)
    assert after["1000"] - before["1000"] == EACH
    assert after["1006"] - before["1006"] == 2 * EACH  # FIN and reset: gone without a close frame
    assert after["1002"] - before["1002"] == EACH


async def _one(worker: Proc, way: str, i: int) -> None:
    async with raw_connect(worker.url, "/v1/app", client=unique(f"{way}{i}")) as raw:
        await raw.send({"type": "ping", "id": "p"})
        assert (await raw.recv())["type"] == "pong"
        if way == "bye":
            await _bye(raw)
        elif way == "reset":
            _reset(raw)
        elif way == "violation":
            await raw.send_frame(1, b"{}", masked=False)  # clients must mask
            close = await raw.read_close()
            assert close is not None and close[0] == 1002
            await raw.wait_eof()
        # "fin": leaving the block closes the stream


async def test_a_close_frame_behind_the_upgrade_request_is_answered_then_the_socket_closes(
    worker: Proc,
) -> None:
    early = encode_masked_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
    async with raw_connect(worker.url, "/v1/app", client=unique("early"), welcome=False,
                           early=early) as raw:
        close = await raw.read_close()
        assert close is not None and close[0] == 1000
        await raw.wait_eof()
