"""Server side of the WebSocket opening handshake (RFC 6455 section 4).

h11 parses the request head; this module only interprets it and writes the
two possible answers: ``101 Switching Protocols`` or a plain HTTP rejection.
Bytes the client sent after the head (possibly its first frames) are kept in
:attr:`HandshakeReader.trailing` for the frame parser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

import attrs
import h11

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_UNSAFE_VALUE = re.compile(r"[\x00\r\n]")


class HandshakeError(Exception):
    """The request cannot be upgraded: answer ``reject_response(status)`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@attrs.frozen
class UpgradeRefusal:
    """Why a request head is not an acceptable upgrade, and the HTTP answer (RFC 6455 4.2)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


#: RFC 6455 4.2.2: refusing another version names the one the server speaks
VERSION_REFUSAL = UpgradeRefusal(
    426, "only WebSocket version 13 is supported", (("Sec-WebSocket-Version", "13"),)
)
NOT_AN_UPGRADE = UpgradeRefusal(426, "a WebSocket upgrade is required", (("Upgrade", "websocket"),))
BAD_KEY = UpgradeRefusal(400, "Sec-WebSocket-Key must be 16 bytes in base64")


@attrs.frozen
class HandshakeRequest:
    """A parsed request head; ``refusal`` is None for a valid upgrade."""

    method: str
    path: str
    raw_target: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]
    subprotocols: list[str]
    refusal: UpgradeRefusal | None

    @property
    def is_websocket(self) -> bool:
        return self.refusal is None


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",")]


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _build_request(event: h11.Request) -> HandshakeRequest:
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key, text = name.decode("ascii"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    method = event.method.decode("ascii")
    raw_target = event.target.decode("ascii")  # h11 only accepts visible ASCII here
    raw_path, _, raw_query = raw_target.partition("?")
    offered = headers.get("sec-websocket-protocol", "").split(",")
    refusal: UpgradeRefusal | None = None
    if not (
        method == "GET"
        and event.http_version == b"1.1"
        and "websocket" in _tokens(headers.get("upgrade", ""))
        and "upgrade" in _tokens(headers.get("connection", ""))
    ):
        refusal = NOT_AN_UPGRADE
    elif headers.get("sec-websocket-version") != "13":
        refusal = VERSION_REFUSAL
    elif not _valid_key(headers.get("sec-websocket-key", "")):
        refusal = BAD_KEY
    return HandshakeRequest(
        method=method,
        path=unquote(raw_path),
        raw_target=raw_target,
        query=dict(parse_qsl(raw_query, keep_blank_values=True)),
        raw_query=raw_query,
        headers=headers,
        subprotocols=[p.strip() for p in offered if p.strip()],
        refusal=refusal,
    )


class HandshakeReader:
    """Accumulates the request head; ``feed`` returns it once complete.

    A head longer than ``max_bytes`` is refused with 431, however it was
    split across ``feed`` calls. Requests with a body are refused with 400:
    a WebSocket upgrade has none. ``feed(b"")`` signals end of stream.
    """

    def __init__(self, max_bytes: int = 16384) -> None:
        self._max_bytes = max_bytes
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_bytes)
        self._received = 0
        self._trailing = b""
        self._done = False
        self._error: HandshakeError | None = None

    @property
    def trailing(self) -> bytes:
        """Bytes received after the request head: the start of the frame stream."""
        return self._trailing

    def feed(self, data: bytes) -> HandshakeRequest | None:
        """The request once its head is complete, else None; HandshakeError if bad."""
        if self._error is not None:
            raise self._error
        if self._done:
            raise RuntimeError("the handshake request is already complete")
        try:
            return self._feed(data)
        except HandshakeError as exc:
            self._error = exc
            raise

    def _feed(self, data: bytes) -> HandshakeRequest | None:
        self._received += len(data)
        self._conn.receive_data(data)
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = 431 if exc.error_status_hint == 431 else 400
            raise HandshakeError(status, str(exc)) from None
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Request):  # ConnectionClosed
            raise HandshakeError(400, "connection closed before the end of the request head")
        trailing = bytes(self._conn.trailing_data[0])
        if self._received - len(trailing) > self._max_bytes:
            raise HandshakeError(431, f"request head longer than {self._max_bytes} bytes")
        request = _build_request(event)
        # h11 has already validated and de-duplicated Content-Length.
        length = int(request.headers.get("content-length", "0"))
        if length or "transfer-encoding" in request.headers:
            raise HandshakeError(400, "unexpected request body")
        self._trailing = trailing
        self._done = True
        return request


def accept_response(request: HandshakeRequest, subprotocol: str | None) -> bytes:
    """The ``101 Switching Protocols`` answer to a valid upgrade request."""
    if not request.is_websocket:
        raise ValueError("not a WebSocket upgrade request")
    if subprotocol is not None and subprotocol not in request.subprotocols:
        raise ValueError(f"subprotocol {subprotocol!r} was not offered")
    digest = hashlib.sha1(request.headers["sec-websocket-key"].encode("ascii") + _GUID).digest()
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + base64.b64encode(digest),
    ]
    if subprotocol is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def reject_response(
    status: int, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """A complete HTTP/1.1 response that refuses the upgrade and closes the connection.

    Header names and values are checked, since callers build some of them
    (``Location``) from request data: no response splitting.
    """
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    for name, value in headers:
        if not _TOKEN.match(name) or _UNSAFE_VALUE.search(value):
            raise ValueError(f"invalid header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
