"""The worker's control link to the master: the I/O around the core's control messages.

One WebSocket to ``/v1/control`` (message catalogue: mc/protocol/control.py).
The core decides what to register, report and do with each command; this
shell connects, sends, reads, pairs the replies of the requests it awaits
(session claims and lookups, the leave) and keeps the link up. The link is
soft state: when it drops, the worker keeps serving its connections,
reconnects with jittered backoff (trying each master URL in turn) and
registers again with its full state, so a restarted master is whole again
within one report interval of the reconnect.

Presence before welcome costs the master one message per app connect; the
writer merges a run of such announcements queued together into one
``presence`` (at most PRESENCE_CHUNK apps, under the first one's id) and,
when its ``recorded`` comes back, hands the core one ``recorded`` per id it
stood for. During a mass connect that divides the master's per-message work
(parse, store call, reply) by the run length.

Bounds: one outbound queue of ``QUEUE`` messages (full: the message is not
sent and the caller falls back, e.g. a notify is acked with its local
count), at most ``MAX_PENDING`` awaited requests, ``REQUEST_TIMEOUT`` each.
While disconnected, chat handshakes that need the master get 503.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

import psutil
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from mc.channels import batch_of, encoded
from mc.logs import Limited
from mc.protocol import MSGPACK, ProtocolError
from mc.protocol.control import (
    CONTROL_PATH,
    MAX_CONTROL_FRAME,
    PRESENCE_CHUNK,
    TO_WORKER,
    Claim,
    ControlMessage,
    Heartbeat,
    Leave,
    Left,
    Lookup,
    Metrics,
    Owner,
    Presence,
    Recorded,
    Register,
    Registered,
    Reregister,
    http_to_ws,
    parse_batch,
)

from .answers import LocateFailed, Owned

log = logging.getLogger("mc.worker.link")
retries = Limited(log, rate=0.5, burst=5.0)

QUEUE = 10_000
MAX_PENDING = 10_000
REQUEST_TIMEOUT = 3.0
LEAVE_TIMEOUT = 1.0
CONNECT_TIMEOUT = 3.0
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0


class Resync(Exception):
    """Too much unsent presence, or the master forgot us: register again."""


class LinkCore(Protocol):
    """What the link needs of the worker core (mc/worker/core.py), and no more."""

    resync_needed: bool

    def registration(self, url: str) -> Register: ...
    def registered(self, reply: Registered, now: float) -> None: ...
    def report(self, now: float, cpu_percent: float, rss_bytes: int) -> list[ControlMessage]: ...
    def control(self, message: ControlMessage, now: float) -> None: ...
    def link_down(self) -> None: ...


class MasterLink:
    def __init__(self, core: LinkCore, masters: tuple[str, ...], url: str, worker_id: str,
                 cluster_key: str = "") -> None:
        self.core = core
        self._headers = [(b"Authorization", f"Bearer {cluster_key}".encode())] if cluster_key else []
        self.masters = masters
        self.url = url
        self.worker_id = worker_id
        self._out: trio.MemorySendChannel[ControlMessage] | None = None
        self._pending: dict[int, trio.MemorySendChannel[ControlMessage | None]] = {}
        self._ids = itertools.count(1 << 40)  # apart from the core's notify ids
        #: merged presence: the id it went under -> the other ids it stands for
        self._merged: dict[int, list[int]] = {}
        self._process = psutil.Process()
        self.leaving = False
        self.bad_messages = 0
        #: observes each request's round trip in seconds (the worker's mc_control_rtt_seconds)
        self.on_rtt: Callable[[float], None] = _ignore_rtt
        #: adds the shell's figures to each heartbeat's metrics (the worker's labelled counters)
        self.extend: Callable[[Metrics], Metrics] | None = None

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Stay registered with one of the masters until cancelled."""
        backoff = BACKOFF_MIN
        for url in itertools.cycle(self.masters):
            try:
                async with open_websocket_url(
                    http_to_ws(url) + CONTROL_PATH, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=1,
                    extra_headers=self._headers, max_message_size=MAX_CONTROL_FRAME,
                ) as ws:
                    backoff = BACKOFF_MIN
                    await self._session(ws)
            except* (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError, Resync,
                     ProtocolError) as group:
                reason = _describe(group.exceptions[0])
                retries.log(logging.WARNING, "link-retry", "control link to %s: %s; retrying", url, reason,
                            url=url, reason=reason)
            await trio.sleep(min(BACKOFF_MAX, backoff * (0.5 + random.random())))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(self, ws: Any) -> None:
        await ws.send_message(MSGPACK.encode(self.core.registration(self.url).to_wire()))
        sent = trio.current_time()
        with trio.fail_after(REQUEST_TIMEOUT):
            messages = self._parse(await ws.get_message())
        self.on_rtt(trio.current_time() - sent)
        # "registered" comes first; a batch may carry commands queued right after it
        if not messages or not isinstance(messages[0], Registered):
            raise Resync()
        reply, rest = messages[0], messages[1:]
        send, receive = trio.open_memory_channel[ControlMessage](QUEUE)
        self._out = send
        self.core.registered(reply, trio.current_time())
        log.info("registered with the master")
        for msg in rest:
            self._handle(msg)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, ws, receive)
                nursery.start_soon(self._reporter, reply.interval)
                await self._reader(ws)
        finally:
            self._out = None
            self._merged.clear()
            self.core.link_down()
            pending, self._pending = self._pending, {}
            for waiter in pending.values():
                waiter.send_nowait(None)

    def _parse(self, data: bytes | str) -> list[ControlMessage]:
        if not isinstance(data, bytes):
            raise Resync()  # masters answer a msgpack link in binary frames
        messages, errors = parse_batch(MSGPACK.decode(data), TO_WORKER)
        for exc in errors:
            self.bad_messages += 1
            log.warning("ignored a malformed message from the master: %s", exc.reason)
        return messages

    async def _writer(self, ws: Any, receive: trio.MemoryReceiveChannel[ControlMessage]) -> None:
        async for first in receive:
            batch = batch_of(first, receive)
            if type(batch) is list:
                batch = self._merge_presence(batch)
            for frame in encoded(batch, MSGPACK.encode):
                await ws.send_message(frame)

    def _merge_presence(self, batch: list[ControlMessage]) -> ControlMessage | list[ControlMessage]:
        """``batch`` with each run of announcements (a ``presence`` adding apps, with an
        id) merged into one; the order of everything else is kept."""
        out: list[ControlMessage] = []
        run: list[Presence] = []

        def end_run() -> None:
            if len(run) == 1:
                out.append(run[0])
            elif run:
                first = run[0].id
                assert first is not None
                self._merged[first] = [m.id for m in run[1:] if m.id is not None]
                out.append(Presence(tuple(p for m in run for p in m.added), id=first))
            run.clear()

        size = 0
        for msg in batch:
            if (type(msg) is Presence and msg.id is not None and not msg.removed and not msg.members
                    and len(self._merged) < MAX_PENDING):
                if size + len(msg.added) > PRESENCE_CHUNK:
                    end_run()
                    size = 0
                run.append(msg)
                size += len(msg.added)
                continue
            end_run()
            size = 0
            out.append(msg)
        end_run()
        return out[0] if len(out) == 1 else out

    async def _reader(self, ws: Any) -> None:
        while True:
            for msg in self._parse(await ws.get_message()):
                self._handle(msg)

    def _handle(self, msg: ControlMessage) -> None:
        """One message from the master: a reply this shell awaits, or one for the core."""
        if isinstance(msg, (Owner, Left)):
            waiter = self._pending.pop(msg.id, None)
            if waiter is not None:
                waiter.send_nowait(msg)
        elif isinstance(msg, Reregister):
            if not self.leaving:
                raise Resync()
        elif isinstance(msg, Recorded) and msg.id in self._merged:
            now = trio.current_time()
            self.core.control(msg, now)
            for other in self._merged.pop(msg.id):
                self.core.control(Recorded(other), now)
        else:
            self.core.control(msg, trio.current_time())
        if self.core.resync_needed:
            raise Resync()

    async def _reporter(self, interval: float) -> None:
        while not self.leaving:  # after ``leave`` the master must not hear from us again
            rss = self._process.memory_info().rss
            for msg in self.core.report(trio.current_time(), self._process.cpu_percent(None), rss):
                if self.extend is not None and isinstance(msg, Heartbeat):
                    msg = Heartbeat(self.extend(msg.metrics))
                self.send(msg)
            if self.core.resync_needed:
                raise Resync()
            await trio.sleep(interval)

    def send(self, message: ControlMessage) -> bool:
        """Queue a message for the master (the core's Sink.send_control); never waits."""
        if self._out is None:
            return False
        try:
            self._out.send_nowait(message)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    # ------------------------------------------------------------ requests

    async def locate(self, session: str, create: bool) -> Owned | str | LocateFailed:
        """Who owns ``session`` (claiming it when ``create``): Owned for this worker."""
        rid = next(self._ids)
        reply = await self._request(rid, Claim(rid, session) if create else Lookup(rid, session))
        if isinstance(reply, str):
            return LocateFailed(False, reply)
        if not isinstance(reply, Owner):
            return LocateFailed(False, f"unexpected {reply.TYPE!r} reply")
        if reply.worker == self.worker_id:
            return Owned(reply.seq)
        if reply.worker is None or reply.url is None:
            if create:  # our claim was refused: the master forgot us
                return LocateFailed(False, "not registered with the master")
            return LocateFailed(True, session)
        return reply.url

    async def _request(self, rid: int, msg: ControlMessage) -> ControlMessage | str:
        """The master's reply to ``msg``, or why there is none."""
        if self._out is None or len(self._pending) >= MAX_PENDING:
            return "master unreachable"
        send, receive = trio.open_memory_channel[ControlMessage | None](1)
        self._pending[rid] = send
        if not self.send(msg):
            self._pending.pop(rid, None)
            return "master unreachable"
        sent = trio.current_time()
        with trio.move_on_after(REQUEST_TIMEOUT):
            reply = await receive.receive()
            self.on_rtt(trio.current_time() - sent)
            return "control link dropped" if reply is None else reply
        self._pending.pop(rid, None)
        return "master did not answer"

    async def leave(self) -> None:
        """Tell the master we are going, so it stops sending clients here at once
        (instead of after the lease) and forgets our sessions and presence."""
        self.leaving = True
        with trio.move_on_after(LEAVE_TIMEOUT):
            rid = next(self._ids)
            await self._request(rid, Leave(rid))


def _describe(exc: BaseException) -> str:
    """A retry's reason in words (an exception's repr alone often says nothing)."""
    if isinstance(exc, HandshakeError):
        status = getattr(exc, "status_code", None)
        return f"handshake refused{f' ({status})' if status else ''}: {exc!r}"
    if isinstance(exc, ConnectionClosed):
        return f"link closed: {exc.reason}"
    if isinstance(exc, Resync):
        return "registering again"
    if isinstance(exc, trio.TooSlowError):
        return "the master did not answer in time"
    return f"{type(exc).__name__}: {exc}"


def _ignore_rtt(seconds: float) -> None:
    return None
