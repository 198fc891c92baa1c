"""TLS end to end: a master on https/wss and workers on wss, real processes and real clients.

The certificate is made by the test (tests/certs.py, a private CA). The worker
processes verify the master's certificate through ``SSL_CERT_FILE`` (the stdlib
default context), as docs/deploying.md tells operators with a private CA to.
Clients: httpx (``verify=``), trio-websocket (``ssl_context=``) and the
``websockets`` package.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

import mc
from mc.bench.certs import CertFiles
from mc.bench.wsclient import request_bytes
from mc.websocket import OP_TEXT, FrameParser
from tests.procs import Proc, free_port, free_run

from .test_sdk_support import receive
from .wsclient import JSON, header

TIMEOUT = 10.0


def tls_flags(certs: CertFiles) -> list[str]:
    return [f"--tls-cert={certs.cert}", f"--tls-key={certs.key}"]


@pytest.fixture(scope="module")
def tls_cluster(certs: CertFiles) -> Iterator[tuple[Proc, Proc]]:
    """A TLS master and one TLS worker registered with it."""
    ctx = certs.client_context()
    env = {"SSL_CERT_FILE": str(certs.ca)}
    mport, wport = free_port(), free_port()
    master = Proc(["master", "--port", str(mport), *tls_flags(certs)], mport, "wss", verify=ctx, env=env)
    worker = Proc(["worker", "--port", str(wport), "--id", "wtls", "--master", f"https://127.0.0.1:{mport}",
                   *tls_flags(certs)], wport, "wss", verify=ctx, env=env)
    master.start()
    try:
        worker.start()
        try:
            wait_registered_sync_tls(master, ctx)
            yield master, worker
        finally:
            worker.stop()
    finally:
        master.stop()


def wait_registered_sync_tls(master: Proc, ctx: ssl.SSLContext) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        body = httpx.get(f"{master.http}/v1/workers", verify=ctx, timeout=2).json()
        if body["workers"]:
            return
        time.sleep(0.05)
    raise AssertionError("the TLS worker did not register over wss")


async def test_master_serves_https_and_its_dashboard(tls_cluster, certs) -> None:
    master, _ = tls_cluster
    async with httpx.AsyncClient(verify=certs.client_context(), timeout=TIMEOUT) as http:
        assert (await http.get(f"{master.http}/healthz")).status_code == 200
        page = await http.get(f"{master.http}/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        workers = (await http.get(f"{master.http}/v1/workers")).json()["workers"]
        assert [w["url"] for w in workers] == [tls_cluster[1].url]
        assert workers[0]["url"].startswith("wss://127.0.0.1:")
        assign = (await http.get(f"{master.http}/v1/assign", params={"client": "tls-a"})).json()
        assert assign["url"] == tls_cluster[1].url


async def test_a_client_that_does_not_trust_the_certificate_fails(tls_cluster) -> None:
    master, worker = tls_cluster
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:  # certifi's CAs only
        with pytest.raises(httpx.ConnectError) as info:
            await http.get(f"{master.http}/healthz")
    cause: BaseException | None = info.value
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None, f"not a certificate failure: {info.value!r}"
    # (trio-websocket turns a verification failure into a ConnectionTimeout; websockets says it)
    with pytest.raises(ssl.SSLCertVerificationError):
        await trio.to_thread.run_sync(_websockets_client, f"{worker.url}/v1/app?client=x",
                                      ssl.create_default_context())


async def follow_tls(url: str, ctx: ssl.SSLContext) -> tuple[list[str], Any]:
    """The hops (Locations) of a handshake to the master and the welcome at the end."""
    hops = [url]
    for _ in range(5):
        try:
            async with open_websocket_url(url, subprotocols=[JSON], ssl_context=ctx,
                                          connect_timeout=TIMEOUT, disconnect_timeout=2) as ws:
                with trio.fail_after(TIMEOUT):
                    return hops, orjson.loads(await ws.get_message())
        except ConnectionRejected as exc:
            assert exc.status_code == 307, exc
            location = header(exc, "location")
            assert location
            url = location
            hops.append(url)
    raise AssertionError(f"too many hops: {hops}")


async def test_the_master_redirects_to_wss_and_the_worker_welcomes(tls_cluster, certs) -> None:
    master, worker = tls_cluster
    hops, welcome = await follow_tls(f"{master.url}/v1/app?client=tls-alice", certs.client_context())
    assert len(hops) == 2 and hops[1].startswith(f"{worker.url}/v1/app?")
    assert welcome["type"] == "welcome"


async def test_a_chat_over_wss_large_and_small_messages(tls_cluster, certs) -> None:
    """Two members on the worker over wss: frames larger than a TLS record, and many small ones."""
    _, worker = tls_cluster
    ctx = certs.client_context()
    url = f"{worker.url}/v1/chat/tls-room"
    async with open_websocket_url(f"{url}?client=a", subprotocols=[JSON], ssl_context=ctx,
                                  connect_timeout=TIMEOUT) as a, \
            open_websocket_url(f"{url}?client=b", subprotocols=[JSON], ssl_context=ctx,
                               connect_timeout=TIMEOUT, message_queue_size=10_000) as b:
        with trio.fail_after(TIMEOUT):
            assert orjson.loads(await a.get_message())["type"] == "welcome"
            assert orjson.loads(await b.get_message())["type"] == "welcome"
            big = "x" * 60_000
            sent = [big, *(f"m{i}" for i in range(200))]
            for data in sent:
                await a.send_message(orjson.dumps({"type": "send", "data": data}).decode())
            got: list[str] = []
            while len(got) < len(sent):
                frame = orjson.loads(await b.get_message())
                if frame["type"] == "chat":
                    got.append(frame["data"])
            assert got == sent


def _slow_reader(port: int, ctx: ssl.SSLContext, ready: threading.Event, go: threading.Event,
                 frames: int) -> list[str]:
    """A chat member with a 16 KiB receive buffer that reads nothing until ``go``: the
    worker's socket fills, so its TLS backlog and the flusher's drain path do the work."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    raw.settimeout(TIMEOUT)
    raw.connect(("127.0.0.1", port))
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(request_bytes("/v1/chat/tls-slow?client=slow", port, JSON))
        parser = FrameParser(1 << 20, expect_masked=False)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        assert head.startswith(b"HTTP/1.1 101 "), head
        sizes: list[str] = []
        pending = head.split(b"\r\n\r\n", 1)[1]
        welcomed = False
        while True:
            for op, payload in parser.feed(pending) if pending else []:
                frame = orjson.loads(payload) if op == OP_TEXT else {}
                welcomed = welcomed or frame.get("type") == "welcome"
                if frame.get("type") == "chat":
                    sizes.append(f"{frame['data'][0]}x{len(frame['data'])}")  # order and size
            if welcomed and not ready.is_set():
                ready.set()
                assert go.wait(TIMEOUT)
            if len(sizes) == frames:
                return sizes
            pending = s.recv(65536)
            assert pending, "the worker closed the slow reader"


