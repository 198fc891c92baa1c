"""Lean WebSocket client plumbing for the load generators.

No client library: raw non-blocking sockets, one ``select.epoll``, the
handshake written by hand, frames encoded with mc's ``encode_masked_frame``
and parsed with ``FrameParser(expect_masked=False)``. Every loop here is
bounded by a deadline. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import select
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from mc.websocket import OP_PONG, OP_TEXT, encode_masked_frame

from . import tlsclient

HOST = "127.0.0.1"
MASK = b"\x1f\x2e\x3d\x4c"  # one fixed mask: the server unmasks it like any other


class HandshakeFailed(Exception):
    pass


def request_bytes(path: str, port: int, subprotocol: str | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def text(obj: Any) -> bytes:
    """One masked text frame holding ``obj`` as JSON."""
    return encode_masked_frame(OP_TEXT, json.dumps(obj, separators=(",", ":")).encode(), MASK)


def pong(payload: bytes) -> bytes:
    return encode_masked_frame(OP_PONG, payload, MASK)


def open_many(
    port: int,
    paths: Iterable[str],
    *,
    timeout: float,
    concurrency: int = 256,
    tls: ssl.SSLContext | None = None,
) -> list[tuple[socket.socket, bytes]]:
    """Open one WebSocket per path to 127.0.0.1:``port``; returns (socket, bytes after the 101).

    At most ``concurrency`` handshakes are in progress at once; the whole
    batch must finish within ``timeout`` seconds. Sockets are left
    non-blocking with TCP_NODELAY. With ``tls`` each is a TLS socket
    (mc/bench/tlsclient.py) whose handshake is done before the upgrade.
    """
    todo = deque(enumerate(paths))
    results: list[Any] = [None] * len(todo)
    ep = select.epoll()
    pending: dict[int, list[Any]] = {}  # fd -> [index, sock, request sent?, received]
    deadline = time.monotonic() + timeout
    try:
        while todo or pending:
            if time.monotonic() > deadline:
                done = sum(r is not None for r in results)
                raise HandshakeFailed(f"only {done}/{len(results)} connections opened in {timeout}s")
            while todo and len(pending) < concurrency:
                i, path = todo.popleft()
                s = connect_nowait(port)
                pending[s.fileno()] = [i, s, path, b""]
                ep.register(s.fileno(), select.EPOLLOUT)
            for fd, _ in ep.poll(0.05):
                st = pending[fd]
                s = st[1]
                if type(st[2]) is str:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise HandshakeFailed(f"connect: {os.strerror(err)}")
                    if tls is not None:
                        if not isinstance(s, ssl.SSLSocket):
                            s = st[1] = tlsclient.wrap(s, tls, HOST)
                        want = tlsclient.step(s)
                        if want:
                            ep.modify(fd, want)
                            continue
                    s.send(request_bytes(st[2], port))
                    st[2] = None
                    ep.modify(fd, select.EPOLLIN)
                    continue
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise HandshakeFailed("server closed during the handshake")
                st[3] += data
                head, sep, rest = st[3].partition(b"\r\n\r\n")
                if not sep:
                    continue
                status = head.split(b"\r\n", 1)[0]
                if b" 101 " not in status + b" ":
                    raise HandshakeFailed(f"handshake refused: {status.decode(errors='replace')}")
                ep.unregister(fd)
                del pending[fd]
                results[st[0]] = (s, rest)
    except BaseException:
        for st in pending.values():
            st[1].close()
        for r in results:
            if r is not None:
                r[0].close()
        raise
    finally:
        ep.close()
    return results


def connect_nowait(port: int) -> socket.socket:
    """A non-blocking TCP_NODELAY socket connecting to HOST:``port`` (writable once connected)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    err = s.connect_ex((HOST, port))
    if err not in (0, errno.EINPROGRESS):
        s.close()
        raise HandshakeFailed(f"connect: {os.strerror(err)}")
    return s


def watch(socks: list[socket.socket]) -> tuple[select.epoll, dict[int, int]]:
    """An epoll reading every socket, and each one's index by fd."""
    ep = select.epoll()
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    return ep, {s.fileno(): i for i, s in enumerate(socks)}


def send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    """Write ``data`` on a non-blocking socket, waiting for room until ``deadline``."""
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
            view = view[n:]
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError("send timed out") from None
            select.select([], [sock], [], 0.05)


class Reporter:
    """JSON lines on stdout: the runner reads them (progress, ready, result)."""

    def __init__(self, role: str, slot: int) -> None:
        self.role = role
        self.slot = slot

    def emit(self, event: str, **fields: Any) -> None:
        fields.update(event=event, role=self.role, slot=self.slot, t=time.monotonic(),
                      cpu=time.process_time())
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def wait_go(timeout: float) -> bool:
    """Block until the runner writes a line on stdin ("go"); False on timeout or EOF."""
    r, _, _ = select.select([sys.stdin], [], [], timeout)
    if not r:
        return False
    return bool(sys.stdin.readline())
