"""Cuts in Hypercorn's per-request work on HTTP/1.1 (the notify API's rate).

**One write per response.** Hypercorn's h11 protocol writes a response in three sends: the head as soon
as the app starts the response, the body, then the end of message (empty with
a Content-Length), each under a lock and a shielded cancel scope. Profiled
on the master under notify load that was about a fifth of its CPU. This keeps
the head of a response back until the first body chunk (or the end of the
message, for a response without a body) and sends both in one write, and
skips empty writes: the same bytes on the wire, in one send instead of three.

Only HTTP streams are affected: a WebSocket handshake and its frames (the
control links, the entry point) go through unchanged, and a streaming response
(``/v1/events``) sends its head with its first chunk, which it yields at once.

**No task per request for the notify API.** Hypercorn runs every request's
app in a task of its own, fed through a memory channel, so that it can read
on meanwhile; that machinery was about a third of the master's CPU under
notify load. A ``POST`` to one of :func:`install`'s ``inline`` paths with a
``Content-Length`` of at most :data:`INLINE_BODY` is answered at once (the
notify API never streams), so its app runs in the connection's own task once
the body is in: the same ``HTTPStream`` (scope, checks, answer, access log),
given :class:`InlineApps` for a task group. HTTP/1.1 without pipelining has
nothing else to read meanwhile: a client that goes away is seen when the
answer is written, as on every other route. Any other request is served as
before, streamed into a task of its own.

**An inline answer is one event.** Hypercorn turns an app's start and body
into three events through ``HTTPStream.app_send`` and the protocol's
``stream_send``; an inline app's whole answer (:class:`InlineSend`) goes to
the protocol as one, with the same state, access log and close after it.

**A whole plain inline request skips h11's state machine**
(:mod:`mc.master.h11_shortcut`: h11's own parsing and checks, the same bytes
out), and a response's headers are checked once per distinct list
(:mod:`mc.master.h11_heads`).

**h11's headers iterate as a list.** ``h11.Headers`` is a ``Sequence``
iterated through ``__getitem__`` and an ``IndexError``; h11 and Hypercorn
walk each request's headers four times (about 8% of the master's CPU under
notify load). It iterates its item list directly: the same pairs.

**A leaner connection task**: :class:`mc.master.lean_tcp.LeanTCPServer` (its
timers as deadlines, direct writes).

:func:`install` replaces ``H11Protocol.handle``, ``stream_send``, ``_create_stream`` and ``_check_protocol``
(only run for a request that could be an HTTP/2 upgrade), and the ``TCPServer``
of ``hypercorn.trio.run`` (Hypercorn 0.16 to 0.18 have the same ones); if
they are not there, a later Hypercorn changed them, and it is left alone:
requests are then handled as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from operator import itemgetter
from typing import Any

import h11
import trio
from h11._headers import Headers as H11Headers
from hypercorn.events import RawData
from hypercorn.protocol import h11 as hyper_h11
from hypercorn.protocol.events import Body, EndBody, Response, StreamClosed
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.trio import run as hyper_run
from hypercorn.trio import task_group
from hypercorn.utils import build_and_validate_headers, suppress_body

from . import h11_shortcut
from .h11_heads import Whole, final_headers
from .lean_tcp import LeanTCPServer, fits

log = logging.getLogger("mc.master")

_original = hyper_h11.H11Protocol.stream_send
_original_create = hyper_h11.H11Protocol._create_stream
_original_check = hyper_h11.H11Protocol._check_protocol
_original_handle = hyper_h11.H11Protocol.handle
_HEAD = "_mc_pending_head"
#: largest ``Content-Length`` served inline (buffered whole before the app runs); larger or
#: chunked bodies take Hypercorn's streamed path, where the app bounds them itself (413)
INLINE_BODY = 256 * 1024
_inline_paths: frozenset[bytes] = frozenset()


async def handle(self: Any, event: Any) -> None:
    """``H11Protocol.handle``; bytes that are one whole plain inline request skip h11's state machine."""
    if type(event) is not RawData or not await h11_shortcut.serve(self, event.data, _inline_length):
        await _original_handle(self, event)


