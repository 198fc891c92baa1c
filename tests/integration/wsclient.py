"""Small real-socket clients for the worker integration tests.

Two kinds of client:

* :func:`connect` opens a well-behaved trio-websocket connection in either
  subprotocol and wraps it in :class:`Client` (encode/decode per codec, the
  ``welcome`` frame already read, every wait bounded);
* :class:`RawClient` speaks the handshake and RFC 6455 framing by hand over a
  plain trio TCP stream, for clients that must misbehave (unmasked or
  oversize frames, bad payloads, never reading, never answering pings).

Every wait here is bounded with ``trio.fail_after``: a hang fails the test.
"""

from __future__ import annotations

import base64
import itertools
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgpack
import orjson
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from mc.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    encode_masked_frame,
)
from mc.websocket.frames import _header, apply_mask

JSON = "mc.v1.json"
MSGPACK = "mc.v1.msgpack"
PROTOCOLS = (JSON, MSGPACK)

#: default bound for one expected frame
TIMEOUT = 5.0

_names = itertools.count(1)
_run = os.urandom(3).hex()


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against the same worker) uses."""
    return f"{prefix}-{_run}-{next(_names)}"


def encode(proto: str | None, obj: Any) -> str | bytes:
    """A frame as trio-websocket sends it: text for JSON, bytes for msgpack."""
    if proto == MSGPACK:
        return msgpack.packb(obj, use_bin_type=True)
    return orjson.dumps(obj).decode()


def decode(proto: str | None, message: str | bytes) -> Any:
    if proto == MSGPACK:
        assert isinstance(message, bytes), f"msgpack connection got a text frame: {message!r}"
        return msgpack.unpackb(message, raw=False)
    assert isinstance(message, str), f"JSON connection got a binary frame: {message!r}"
    return orjson.loads(message)


def target(base: str, path: str, query: dict[str, Any]) -> str:
    q = {k: v for k, v in query.items() if v is not None}
    return f"{base}{path}" + (f"?{urlencode(q)}" if q else "")


class Client:
    """One protocol connection: ``send`` a map, ``recv`` a map, in its codec."""

    def __init__(self, ws: Any, proto: str | None) -> None:
        self.ws = ws
        #: the codec in use (None offered = JSON)
        self.proto = proto
        self.welcome: dict[str, Any] = {}
        #: frames read while waiting for an ack (request); recv returns them first
        self.backlog: list[dict[str, Any]] = []

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send_message(encode(self.proto, obj))

    async def send_raw(self, message: str | bytes) -> None:
        await self.ws.send_message(message)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        with trio.fail_after(timeout):
            return decode(self.proto, await self.ws.get_message())

    async def _recv_new(self, timeout: float) -> dict[str, Any]:
        with trio.fail_after(timeout):
            return decode(self.proto, await self.ws.get_message())

    async def recv_type(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame, which must be of type ``kind``."""
        frame = await self.recv(timeout)
        assert frame.get("type") == kind, f"expected {kind!r}, got {frame!r}"
        return frame

    async def recv_until(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Skip frames until one of type ``kind`` (skipping only pong/ping)."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame.get("type") == kind:
                    return frame
                assert frame.get("type") in ("pong", "ping"), f"waiting for {kind!r}, got {frame!r}"

    async def request(self, obj: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
        """Send a frame with an ``id`` and return the ``ack``/``error`` carrying that id.

        Other frames that arrive meanwhile are kept for ``recv``/``fence``.
        """
        assert "id" in obj
        await self.send(obj)
        with trio.fail_after(timeout):
            while True:
                frame = await self._recv_new(timeout)
                if frame.get("type") in ("ack", "error") and frame.get("id") == obj["id"]:
                    return frame
                self.backlog.append(frame)

    async def ack(self, obj: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = await self.request(obj, timeout)
        assert frame["type"] == "ack", f"expected an ack for {obj!r}, got {frame!r}"
        return frame

    async def fence(self, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Every frame the server queued for us before now (ping/pong round trip).

        The worker handles one connection's frames in order and writes each
        connection's frames in order, so whatever it routed to us before it
        read our ``ping`` arrives before the ``pong``.
        """
        rid = unique("fence")
        await self.send({"type": "ping", "id": rid})
        frames = []
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame.get("type") == "pong" and frame.get("id") == rid:
                    return frames
                frames.append(frame)

    async def expect_silence(self, duration: float = 0.3) -> None:
        """No protocol frame arrives within ``duration`` seconds."""
        assert not self.backlog, f"expected nothing, got {self.backlog!r}"
        with trio.move_on_after(duration):
            frame = decode(self.proto, await self.ws.get_message())
            raise AssertionError(f"expected nothing, got {frame!r}")

    async def expect_close(self, code: int, timeout: float = TIMEOUT) -> str:
        """Read (discarding frames) until the server closes; check the code."""
        with trio.fail_after(timeout):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as exc:
                assert exc.reason.code == code, f"closed with {exc.reason}, expected {code}"
                return exc.reason.reason or ""


@asynccontextmanager
async def connect(
    base: str, path: str, *, proto: str | None = JSON, subprotocols: list[str] | None = None,
    timeout: float = TIMEOUT, **query: Any,
) -> AsyncIterator[Client]:
    """Open ``base + path?query`` offering ``proto``; the ``welcome`` is read already."""
    offer = subprotocols if subprotocols is not None else ([proto] if proto else [])
    # connect_timeout bounds the TCP connect and the handshake (a fail_after
    # around the context manager's entry would wrap its nursery).
    async with open_websocket_url(
        target(base, path, query), subprotocols=offer, message_queue_size=100_000,
        receive_buffer_size=65536, connect_timeout=timeout, disconnect_timeout=2,
    ) as ws:
        client = Client(ws, ws.subprotocol)
        client.welcome = await client.recv_type("welcome", timeout)
        yield client


async def rejected(base: str, path: str, *, proto: str | None = JSON,
                   subprotocols: list[str] | None = None, **query: Any) -> ConnectionRejected:
    """Open a handshake that must be refused; return the rejection (status, headers, body)."""
    offer = subprotocols if subprotocols is not None else ([proto] if proto else [])
    with trio.fail_after(TIMEOUT):
        try:
            async with open_websocket_url(target(base, path, query), subprotocols=offer,
                                          connect_timeout=TIMEOUT, disconnect_timeout=1) as ws:
                raise AssertionError(f"handshake accepted ({ws.subprotocol}), expected a refusal")
        except ConnectionRejected as exc:
            return exc


def header(rejection: ConnectionRejected, name: str) -> str | None:
    for key, value in rejection.headers or ():
        if key.decode("latin-1").lower() == name.lower():
            return value.decode("latin-1")
    return None


def error_body(rejection: ConnectionRejected) -> dict[str, Any]:
    """The JSON body of a refused handshake, checked to be ``{"error", "reason"}``."""
    body = orjson.loads(rejection.body)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert isinstance(body.get("reason"), str) and body["reason"], body
    return body


# --------------------------------------------------------------------------
# raw clients


async def http_get(base: str, path: str, headers: dict[str, str] | None = None,
                   timeout: float = TIMEOUT) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP/1.1 GET over a raw socket: (status, headers, body)."""
    u = urlsplit(base)
    lines = [f"GET {path} HTTP/1.1", f"Host: {u.hostname}:{u.port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(u.hostname, u.port)
        async with stream:
            await stream.send_all(request)
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    length = int(hdrs.get("content-length", len(body)))
    return int(status_line.split()[1]), hdrs, body[:length]


def masked_fragment(first_byte: int, payload: bytes) -> bytes:
    """One masked client frame with a hand-set first byte (FIN bit and opcode), e.g.
    ``OP_TEXT`` (a first fragment) or ``0x80 | OP_CONT`` (the last one)."""
    key = b"\x01\x02\x03\x04"
    return _header(first_byte, 0x80, len(payload)) + key + apply_mask(payload, key)


class RawClient:
    """A hand-made WebSocket client over a plain TCP stream.

    ``frames()`` / ``read_frame()`` parse what the server sends with the
    project's own parser (server frames are unmasked); ``send_frame`` masks
    by default, ``masked=False`` sends a frame no compliant client would.
    """

    def __init__(self, stream: trio.SocketStream, proto: str | None) -> None:
        self.stream = stream
        self.proto = proto
        self.parser = FrameParser(1 << 30, expect_masked=False)
        self.events: list[tuple[int, Any]] = []
        self.eof = False
        self.bytes_read = 0

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_frame(self, opcode: int, payload: bytes, *, masked: bool = True) -> None:
        if masked:
            await self.stream.send_all(encode_masked_frame(opcode, payload))
        else:
            n = len(payload)
            assert n < 126
            await self.stream.send_all(bytes((0x80 | opcode, n)) + payload)

    async def send(self, obj: dict[str, Any]) -> None:
        """A protocol frame in this connection's codec, masked as it should be."""
        if self.proto == MSGPACK:
            await self.send_frame(OP_BINARY, msgpack.packb(obj, use_bin_type=True))
        else:
            await self.send_frame(OP_TEXT, orjson.dumps(obj))

    async def read_frame(self, timeout: float = TIMEOUT) -> tuple[int, Any] | None:
        """The next server frame ``(opcode, payload)``; None at EOF."""
        with trio.fail_after(timeout):
            while not self.events:
                if self.eof:
                    return None
                try:
                    data = await self.stream.receive_some(262144)
                except trio.BrokenResourceError:  # reset by the server
                    data = b""
                if not data:
                    self.eof = True
                    continue
                self.bytes_read += len(data)
                self.events.extend(self.parser.feed(data))
            return self.events.pop(0)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next protocol frame (WebSocket pings are answered and skipped)."""
        with trio.fail_after(timeout):
            while True:
                event = await self.read_frame(timeout)
                assert event is not None, "connection closed"
                op, payload = event
                if op == OP_PING:
                    await self.send_frame(OP_PONG, payload)
                    continue
                assert op in (OP_TEXT, OP_BINARY), f"unexpected frame {event!r}"
                if self.proto == MSGPACK:
                    assert op == OP_BINARY
                    return msgpack.unpackb(payload, raw=False)
                assert op == OP_TEXT
                return orjson.loads(payload)

    async def read_close(self, timeout: float = TIMEOUT) -> tuple[int | None, str] | None:
        """Skip frames until the close frame: its (code, reason), or None if EOF came first."""
        with trio.fail_after(timeout):
            while True:
                event = await self.read_frame(timeout)
                if event is None:
                    return None
                if event[0] == OP_CLOSE:
                    return event[1]

    async def wait_eof(self, timeout: float = TIMEOUT) -> None:
        with trio.fail_after(timeout):
            while await self.read_frame(timeout) is not None:
                pass

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _upgrade(stream: trio.SocketStream, base: str, path: str,
                   protocols: list[str], timeout: float, early: bytes = b"") -> bytes:
    """Send the upgrade request (and ``early`` right behind it, in the same
    write); return the bytes after the response head."""
    u = urlsplit(base)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1", f"Host: {u.hostname}:{u.port}", "Upgrade: websocket",
        "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
    ]
    if protocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + early)
    data = b""
    with trio.fail_after(timeout):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed during the handshake: {data!r}"
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return rest


@asynccontextmanager
async def raw_connect(
    base: str, path: str, *, proto: str | None = JSON, rcvbuf: int | None = None,
    welcome: bool = True, early: bytes = b"", timeout: float = TIMEOUT, **query: Any,
) -> AsyncIterator[RawClient]:
    """A RawClient after a hand-written upgrade (and, by default, its ``welcome``).

    ``rcvbuf`` shrinks the socket's receive buffer before connecting, so a
    client that stops reading fills the server's queue quickly. ``early``
    bytes (frames) go out in the same write as the upgrade request.
    """
    u = urlsplit(base)
    with trio.fail_after(timeout):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((u.hostname, u.port))
        stream = trio.SocketStream(sock)
        path_q = target("", path, query)
        rest = await _upgrade(stream, base, path_q, [proto] if proto else [], timeout, early)
    raw = RawClient(stream, proto)
    if rest:
        raw.events.extend(raw.parser.feed(rest))
    try:
        if welcome:
            frame = await raw.recv(timeout)
            assert frame["type"] == "welcome", frame
        yield raw
    finally:
        with trio.CancelScope(shield=True):
            await raw.aclose()
