"""Lean WebSocket client plumbing for the load generators.

No client library: raw non-blocking sockets, one ``select.epoll``, the
handshake written by hand, frames encoded with mc's ``encode_masked_frame``
and parsed with ``FrameParser(expect_masked=False)``. Every loop here is
bounded by a deadline. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import base64
import errno
import functools
import json
import os
import select
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

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


class Setup(Protocol):
    """One connection being set up by :func:`open_all`: told of every epoll event on its socket."""

    sock: socket.socket

    def event(self) -> int:
        """Take the socket one step further: the epoll mask to wait for next, 0 once set up.

        Raises HandshakeFailed when the server refused or went away.
        """
        ...


S = TypeVar("S", bound=Setup)


def open_all(port: int, starts: Sequence[Callable[[socket.socket], S]], *, timeout: float,
             concurrency: int = 256, what: str = "connections") -> list[S]:
    """Connect one socket to 127.0.0.1:``port`` per entry of ``starts`` and set each up.

    ``starts[i]`` wraps the connecting socket in its protocol's :class:`Setup`
    (a WebSocket upgrade, a NATS ``CONNECT``). At most ``concurrency`` are in
    progress at once, all within ``timeout`` seconds; the sockets are left
    non-blocking with TCP_NODELAY, in the order of ``starts``.
    """
    todo = deque(enumerate(starts))
    results: list[S | None] = [None] * len(todo)
    ep = select.epoll()
    pending: dict[int, tuple[int, S]] = {}  # fd -> (index, its setup)
    deadline = time.monotonic() + timeout
    try:
        while todo or pending:
            if time.monotonic() > deadline:
                done = sum(r is not None for r in results)
                raise HandshakeFailed(f"only {done}/{len(results)} {what} set up in {timeout}s")
            while todo and len(pending) < concurrency:
                i, start = todo.popleft()
                s = connect_nowait(port)
                pending[s.fileno()] = (i, start(s))
                ep.register(s.fileno(), select.EPOLLOUT)
            for fd, _ in ep.poll(0.05):
                i, st = pending[fd]
                want = st.event()
                if want:
                    ep.modify(fd, want)
                    continue
                ep.unregister(fd)
                del pending[fd]
                results[i] = st
    except BaseException:
        for _, st in pending.values():
            st.sock.close()
        for r in results:
            if r is not None:
                r.sock.close()
        raise
    finally:
        ep.close()
    return [r for r in results if r is not None]


def check_connected(sock: socket.socket) -> None:
    """Raise HandshakeFailed if the non-blocking connect of ``sock`` failed."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise HandshakeFailed(f"connect: {os.strerror(err)}")


class Upgrade:
    """A WebSocket upgrade (after the TLS handshake with ``tls``); ``rest`` is what followed the 101."""

    __slots__ = ("got", "path", "port", "rest", "sent", "sock", "tls")

    def __init__(self, sock: socket.socket, path: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.sock = sock
        self.path = path
        self.port = port
        self.tls = tls
        self.sent = False
        self.got = b""
        self.rest = b""

    def event(self) -> int:
        s = self.sock
        if not self.sent:
            check_connected(s)
            if self.tls is not None:
                if not isinstance(s, ssl.SSLSocket):
                    s = self.sock = tlsclient.wrap(s, self.tls, HOST)
                want = tlsclient.step(s)
                if want:
                    return want
            s.send(request_bytes(self.path, self.port))
            self.sent = True
            return select.EPOLLIN
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return select.EPOLLIN
        if not data:
            raise HandshakeFailed("server closed during the handshake")
        self.got += data
        head, sep, rest = self.got.partition(b"\r\n\r\n")
        if not sep:
            return select.EPOLLIN
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise HandshakeFailed(f"handshake refused: {status.decode(errors='replace')}")
        self.rest = rest
        return 0


def open_many(
    port: int,
    paths: Iterable[str],
    *,
    timeout: float,
    concurrency: int = 256,
    tls: ssl.SSLContext | None = None,
) -> list[tuple[socket.socket, bytes]]:
    """Open one WebSocket per path to 127.0.0.1:``port``; returns (socket, bytes after the 101).

    :func:`open_all` with :class:`Upgrade`: at most ``concurrency``
    handshakes at once, all within ``timeout`` seconds. With ``tls`` each
    is a TLS socket (mc/bench/tlsclient.py) whose handshake is done before
    the upgrade.
    """
    starts = [functools.partial(Upgrade, path=path, port=port, tls=tls) for path in paths]
    return [(u.sock, u.rest) for u in open_all(port, starts, timeout=timeout, concurrency=concurrency)]


def frame_header(buf: bytes, pos: int) -> tuple[int, int]:
    """The header size and the payload length of the unmasked frame at ``buf[pos:]``; (0, 0) if cut short."""
    avail = len(buf) - pos
    if avail < 2:
        return 0, 0
    ln = buf[pos + 1] & 0x7F
    if ln < 126:
        return 2, ln
    if ln == 126:
        return (4, buf[pos + 2] << 8 | buf[pos + 3]) if avail >= 4 else (0, 0)
    return (10, int.from_bytes(buf[pos + 2:pos + 10], "big")) if avail >= 10 else (0, 0)


CHAT = b'{"type":"chat"'  # every server here writes "type" first (orjson keeps the order)


class Wire:
    """One relay connection's receiving side: the relayed messages out of its byte stream.

    A subclass splits its protocol (:meth:`split`); this keeps what a read
    left incomplete in ``buf``. ``owed`` is what the protocol wants sent back
    (pongs: the caller sends it and clears it), ``closed`` says the server
    closed. ``size`` and ``mark`` are the bytes of the last relayed message,
    framing included, and its framing (which holds its length): see
    gen.relay_loop.
    """

    __slots__ = ("buf", "closed", "mark", "owed", "size")

    def __init__(self, mark: bytes) -> None:
        self.buf = b""
        self.owed = b""
        self.closed = False
        self.size = 0
        self.mark = mark

    def feed(self, data: bytes) -> list[bytes]:
        """The relayed messages in ``data`` (the next bytes of the stream), each with ``"data":"<time>``."""
        buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        self.buf = buf[self.split(buf, out):]
        return out

    def split(self, buf: bytes, out: list[bytes]) -> int:
        """Append the messages at the start of ``buf`` to ``out``; return the bytes they took."""
        raise NotImplementedError


class ChatFrames(Wire):
    """The ``chat`` payloads of a server's (unmasked) frame stream, parsed as cheaply as Python can.

    The relay generator reads hundreds of thousands of frames per second on
    one core, so this is not a full parser (mc.websocket.FrameParser
    validates everything, at several times the cost): it only splits
    frames, keeps the text payloads that start with :data:`CHAT`, counts the
    other text frames (``welcome``, ``joined``) in ``others``, answers pings
    and notes a close frame. The servers measured here never fragment.
    """

    __slots__ = ("others",)

    def __init__(self) -> None:
        super().__init__(b"\0")
        self.others = 0

    def split(self, buf: bytes, out: list[bytes]) -> int:
        pos = 0
        n = len(buf)
        while True:
            head, ln = frame_header(buf, pos)
            end = pos + head + ln
            if not head or end > n:
                return pos
            b0 = buf[pos]
            if b0 == 0x81:
                payload = buf[pos + head:end]
                if payload.startswith(CHAT):
                    out.append(payload)
                    self.size = end - pos
                    self.mark = buf[pos:pos + head]
                else:
                    self.others += 1
            elif b0 == 0x89:
                self.owed += pong(buf[pos + head:end])
            elif b0 == 0x88:
                self.closed = True
            pos = end


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