async def test_a_slow_tls_reader_gets_every_byte(tls_cluster, certs) -> None:
    _, worker = tls_cluster
    ctx = certs.client_context()
    ready, go = threading.Event(), threading.Event()
    big = [str(i % 10) * 50_000 for i in range(40)]  # 2 MB: far more than the socket buffers hold
    async with trio.open_nursery() as nursery:
        result: list[list[str]] = []

        async def reader() -> None:
            result.append(await trio.to_thread.run_sync(_slow_reader, worker.port, ctx, ready, go, len(big)))

        nursery.start_soon(reader)
        with trio.fail_after(TIMEOUT):
            while not ready.is_set():
                await trio.sleep(0.02)
        async with open_websocket_url(f"{worker.url}/v1/chat/tls-slow?client=fast", subprotocols=[JSON],
                                      ssl_context=ctx, connect_timeout=TIMEOUT) as fast:
            for data in big:
                await fast.send_message(orjson.dumps({"type": "send", "data": data}).decode())
            await trio.sleep(1.0)  # the worker fills the slow reader's socket meanwhile
            go.set()
            with trio.fail_after(20):
                while not result:
                    await trio.sleep(0.05)
    assert result[0] == [f"{d[0]}x{len(d)}" for d in big]


async def test_the_sdk_trusting_the_ca_chats_through_the_tls_master(tls_cluster, certs) -> None:
    """The Python SDK's ``ssl_context=``: https to the master, 307 to the worker's wss."""
    master, _ = tls_cluster
    ctx = certs.client_context()
    async with mc.open_chat(master.http, "tls-sdk-room", client="alice", ssl_context=ctx) as alice, \
            mc.open_chat(master.http, "tls-sdk-room", client="bob", ssl_context=ctx) as bob:
        assert await receive(alice) == mc.Joined("bob")
        assert await bob.send("over tls") == 1
        msg = await receive(alice)
        assert (msg.sender, msg.data) == ("bob", "over tls")
    async with mc.connect_app(master.http, client="tls-sdk-app", ssl_context=ctx) as app:
        assert app.worker == "wtls"


