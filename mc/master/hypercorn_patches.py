"""Two cuts in Hypercorn's per-request work on HTTP/1.1 (the notify API's rate).

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

**No task start per request for the keep-alive timer.** Each connection's
idle timer is stopped when a request arrives and restarted when its answer is
out; Hypercorn restarts it with ``Nursery.start`` under a lock (a task, a
start handshake, about a tenth of the master's CPU under notify load).
:class:`IdleTask` cancels the old timer's scope and spawns the new one with
``start_soon``: the same timeout, the same action, less than half the work.

:func:`install` replaces ``H11Protocol.stream_send`` and the ``TrioSingleTask``
of ``hypercorn.trio.tcp_server`` (Hypercorn 0.16 to 0.18 have the same ones); if
they are not there, a later Hypercorn changed them, and it is left alone:
requests are then handled as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from itertools import chain
from typing import Any

import h11
import trio
from hypercorn.events import RawData
from hypercorn.protocol import h11 as hyper_h11
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio import tcp_server

log = logging.getLogger("mc.master")

_original = hyper_h11.H11Protocol.stream_send
_HEAD = "_mc_pending_head"


async def stream_send(self: Any, event: Any) -> None:
    if type(self.stream) is not HTTPStream or not isinstance(event, Response | Body | EndBody):
        await _original(self, event)
        return
    if isinstance(event, Response):
        if event.status_code < 200:
            await _original(self, event)
            return
        headers = list(chain(event.headers, self.config.response_headers("h11")))
        if self.keep_alive_requests >= self.config.keep_alive_max_requests:
            headers.append((b"connection", b"close"))
        setattr(self, _HEAD, _encode(self, h11.Response(headers=headers, status_code=event.status_code)))
        return
    data = _encode(self, h11.Data(data=event.data) if isinstance(event, Body) else h11.EndOfMessage())
    head = self.__dict__.pop(_HEAD, b"")
    if head or data:
        await self.send(RawData(data=head + data))


def _encode(self: Any, event: Any) -> bytes:
    """As Hypercorn's ``_send_h11_event``, without the send: nothing once the peer broke the protocol."""
    try:
        return self.connection.send(event) or b""
    except h11.LocalProtocolError:
        if self.connection.their_state != h11.ERROR:
            raise
        return b""


class IdleTask:
    """``TrioSingleTask``'s job (run one action at a time, restartable), without ``Nursery.start``."""

    __slots__ = ("_scope",)

    def __init__(self) -> None:
        self._scope: trio.CancelScope | None = None

    async def restart(self, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        if self._scope is not None:
            self._scope.cancel()
        self._scope = trio.CancelScope()  # cancelling it before the task enters it is allowed
        task_group.spawn(_run_in, self._scope, action)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None


async def _run_in(scope: trio.CancelScope, action: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await action()


def install() -> bool:
    """Patch Hypercorn (once); False if it is not the Hypercorn this was written for."""
    if hyper_h11.H11Protocol.stream_send is stream_send:
        return True
    if "_send_h11_event" not in vars(hyper_h11.H11Protocol) or not hasattr(tcp_server, "TrioSingleTask"):
        log.warning("hypercorn's h11 protocol changed: mc.master.hypercorn_patches not applied")
        return False
    hyper_h11.H11Protocol.stream_send = stream_send  # type: ignore[method-assign]
    tcp_server.TrioSingleTask = IdleTask  # type: ignore[misc, assignment]
    return True
