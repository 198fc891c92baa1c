"""The worker's control link to the master: registration, reports, requests.

Implements the Cluster hooks (mc/worker/cluster.py) over one WebSocket to
``/v1/control`` (message catalogue: mc/protocol/control.py). The link is soft
state: when it drops, the worker keeps serving its connections, reconnects
with jittered backoff (trying each master URL in turn) and registers again
with its full state (sessions and presence), so a restarted master is whole
again within one report interval of the reconnect.

Bounds: one outbound queue of ``QUEUE`` messages (full: presence falls back
to a full re-registration, notifies are delivered locally only), at most
``MAX_PENDING`` requests awaiting replies, ``REQUEST_TIMEOUT`` per request.
While disconnected, chat handshakes that need the master get 503.
"""

from __future__ import annotations

import itertools
import logging
import random
from typing import Any, Callable

import psutil
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from mc.channels import batch_of
from mc.protocol import MSGPACK, ProtocolError, Target
from mc.protocol.control import CONTROL_PATH, http_to_ws

from .cluster import ClusterUnavailable, SessionNotFound
from .config import WorkerConfig
from .server import Worker

log = logging.getLogger("mc.worker.link")

QUEUE = 10_000
MAX_PENDING = 10_000
REQUEST_TIMEOUT = 3.0
LEAVE_TIMEOUT = 1.0
CONNECT_TIMEOUT = 3.0
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0


class Resync(Exception):
    """Too much unsent presence, or the master forgot us: register again."""


