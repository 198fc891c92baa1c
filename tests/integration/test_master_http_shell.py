"""The master's HTTP shell: Hypercorn with mc.master.hypercorn_patches and mc.master.lean_tcp.

A real Hypercorn (trio worker) served in the test's own trio loop, a small
ASGI app, and raw client sockets in threads: the same bytes as before the
patches, inline requests in the connection's own task, the keep-alive and
read timeouts kept, closed peers released at once, big writes whole.
"""

from __future__ import annotations

import functools
import gc
import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from mc.master import hypercorn_patches
from mc.master.hypercorn_patches import INLINE_BODY
from tests.asgi import request_body
from tests.procs import free_port

INLINE = "/inline"
BIG = 16 * 1024 * 1024  # past the kernel's send and receive buffers (4 + 6 MiB at most)


class App:
    """Answers ``{task number}:{body length}``; ``/sleep`` waits first, ``/big`` answers :data:`BIG` bytes,
    a body ``in parts`` is answered in three parts."""

    def __init__(self) -> None:
        self.calls = 0
        self.tasks: list[trio.lowlevel.Task] = []  # held: ids of tasks that ended are reused

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        self.calls += 1
        body = await request_body(receive)
        if scope["path"] == "/sleep":
            await trio.sleep(0.8)
        task = trio.lowlevel.current_task()
        if task not in self.tasks:
            self.tasks.append(task)
        if body == b"in parts":  # a streamed answer: the inline path sends it as it comes
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"7")]})
            for part, more in ((b"in", True), (b" par", True), (b"t", False)):
                await send({"type": "http.response.body", "body": part, "more_body": more})
            return
        answer = b"x" * BIG if scope["path"] == "/big" else b"%d:%d" % (self.tasks.index(task), len(body))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})


def _config() -> tuple[int, Config]:
    assert hypercorn_patches.install(frozenset({INLINE}))
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.keep_alive_timeout = 0.5
    config.read_timeout = 1
    config.graceful_timeout = 3
    return port, config


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, App]]:
    port, config = _config()
    app = App()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, app, config)
        yield port, app
        nursery.cancel_scope.cancel()


def _request(path: str, body: bytes = b"", chunked: bool = False) -> bytes:
    if chunked:
        return (f"POST {path} HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n".encode()
                + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    return f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


def _answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response: its head and its body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        chunk = sock.recv(1 << 20)
        assert chunk
        body += chunk
    assert len(body) == length
    return head, body


def _tasks(task: trio.lowlevel.Task | None = None) -> int:
    """Tasks in the test's trio run (the server's connection tasks among them)."""
    task = task or trio.lowlevel.current_root_task()
    assert task is not None
    return 1 + sum(_tasks(child) for nursery in task.child_nurseries for child in nursery.child_tasks)


async def _exchange(port: int, *requests: bytes) -> list[tuple[bytes, bytes]]:
    def run() -> list[tuple[bytes, bytes]]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            out = []
            for request in requests:
                sock.sendall(request)
                out.append(_answer(sock))
            return out
    return await trio.to_thread.run_sync(run)


async def test_inline_requests_run_in_the_connections_task(server: tuple[int, App]) -> None:
    port, _ = server
    answers = await _exchange(port, _request(INLINE, b"abc"), _request(INLINE, b"de"))
    (head1, body1), (head2, body2) = answers
    assert head1.startswith(b"HTTP/1.1 200") and head2.startswith(b"HTTP/1.1 200")
    task1, n1 = body1.split(b":")
    task2, n2 = body2.split(b":")
    assert (n1, n2) == (b"3", b"2")
    assert task1 == task2  # one connection, one task: the app was not spawned per request


async def test_other_requests_get_a_task_each(server: tuple[int, App]) -> None:
    port, _ = server
    big = INLINE_BODY + 1
    for body, first, second in [
        (b"a", _request("/other", b"a"), _request("/other", b"b")),
        (b"a", _request(INLINE, b"a", chunked=True), _request(INLINE, b"b", chunked=True)),
        (b"y" * big, _request(INLINE, b"y" * big), _request(INLINE, b"z" * big)),
    ]:
        (_, answer1), (_, answer2) = await _exchange(port, first, second)
        assert answer1.split(b":")[1] == b"%d" % len(body)
        assert answer1.split(b":")[0] != answer2.split(b":")[0]


async def test_keep_alive_timeout_closes_an_idle_connection(server: tuple[int, App]) -> None:
    port, _ = server

    def run() -> tuple[float, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_request(INLINE, b"a"))
            _answer(sock)
            started = time.monotonic()
            rest = sock.recv(10)
            return time.monotonic() - started, rest
    waited, rest = await trio.to_thread.run_sync(run)
    assert rest == b""
    assert 0.3 < waited < 2.0


async def test_a_busy_connection_outlives_the_keep_alive_timeout(server: tuple[int, App]) -> None:
    port, _ = server
    ((head, _),) = await _exchange(port, _request("/sleep"))  # 0.8 s, past the 0.5 s keep-alive
    assert head.startswith(b"HTTP/1.1 200")
    ((head, _), (head2, _)) = await _exchange(port, _request(INLINE), _request("/sleep"))
    assert head2.startswith(b"HTTP/1.1 200")


async def test_read_timeout_cuts_a_half_sent_request(server: tuple[int, App]) -> None:
    port, app = server

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /inline HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc")
            return sock.recv(100)
    assert await trio.to_thread.run_sync(run) == b""
    assert app.calls == 0  # the inline app never ran without its whole body


async def test_a_closed_peer_releases_its_connection_at_once(server: tuple[int, App]) -> None:
    port, _ = server

    before = _tasks()

    def run() -> None:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(10)]
        for sock in socks:
            sock.sendall(_request(INLINE, b"a"))
            _answer(sock)
        for sock in socks:
            sock.close()
    await trio.to_thread.run_sync(run)
    with trio.fail_after(0.4):  # far below the 0.5 s keep-alive timeout
        while _tasks() > before:
            await trio.sleep(0.02)