async def stream_send(self: Any, event: Any) -> None:
    if self._mc_shortcut is not None:  # a request h11 has not seen (mc.master.h11_shortcut)
        if type(event) is Whole:
            data = h11_shortcut.answer(self, event)
            if data is not None:
                await self.send(RawData(data=data))
                return
        elif type(event) is StreamClosed:
            await h11_shortcut.closed(self)
            return
        h11_shortcut.tell_h11(self)
    if type(event) is Whole:
        data = _head(self, event.headers, event.status_code)
        if event.body:
            data += _encode(self, h11.Data(data=event.body))
        await self.send(RawData(data=data + _encode(self, h11.EndOfMessage())))
        return
    if type(self.stream) is not HTTPStream or not isinstance(event, Response | Body | EndBody):
        await _original(self, event)
        return
    if isinstance(event, Response):
        if event.status_code < 200:
            await _original(self, event)
            return
        setattr(self, _HEAD, _head(self, event.headers, event.status_code))
        return
    data = _encode(self, h11.Data(data=event.data) if isinstance(event, Body) else h11.EndOfMessage())
    head = self.__dict__.pop(_HEAD, b"")
    if head or data:
        await self.send(RawData(data=head + data))


def _head(self: Any, headers: list[tuple[bytes, bytes]], status: int) -> bytes:
    """A final response's head as Hypercorn makes it (:func:`~mc.master.h11_heads.final_headers`)."""
    return _encode(self, h11.Response(headers=final_headers(self, headers), status_code=status))


def _encode(self: Any, event: Any) -> bytes:
    """As Hypercorn's ``_send_h11_event``, without the send: nothing once the peer broke the protocol."""
    try:
        return self.connection.send(event) or b""
    except h11.LocalProtocolError:
        if self.connection.their_state != h11.ERROR:
            raise
        return b""


async def create_stream(self: Any, request: h11.Request) -> None:
    """Hypercorn's ``_create_stream``; an inline request's stream gets :data:`INLINE` for a task group."""
    if _inline_length(request) is None:
        await _original_create(self, request)
        return
    spawner = self.task_group
    self.task_group = INLINE
    try:
        await _original_create(self, request)
    finally:
        self.task_group = spawner


async def check_protocol(self: Any, event: h11.Request) -> None:
    """Hypercorn's ``_check_protocol`` (an h2c upgrade, or HTTP/2 with prior knowledge), run only if
    the request could be one: its method is ``PRI`` or it has an ``Upgrade`` header.

    Hypercorn decodes, strips and lower-cases every header's name to find
    ``upgrade``; h11's names are lower-case tokens already, so one comparison
    each finds the same requests.
    """
    if event.method == b"PRI":
        await _original_check(self, event)
        return
    for name, _ in event.headers:
        if name == b"upgrade":
            await _original_check(self, event)
            return


def _inline_length(request: h11.Request) -> int | None:
    """The ``Content-Length`` of a request served inline: a ``POST`` to an inline path with a
    body of at most :data:`INLINE_BODY`; None for any other request."""
    if request.method != b"POST" or request.target not in _inline_paths:
        return None
    for name, value in request.headers:
        if name == b"content-length":
            length = int(value)  # h11 validated it: digits
            return length if length <= INLINE_BODY else None
        if name == b"transfer-encoding":
            return None
    return None


class InlineSend:
    """The ``send`` of an inline app: its start and one last body go out as one :class:`Whole`.

    What ``HTTPStream.app_send`` does for the start, then the body, then in
    ``_send_closed`` (the same state, access log and ``StreamClosed``), without
    three events through two layers. Any other sequence (a streamed body,
    trailers, a status below 200) goes to ``app_send`` as it came.
    """

    __slots__ = ("_start", "_stream")

    def __init__(self, stream: HTTPStream) -> None:
        self._stream = stream
        self._start: Any = None  # the held http.response.start

    async def __call__(self, message: Any) -> None:
        stream = self._stream
        start = self._start
        if start is None:
            if (message is not None and message["type"] == "http.response.start"
                    and stream.state is ASGIHTTPState.REQUEST and not message.get("trailers", False)
                    and int(message["status"]) >= 200):
                self._start = message
            else:
                await stream.app_send(message)
            return
        self._start = None
        if message is None or message["type"] != "http.response.body" or message.get("more_body", False):
            await stream.app_send(start)
            await stream.app_send(message)
            return
        status = int(start["status"])
        headers = build_and_validate_headers(start.get("headers", []))
        body = b"" if suppress_body(stream.scope["method"], status) else bytes(message.get("body", b""))
        stream.response = start
        stream.state = ASGIHTTPState.CLOSED
        await stream.send(Whole(status, headers, body))  # type: ignore[arg-type]  # our protocol's own
        await stream.config.log.access(stream.scope, start, time.time() - stream.start_time)
        await stream.send(StreamClosed(stream_id=stream.stream_id))


