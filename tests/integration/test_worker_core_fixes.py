"""Issue 8's bugs, each through a real worker (and master) over real sockets.

The fragment limit, the RFC 6455 handshake answers, ``--port 0``
advertising the bound port, and the counters reaching ``/v1/stats`` and
``/metrics`` (4029 closes among them).
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import Proc, running

from .cluster import http_client, wait_for, worker_for
from .wsclient import raw_connect

OP_TEXT, OP_CONT = 1, 0


def _frame(op: int, payload: bytes, fin: bool) -> bytes:
    return bytes([(0x80 if fin else 0) | op, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def _head(base: str, *lines: str) -> bytes:
    host, port = base.split("//")[1].split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    request = "\r\n".join(["GET /v1/app?client=a HTTP/1.1", f"Host: {host}", *lines]) + "\r\n\r\n"
    await stream.send_all(request.encode())
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
    await stream.aclose()
    return data


async def test_1025_fragments_close_1009_but_1024_pass(worker: Proc) -> None:
    async with raw_connect(worker.url, "/v1/app", client="frag") as raw:
        body = b'{"type":"ping","id":"ok"}'
        frames = _frame(OP_TEXT, body[:1], False) + b"".join(
            _frame(OP_CONT, body[i:i + 1], False) for i in range(1, len(body) - 1))
        frames += b"".join(_frame(OP_CONT, b"", False) for _ in range(1023 - len(body) + 1))
        await raw.send_bytes(frames + _frame(OP_CONT, body[-1:], True))  # exactly 1024 frames
        assert await raw.recv() == {"type": "pong", "id": "ok"}
    async with raw_connect(worker.url, "/v1/app", client="frag2") as raw:
        flood = _frame(OP_TEXT, b"", False) + _frame(OP_CONT, b"", False) * 1024  # 1025 frames
        await raw.send_bytes(flood)
        code, reason = await raw.read_close()  # type: ignore[misc]
        assert code == 1009 and "fragments" in reason


async def test_version_refusal_names_13_and_a_bad_key_is_400(worker: Proc) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = ("Upgrade: websocket", "Connection: Upgrade")
    old = await _head(worker.url, *upgrade, "Sec-WebSocket-Version: 8", f"Sec-WebSocket-Key: {key}")
    assert old.startswith(b"HTTP/1.1 426 ") and b"\r\nSec-WebSocket-Version: 13\r\n" in old
    for bad_key in ("Sec-WebSocket-Key: c2hvcnQ=", None):
        lines = [*upgrade, "Sec-WebSocket-Version: 13"] + ([bad_key] if bad_key else [])
        answer = await _head(worker.url, *lines)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"Sec-WebSocket-Key" in answer
    plain = await _head(worker.url)
    assert plain.startswith(b"HTTP/1.1 426 ") and b"\r\nUpgrade: websocket\r\n" in plain


async def test_port_0_advertises_the_bound_port(two: tuple[Proc, list[Proc]]) -> None:
    master, _ = two
    zero = Proc(["worker", "--port", "0", "--master", master.http], 0, "ws")
    # Proc.start waits on the port it was given: start this one by hand
    zero.popen = subprocess.Popen([sys.executable, "-m", "mc.cli", *zero.args],
                                  stdout=subprocess.DEVNULL, stderr=zero.log)
    try:
        async with http_client() as http:
            async def probe() -> list[dict] | None:
                workers = (await http.get(f"{master.http}/v1/workers")).json()["workers"]
                return [w for w in workers if ":" in w["id"]] or None  # HOSTNAME:PORT, not --id w<port>
            [entry] = await wait_for(probe, what="the --port 0 worker registered")
        port = int(entry["url"].rsplit(":", 1)[1])
        assert port != 0 and entry["id"] == f"{socket.gethostname()}:{port}"
        assert entry["url"] == f"ws://127.0.0.1:{port}"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    finally:
        zero.stop()


async def test_overflows_and_refusals_are_counted_in_stats_and_metrics(
    two: tuple[Proc, list[Proc]],
) -> None:
    master, _ = two
    with running(worker_for(master, "--id", "counted")) as (w,):
        async with http_client() as http:
            await wait_for(lambda: _listed(http, master, "counted"), what="registered")
            for _ in range(3):
                assert (await http.get(f"{w.http}/nowhere")).status_code == 404
            async with raw_connect(w.url, "/v1/consumer", name="slow", rcvbuf=4096) as slow:
                await slow.send({"type": "subscribe", "topic": "flood", "id": "s"})
                async with raw_connect(w.url, "/v1/app", client="flooder") as app:
                    await slow.recv()
                    payload = "x" * 4000
                    for _ in range(2000):  # 8 MB for a consumer that never reads: past 4 MiB
                        await app.send({"type": "publish", "topic": "flood", "data": payload})

            async def counted() -> dict | None:
                stats = (await http.get(f"{master.http}/v1/stats")).json()
                mine = [x for x in stats["workers"] if x["id"] == "counted"]
                ok = mine and mine[0]["slow_consumer_closes"] == 1 and mine[0]["handshakes_refused"] >= 3
                return mine[0] if ok else None

            entry = await wait_for(counted, what="the 4029 close and the refusals in /v1/stats")
            assert entry["handshakes_refused"] == 3
            text = (await http.get(f"{master.http}/metrics")).text
    samples = {(s.name, s.labels.get("worker")): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("mc_slow_consumer_closes_total", "counted")] == 1
    assert samples[("mc_worker_handshakes_refused_total", "counted")] == 3


async def _listed(http: httpx.AsyncClient, master: Proc, wid: str) -> bool:
    workers = (await http.get(f"{master.http}/v1/workers")).json()["workers"]
    return any(w["id"] == wid for w in workers)

