"""Opening one WebSocket (following ``307``) and speaking frames over it.

:func:`open_following` connects with trio-websocket and follows the master's
``307`` to the worker (at most ``max_hops`` times); any other refusal becomes
an :class:`McError`. :class:`Conn` is one open connection: it validates and
encodes outgoing frames with mc.protocol (the server's own rules, so a bad
argument fails here instead of costing a round trip), and pairs requests
with their replies through a :class:`Pending` table.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, open_websocket_url

from mc.protocol import CODECS, JSON, MSGPACK, Ack, Codec, ProtocolError, parse_request, parse_server_frame

from .errors import McError
from .options import Options
from .requests import Pending
from .trust import Trust
from .urls import follow

_REDIRECTS = (301, 302, 303, 307, 308)


def _end_handshake_on_abort() -> None:
    """Let a connection that breaks during the opening handshake fail at once.

    trio-websocket (0.12.2, the latest) waits for the whole
    ``connect_timeout`` when the server's side of the TCP connection closes
    or resets before it answered the handshake: the reader task sees the end
    of the stream and aborts, but nothing wakes the task waiting for the
    handshake. That is exactly what a worker killed in the middle of our
    handshake does, and it would keep a member of its chat sessions away for
    10 s instead of a retry. The abort now also ends that wait; the caller
    gets the connection already closed (1006, ``ConnectionClosed`` on its
    first read) and retries as for any lost connection.
    """
    original = getattr(WebSocketConnection, "_abort_web_socket", None)
    if original is None or getattr(original, "_mc_ends_handshake", False):
        return

    async def _abort_web_socket(self: WebSocketConnection) -> None:
        await original(self)
        handshake = getattr(self, "_open_handshake", None)
        if isinstance(handshake, trio.Event):
            handshake.set()

    _abort_web_socket._mc_ends_handshake = True  # type: ignore[attr-defined]
    setattr(WebSocketConnection, "_abort_web_socket", _abort_web_socket)  # noqa: B010


_end_handshake_on_abort()
_CODEC_NAMES: dict[str, Codec] = {"json": JSON, "msgpack": MSGPACK, **CODECS}


def codec_named(name: str) -> Codec:
    """``"json"`` / ``"msgpack"`` (or the full subprotocol name) -> the codec."""
    try:
        return _CODEC_NAMES[name]
    except KeyError:
        raise McError("bad_request", f"codec must be 'json' or 'msgpack', not {name!r}") from None


async def _tls_failure(url: str, options: Options) -> McError | None:
    """Why a ``wss://`` handshake broke, when TLS is the reason; else None.

    trio-websocket drops the SSL error of the opening handshake (the
    connection just reads as closed, 1006), which would leave a user with a
    private CA and no ``ssl_context=`` guessing. Only after such a failure,
    one TLS handshake finds the reason. **Decision:** a certificate that
    does not verify is final (retrying cannot fix the configuration); other
    TLS errors are temporary.
    """
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 443}"
    try:
        with trio.move_on_after(options.connect_timeout):
            stream = await trio.open_ssl_over_tcp_stream(
                parts.hostname or "", parts.port or 443, https_compatible=True,
                ssl_context=options.ssl_context or ssl.create_default_context())
            async with stream:
                await stream.do_handshake()
    except (OSError, trio.BrokenResourceError) as exc:
        return tls_error(exc, where)
    return None


def tls_error(exc: BaseException, where: str) -> McError | None:
    """The McError for an exception caused by TLS (anywhere in its chain), else None."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return McError("unavailable", f"the certificate of {where} is not trusted "
                       f"({cause.verify_message}); pass ssl_context= with its CA")
    if isinstance(cause, ssl.SSLError):
        return McError.unavailable(f"TLS handshake with {where} failed: {cause}")
    return None


def _location(rejection: ConnectionRejected) -> str | None:
    for key, value in rejection.headers or ():
        if key.lower() == b"location":
            return value.decode("latin-1")
    return None


async def open_following(
    stack: AsyncExitStack, url: str, codec: Codec, options: Options,
    headers: list[tuple[bytes, bytes]] | None = None, trust: Trust | None = None,
) -> WebSocketConnection:
    """Open ``url``, following redirects; the connection closes with ``stack``.

    ``headers`` carry the credential: with ``trust`` given, a redirect to a
    host no master named raises UntrustedRedirect instead of taking them
    there (mc.client.trust). ``wss://`` URLs use ``options.ssl_context``
    (None: the system's CAs, certificates verified).

    Raises McError for a refusal (``temporary`` for 5xx) and lets
    trio-websocket's HandshakeError (network trouble, timeouts) through.
    """
    for _ in range(options.max_hops + 1):
        try:
            ws = await stack.enter_async_context(open_websocket_url(
                url, ssl_context=options.ssl_context if url.startswith("wss:") else None,
                subprotocols=[codec.name], extra_headers=headers,
                message_queue_size=64, max_message_size=options.max_message,
                receive_buffer_size=65536, connect_timeout=options.connect_timeout,
                disconnect_timeout=options.close_timeout,
            ))
            failure = await _tls_failure(url, options) if ws.closed and url.startswith("wss:") else None
            if failure is not None:
                raise failure
            return ws
        except ConnectionRejected as exc:
            location = _location(exc)
            if exc.status_code not in _REDIRECTS or location is None:
                raise McError.from_status(exc.status_code, exc.body, exc.headers, url) from None
            target = follow(url, location)
            if trust is not None:
                trust = trust.redirected(url, target)
                if headers:
                    trust.check(url, target)
            url = target
    raise McError("unavailable", f"more than {options.max_hops} redirects (last: {url})")


def checked(frame: Any, table: Mapping[str, Any]) -> Any:
    """``frame`` if the endpoint's validation (mc.protocol) accepts it, else McError."""
    try:
        parse_request(frame.to_wire(), table)
    except ProtocolError as exc:
        raise McError.from_protocol(exc) from None
    return frame


@attrs.define(eq=False)
class Conn:
    """One open connection: encode, decode, and requests awaiting replies."""

    ws: WebSocketConnection
    codec: Codec
    options: Options
    pending: Pending = attrs.field(factory=Pending)
    #: why the connection ended, once it has
    ended: McError | None = None

    def decode(self, message: str | bytes) -> Any:
        """A server frame as its mc.protocol class (ProtocolError if unknown)."""
        return parse_server_frame(self.codec.decode(message))  # type: ignore[arg-type]

    async def send(self, frame: Any) -> None:
        """Encode and send one frame; McError if it cannot go."""
        try:
            data = self.codec.encode(frame.to_wire())
        except ProtocolError as exc:
            raise McError.from_protocol(exc) from None
        if len(data) > self.options.max_frame:
            raise McError("too_large", f"{frame.TYPE} frame of {len(data)} bytes exceeds "
                          f"max_frame={self.options.max_frame}")
        try:
            await self.ws.send_message(data if self.codec.binary else data.decode())
        except ConnectionClosed as exc:
            raise McError.from_closed(exc) from None
        except trio.BrokenResourceError:
            raise McError.unavailable("connection lost") from None

    async def request(self, frame: Any) -> Ack:
        """Send ``frame`` with a fresh ``id``; its ``ack`` (an ``error`` raises McError).

        Waits at most ``Options.timeout`` for the reply.
        """
        rid, slot = self.pending.add()
        try:
            with trio.move_on_after(self.options.timeout):
                await self.send(attrs.evolve(frame, id=rid))
                return await slot.wait()
        finally:
            self.pending.discard(rid)
        raise McError.unavailable(f"no reply to {frame.TYPE} within {self.options.timeout} s")