async def test_a_big_answer_to_a_slow_reader_arrives_whole(server: tuple[int, App]) -> None:
    port, _ = server

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_request("/big"))
            time.sleep(0.3)  # the server's first write fills the buffers
            return _answer(sock)[1]
    assert await trio.to_thread.run_sync(run) == b"x" * BIG


async def test_shutdown_closes_idle_connections_at_once_and_busy_ones_after_their_answer() -> None:
    port, config = _config()
    config.keep_alive_timeout = 30
    stop = trio.Event()

    def idle() -> float:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_request(INLINE, b"a"))
            _answer(sock)
            idle_from = time.monotonic()
            assert sock.recv(10) == b""  # closed at shutdown, long before the keep-alive timeout
            return time.monotonic() - idle_from

    def busy() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_request("/sleep"))
            head, _ = _answer(sock)
            assert sock.recv(10) == b""
            return head

    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve, App(), config, shutdown_trigger=stop.wait))
        results: dict[str, Any] = {}

        async def run(name: str, fn: Any) -> None:
            results[name] = await trio.to_thread.run_sync(fn)
        nursery.start_soon(run, "idle", idle)
        nursery.start_soon(run, "busy", busy)
        await trio.sleep(0.3)  # both connected; the busy one's answer is 0.5 s away
        stop.set()
    assert results["busy"].startswith(b"HTTP/1.1 200")
    assert results["idle"] < 1.0


async def test_a_reset_peer_is_released_and_others_are_served(server: tuple[int, App]) -> None:
    port, _ = server

    before = _tasks()

    def reset() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_request(INLINE, b"a"))
            _answer(sock)
            sock.sendall(b"POST /inline HTTP/1.1\r\nhost: t\r\n")  # half a head, then a reset
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.to_thread.run_sync(reset)
    with trio.fail_after(0.4):
        while _tasks() > before:
            await trio.sleep(0.02)
    ((head, _),) = await _exchange(port, _request(INLINE, b"b"))
    assert head.startswith(b"HTTP/1.1 200")


async def test_inline_requests_leave_nothing_to_the_cyclic_collector(server: tuple[int, App]) -> None:
    port, _ = server  # measured on one open connection: a connection's own teardown is not counted

    def run() -> tuple[int, int]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for _ in range(50):  # warm: first-use caches
                sock.sendall(_request(INLINE, b"a"))
                _answer(sock)
            gc.disable()
            try:
                gc.collect()
                answered = 0
                for _ in range(50):
                    sock.sendall(_request(INLINE, b"a"))
                    answered += _answer(sock)[0].startswith(b"HTTP/1.1 200")
                return answered, gc.collect()
            finally:
                gc.enable()
    answered, left = await trio.to_thread.run_sync(run)
    assert answered == 50
    assert left < 50  # a cycle per request left a dozen objects each (600 here)


async def test_a_busy_connection_outlives_both_timeouts_then_closes_on_time(server: tuple[int, App]) -> None:
    port, _ = server  # keep-alive 0.5 s, read timeout 1 s: the timer wakes early and sleeps again

    def run() -> tuple[int, float, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            answered = 0
            started = time.monotonic()
            while time.monotonic() - started < 2.5:
                sock.sendall(_request(INLINE, b"a"))
                _answer(sock)
                answered += 1
                time.sleep(0.1)
            idle_from = time.monotonic()
            rest = sock.recv(10)
            return answered, time.monotonic() - idle_from, rest
    answered, waited, rest = await trio.to_thread.run_sync(run)
    assert answered >= 15
    assert rest == b""
    assert 0.3 < waited < 1.0


async def test_an_h2c_upgrade_is_still_seen(server: tuple[int, App]) -> None:
    port, _ = server  # _check_protocol runs only for such requests now

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /other HTTP/1.1\r\nhost: t\r\nconnection: Upgrade, HTTP2-Settings\r\n"
                         b"upgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
            return sock.recv(200)
    assert (await trio.to_thread.run_sync(run)).startswith(b"HTTP/1.1 101")


async def test_an_inline_answer_in_parts_arrives_whole_and_the_next_one_too(server: tuple[int, App]) -> None:
    port, _ = server
    answers = await _exchange(port, _request(INLINE, b"in parts"), _request(INLINE, b"ab"))
    (head, body), (head2, body2) = answers
    assert head.startswith(b"HTTP/1.1 200") and body == b"in part"
    assert head2.startswith(b"HTTP/1.1 200") and body2.endswith(b":2")