class InlineApps:
    """What an inline request's ``HTTPStream`` takes for its task group: ``spawn_app`` spawns nothing.

    It hands back the ``put`` of an :class:`InlineCall`, which runs the app
    when the body is complete.
    """

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any,
                        ) -> Callable[[Any], Awaitable[None]]:
        return InlineCall(app, config, scope, send.__self__).put  # send: the stream's app_send


INLINE = InlineApps()


class InlineCall:
    """One request's app, run in the caller's task once ``put`` has the last body chunk.

    ``receive`` gives the app the whole body, then ``http.disconnect``: the
    request is over by then (an inline app answers, it does not wait).

    The stream holds ``put`` and this holds the stream: a reference cycle,
    which left a dozen objects per request to the cyclic collector (a young
    collection every few hundred requests under notify load). The stream is
    let go as the app starts, so a request's objects go when its stream does.
    """

    __slots__ = ("_app", "_body", "_config", "_scope", "_started", "_stream")

    def __init__(self, app: Any, config: Any, scope: Any, stream: HTTPStream) -> None:
        self._app = app
        self._config = config
        self._scope = scope
        self._stream: HTTPStream | None = stream
        self._body: bytes | None = b""
        self._started = False

    async def put(self, message: dict[str, Any]) -> None:
        if self._started or message["type"] != "http.request" or self._body is None:
            return  # a disconnect before the body was complete: the app never ran
        self._body += message["body"]
        if not message["more_body"]:
            self._started = True
            stream, self._stream = self._stream, None  # let go of it: see the class docstring
            assert stream is not None  # _started is set once, here
            await task_group._handle(self._app, self._config, self._scope, self._receive,
                                     InlineSend(stream), trio.to_thread.run_sync, trio.from_thread.run)

    async def _receive(self) -> Any:
        body, self._body = self._body, None
        if body is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": body, "more_body": False}


_NAME_VALUE = itemgetter(1, 2)  # of h11's (raw name, lower-case name, value)


def _iter_headers(self: Any) -> Iterator[tuple[bytes, bytes]]:
    """``iter(h11.Headers)``: its (lower-case name, value) pairs, from its list."""
    return map(_NAME_VALUE, self._full_items)


def install(inline: frozenset[str] = frozenset()) -> bool:
    """Patch Hypercorn (once); False if it is not the Hypercorn this was written for.

    ``inline``: the paths whose ``POST`` is served in the connection's task.
    """
    global _inline_paths
    _inline_paths = frozenset(path.encode() for path in inline)
    if hyper_h11.H11Protocol.stream_send is stream_send:
        return True
    if (any(name not in vars(hyper_h11.H11Protocol) for name in ("_send_h11_event", "_check_protocol",
                                                                  "_close_stream", "handle"))
            or not fits(getattr(hyper_run, "TCPServer", None))
            or not callable(getattr(task_group, "_handle", None))):
        log.warning("hypercorn's h11 protocol changed: mc.master.hypercorn_patches not applied")
        return False
    if hasattr(H11Headers([]), "_full_items"):
        H11Headers.__iter__ = _iter_headers  # type: ignore[method-assign]
    hyper_h11.H11Protocol.stream_send = stream_send  # type: ignore[method-assign]
    hyper_h11.H11Protocol._mc_shortcut = None  # type: ignore[attr-defined]
    if h11_shortcut.fits():
        hyper_h11.H11Protocol.handle = handle  # type: ignore[method-assign]
    hyper_h11.H11Protocol._create_stream = create_stream  # type: ignore[method-assign]
    hyper_h11.H11Protocol._check_protocol = check_protocol  # type: ignore[method-assign]
    hyper_run.TCPServer = LeanTCPServer  # type: ignore[misc, assignment]
    return True