class MasterLink:
    def __init__(self, worker: Worker, masters: tuple[str, ...]) -> None:
        self.worker = worker
        self.masters = masters
        self._out: trio.MemorySendChannel[dict] | None = None
        self._pending: dict[int, Callable[[dict | None], None]] = {}
        self._ids = itertools.count(1)
        self._presence: dict[tuple[str, str], bool] = {}
        self._members_sent: dict[str, int] = {}
        self._process = psutil.Process()
        self._last_counts = (0, 0)
        self.registered = trio.Event()
        self.leaving = False

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Stay registered with one of the masters until cancelled."""
        backoff = BACKOFF_MIN
        for url in itertools.cycle(self.masters):
            try:
                async with open_websocket_url(
                    http_to_ws(url) + CONTROL_PATH,
                    connect_timeout=CONNECT_TIMEOUT,
                    disconnect_timeout=1,
                ) as ws:
                    backoff = BACKOFF_MIN
                    await self._session(ws)
            except* (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError, Resync,
                     ProtocolError) as group:
                log.info("control link to %s: %r", url, group.exceptions[0])
            await trio.sleep(min(BACKOFF_MAX, backoff * (0.5 + random.random())))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(self, ws: Any) -> None:
        worker = self.worker
        sessions = worker.rooms.sessions()
        announced = {(p.client, p.device) for p in worker.hub.apps()}
        await ws.send_message(MSGPACK.encode({
            "type": "register",
            "worker": worker.id,
            "url": worker.config.advertise,
            "capacity": worker.config.max_connections,
            "sessions": sessions,
            "presence": [list(k) for k in announced],
            "draining": worker.draining,  # a drain survives a master restart
        }))
        with trio.fail_after(REQUEST_TIMEOUT):
            decoded = MSGPACK.decode(await ws.get_message())
        # "registered" comes first; a batch may carry commands queued right after it
        reply, *rest = decoded if type(decoded) is list and decoded else [decoded]
        if type(reply) is not dict or reply.get("type") != "registered":
            raise Resync()
        for session in reply.get("conflicts", []):
            worker.drop_session(session)
        interval = float(reply.get("interval", 0.5))
        send, receive = trio.open_memory_channel[dict](QUEUE)
        # Apps and members that changed while the registration was in flight
        # were not queued (no link yet): report them as the difference between
        # what was announced and what is here now.
        self._members_sent = sessions
        current = {(p.client, p.device) for p in worker.hub.apps()}
        self._presence = {k: False for k in announced - current}
        self._presence.update((k, True) for k in current - announced)
        self._out = send
        self.registered.set()
        log.info("registered with the master")
        for msg in rest:
            self._handle(msg)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, ws, receive)
                nursery.start_soon(self._reporter, interval)
                await self._reader(ws)
        finally:
            self._out = None
            self.registered = trio.Event()
            pending, self._pending = self._pending, {}
            for callback in pending.values():
                callback(None)

    async def _writer(self, ws: Any, receive: trio.MemoryReceiveChannel[dict]) -> None:
        async for msg in receive:
            await ws.send_message(MSGPACK.encode(batch_of(msg, receive)))

    async def _reader(self, ws: Any) -> None:
        while True:
            decoded = MSGPACK.decode(await ws.get_message())
            for msg in decoded if type(decoded) is list else [decoded]:
                self._handle(msg)

    def _handle(self, msg: Any) -> None:
        """One message from the master (a reply or a command)."""
        worker = self.worker
        if type(msg) is not dict:
            raise Resync()
        kind = msg.get("type")
        if kind in ("owner", "notified", "left"):
            callback = self._pending.pop(msg.get("id"), None)
            if callback is not None:
                callback(msg)
        elif kind == "deliver":
            frame = msg.get("frame")
            if type(frame) is not dict:
                raise Resync()
            count = worker.handlers.deliver_notify(Target.parse(msg.get("to")), frame)
            self._send({"type": "delivered", "id": msg.get("id"), "count": count})
        elif kind == "kick":
            worker.kick(str(msg.get("client")), str(msg.get("device")))
        elif kind == "drain":
            worker.drain()
        elif kind == "reregister" and not self.leaving:
            raise Resync()

    async def _reporter(self, interval: float) -> None:
        while not self.leaving:  # after ``leave`` the master must not hear from us again
            self._send_presence()
            self._send({"type": "heartbeat", "metrics": self._metrics(interval)})
            await trio.sleep(interval)

    def _metrics(self, interval: float) -> dict[str, Any]:
        w = self.worker
        stats = w.stats
        last_in, last_out = self._last_counts
        self._last_counts = (stats.messages_in, stats.messages_out)
        mem = self._process.memory_info().rss
        return {
            "connections": len(w.connections),
            "sessions": len(w.rooms),
            "subscriptions": w.hub.subscription_count,
            "msgs_in_rate": max(0, stats.messages_in - last_in) / interval,
            "msgs_out_rate": max(0, stats.messages_out - last_out) / interval,
            "cpu_percent": self._process.cpu_percent(None),
            "rss_bytes": mem,
        }

    def _send_presence(self) -> None:
        current = self.worker.rooms.sessions()
        members = {s: n for s, n in current.items() if self._members_sent.get(s) != n}
        self._members_sent = current
        if not self._presence and not members:
            return
        changes, self._presence = self._presence, {}
        self._send({
            "type": "presence",
            "added": [list(k) for k, up in changes.items() if up],
            "removed": [list(k) for k, up in changes.items() if not up],
            "members": members,
        })

    def _send(self, msg: dict[str, Any]) -> bool:
        if self._out is None:
            return False
        try:
            self._out.send_nowait(msg)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    # -------------------------------------------------------- Cluster hooks

    async def locate_session(self, session: str, create: bool) -> str | None:
        reply = await self._request({"type": "claim" if create else "lookup", "session": session})
        owner = reply.get("worker")
        if owner == self.worker.id:
            return None
        if owner is None or reply.get("url") is None:
            if create:  # our claim was refused: the master forgot us
                raise ClusterUnavailable("not registered with the master")
            raise SessionNotFound(session)
        return str(reply["url"])

    async def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self._out is None or len(self._pending) >= MAX_PENDING:
            raise ClusterUnavailable("master unreachable")
        rid = next(self._ids)
        result: list[dict | None] = []
        done = trio.Event()

        def reply(answer: dict | None) -> None:
            result.append(answer)
            done.set()

        self._pending[rid] = reply
        if not self._send({**msg, "id": rid}):
            self._pending.pop(rid, None)
            raise ClusterUnavailable("master unreachable")
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                await done.wait()
        except trio.TooSlowError:
            self._pending.pop(rid, None)
            raise ClusterUnavailable("master did not answer") from None
        if result[0] is None:
            raise ClusterUnavailable("control link dropped")
        return result[0]

    async def leave(self) -> None:
        """Tell the master we are going, so it stops sending clients here at once
        (instead of after the lease) and forgets our sessions and presence."""
        self.leaving = True
        with trio.move_on_after(LEAVE_TIMEOUT):
            try:
                await self._request({"type": "leave"})
            except ClusterUnavailable:
                pass

    def session_ended(self, session: str) -> None:
        self._members_sent.pop(session, None)
        self._send({"type": "release", "session": session})

    def app_connected(self, client: str, device: str) -> None:
        self._presence_change(client, device, True)

    def app_disconnected(self, client: str, device: str) -> None:
        self._presence_change(client, device, False)

    def _presence_change(self, client: str, device: str, up: bool) -> None:
        if self._out is None:
            return  # the next registration carries the full list
        key = (client, device)
        self._presence.pop(key, None)  # keep insertion order = order of events
        self._presence[key] = up
        if len(self._presence) > QUEUE:
            self._out.close()  # too much to send: the reconnect re-registers in full

    def forward_notify(self, target: Target, frame: dict[str, Any], done: Callable[[int], None]) -> bool:
        if self._out is None or len(self._pending) >= MAX_PENDING:
            return False
        rid = next(self._ids)
        self._pending[rid] = lambda msg: done(_delivered(msg))
        if not self._send({"type": "notify", "id": rid, "to": target.to_wire(), "frame": frame}):
            self._pending.pop(rid, None)
            return False
        return True


def _delivered(msg: dict | None) -> int:
    count = None if msg is None else msg.get("delivered")
    return count if type(count) is int and count >= 0 else 0


async def serve_clustered(config: WorkerConfig) -> None:
    """A worker attached to its masters; serves until cancelled."""
    worker = Worker(config)
    worker.cluster = MasterLink(worker, config.masters)
    await worker.serve()
