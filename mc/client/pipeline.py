"""A lean pipelined app connection for ``mc publish``: many publishes in flight, cheap per message.

The SDK (mc/client/app.py) awaits each ack in its own request and pays
trio-websocket's per-message costs, which caps one connection at a few
thousand publishes per second. This client opens the app WebSocket itself
(following the master's ``307`` to a worker, keeping the query), writes the
frames of a whole batch with one ``send_all`` (encoded with mc's own
``encode_masked_frame``) and parses acks with mc's ``FrameParser``.
Nothing is retried: a lost connection ends the run with an McError, and so
does a redirect that would take the token to a host the master did not name
(mc.client.trust). ``wss://`` is verified with the system's CAs or
``ssl_context``.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio

from mc.websocket import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameParser, WebSocketError, encode_masked_frame

from .errors import McError
from .transport import tls_error
from .trust import Trust
from .urls import endpoint, follow, split_masters

MAX_HOPS = 4
HEAD_LIMIT = 16 * 1024


def _request(url: str, token: str | None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise McError("bad_request", f"mc publish speaks ws:// and wss:// only, not {parts.scheme}://")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    head = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: mc.v1.json\r\n{auth}\r\n")
    return host, port, head.encode()


async def _open(url: str, host: str, port: int, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    try:
        if url.startswith("wss:"):
            return await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=ssl_context or ssl.create_default_context(), https_compatible=True)
        return await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise McError.unavailable(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None


async def _upgrade(url: str, token: str | None,
                   ssl_context: ssl.SSLContext | None) -> tuple[trio.abc.Stream, bytes, str | None]:
    """Connect and send the upgrade: (stream, bytes after the head, redirect location or None)."""
    host, port, head = _request(url, token)
    stream = await _open(url, host, port, ssl_context)
    try:
        await stream.send_all(head)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk or len(buf) > HEAD_LIMIT:
                raise McError.unavailable(f"{url}: the server closed during the handshake")
            buf += chunk
    except (trio.BrokenResourceError, ssl.SSLError) as exc:
        await stream.aclose()
        raise tls_error(exc, f"{host}:{port}") or McError.unavailable(f"{url}: {exc}") from None
    except BaseException:
        await stream.aclose()
        raise
    raw, _, rest = buf.partition(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if code == 101:
        return stream, rest, None
    await stream.aclose()
    if code in (301, 302, 303, 307, 308) and "location" in headers:
        return stream, b"", headers["location"]
    # the body may not have arrived with the head: the status alone names the error then
    raise McError.from_status(code, rest, headers.items(), f"handshake of {url.split('?', 1)[0]}")


class Publisher:
    """One app connection: ``send`` batches of publishes, ``acks`` reads what comes back."""

    def __init__(self, stream: trio.abc.Stream, trailing: bytes) -> None:
        self.stream = stream
        self.parser = FrameParser(1 << 24, expect_masked=False)
        self._trailing = trailing
        self._lock = trio.Lock()

    @classmethod
    async def connect(cls, master: str, *, client: str | None, device: str, token: str | None = None,
                      ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0) -> Publisher:
        url = endpoint(split_masters(master)[0], "/v1/app", {"client": client, "device": device})
        trust = Trust.of([url])
        with trio.move_on_after(timeout):
            for _ in range(MAX_HOPS + 1):
                stream, trailing, location = await _upgrade(url, token, ssl_context)
                if location is None:
                    return cls(stream, trailing)
                target = follow(url, location)
                trust = trust.redirected(url, target)
                if token:
                    trust.check(url, target)
                url = target
            raise McError.unavailable(f"more than {MAX_HOPS} redirects")
        raise McError.unavailable(f"no connection to {master} within {timeout} s")

    async def send(self, frames: Iterable[dict[str, Any]]) -> None:
        data = b"".join(encode_masked_frame(OP_TEXT, orjson.dumps(f)) for f in frames)
        async with self._lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise McError.unavailable(f"connection lost: {exc}") from None

    async def frames(self) -> list[dict[str, Any]]:
        """The next JSON frames from the server (answers pings itself); McError when it closes."""
        while True:
            if self._trailing:
                data, self._trailing = self._trailing, b""
            else:
                try:
                    data = bytes(await self.stream.receive_some(65536))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    raise McError.unavailable("the worker closed the connection")
            out = []
            try:
                events = self.parser.feed(data)
            except WebSocketError as exc:
                raise McError.unavailable(f"the worker sent a bad frame: {exc.reason}") from None
            for op, payload in events:
                if op == OP_TEXT:
                    try:
                        out.append(orjson.loads(payload))
                    except orjson.JSONDecodeError:
                        raise McError.unavailable("the worker sent a frame that is not JSON") from None
                elif op == OP_PING:
                    async with self._lock:
                        await self.stream.send_all(encode_masked_frame(OP_PONG, payload))
                elif op == OP_CLOSE:
                    code, reason = payload
                    raise McError.unavailable(f"the worker closed the connection ({code}: {reason})")
            if out:
                return out

    async def aclose(self) -> None:
        try:
            with trio.move_on_after(1):
                async with self._lock:
                    await self.stream.send_all(encode_masked_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await self.stream.aclose()