def _websockets_client(url: str, ctx: ssl.SSLContext) -> str:
    from websockets.sync.client import connect

    with connect(url, ssl=ctx, subprotocols=[JSON], open_timeout=TIMEOUT) as ws:  # type: ignore[list-item]
        return str(orjson.loads(ws.recv(timeout=TIMEOUT))["type"])


async def test_the_websockets_package_connects(tls_cluster, certs) -> None:
    _, worker = tls_cluster
    kind = await trio.to_thread.run_sync(_websockets_client, f"{worker.url}/v1/app?client=tls-ws",
                                         certs.client_context())
    assert kind == "welcome"


def _plain(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


async def test_plain_http_to_the_tls_worker_is_answered_and_harmless(tls_cluster, certs) -> None:
    _, worker = tls_cluster
    answer = await trio.to_thread.run_sync(
        _plain, worker.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"use https:// or wss://" in answer
    # a silent TCP connection is cut at the handshake timeout, and blocks nobody meanwhile
    with socket.create_connection(("127.0.0.1", worker.port), timeout=TIMEOUT):
        async with httpx.AsyncClient(verify=certs.client_context(), timeout=TIMEOUT) as http:
            assert (await http.get(f"{worker.http}/healthz")).status_code == 200
    assert worker.popen is not None and worker.popen.poll() is None
    assert "Traceback" not in worker.output()


def test_mc_up_forwards_tls(certs: CertFiles) -> None:
    """``mc up --tls-cert --tls-key``: an https master, wss workers, registered over wss."""
    port = free_run(2)
    env = {"SSL_CERT_FILE": str(certs.ca), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mc.cli", "up", "--workers", "1", "--port", str(port),
                             *tls_flags(certs)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **env})
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            assert line, "mc up exited: " + "".join(lines)
            lines.append(line)
            if line.startswith("  worker w1:"):
                break
        assert f"master https://127.0.0.1:{port}" in "".join(lines)
        assert lines[-1].strip() == f"worker w1: wss://127.0.0.1:{port + 1}"
        master = Proc([], port, "wss", verify=certs.client_context())
        wait_registered_sync_tls(master, certs.client_context())
        workers = httpx.get(f"{master.http}/v1/workers", verify=certs.client_context()).json()["workers"]
        assert [w["url"] for w in workers] == [f"wss://127.0.0.1:{port + 1}"]
    finally:
        proc.terminate()
        proc.wait(15)


def test_mc_up_refuses_half_a_pair(certs: CertFiles) -> None:
    out = subprocess.run([sys.executable, "-m", "mc.cli", "up", "--workers", "1", "--port", str(free_port()),
                          f"--tls-cert={certs.cert}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "tls_cert and tls_key go together" in out.stderr
    assert "Traceback" not in out.stderr

