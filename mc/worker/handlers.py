"""What the worker does with each frame a client sends, per endpoint.

Every frame is decoded and validated through mc.protocol; a ProtocolError
becomes an ``error`` frame (the connection stays open) or a close code, and
any other exception is logged and answered with ``error`` ``internal`` so a
client can never take down the worker or another connection.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from mc.protocol import (
    APP_FRAMES,
    CHAT_FRAMES,
    CONSUMER_FRAMES,
    Ack,
    Error,
    ErrorCode,
    Notify,
    Pause,
    Ping,
    Pong,
    ProtocolError,
    Publish,
    Resume,
    Send,
    Subscribe,
    Unsubscribe,
    parse_request,
)

from .hub import SubscriptionLimit
from .peer import APP, CHAT, CONSUMER
from .prepared import fan_out

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Worker

log = logging.getLogger("mc.worker")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Handlers:
    """Binds each endpoint's frame table to the worker's hub and rooms."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.hub = worker.hub
        self.stats = worker.stats
        self._ids = itertools.count(1)
        self._tables: dict[str, tuple[dict, dict[type, Callable[..., None]]]] = {
            APP: (APP_FRAMES, {Publish: self.publish, Ping: self.ping, Pong: _noop}),
            CONSUMER: (
                CONSUMER_FRAMES,
                {
                    Subscribe: self.subscribe,
                    Unsubscribe: self.unsubscribe,
                    Pause: self.pause,
                    Resume: self.resume,
                    Notify: self.notify,
                    Ping: self.ping,
                    Pong: _noop,
                },
            ),
            CHAT: (CHAT_FRAMES, {Send: self.send, Ping: self.ping, Pong: _noop}),
        }

    def __call__(self, conn: "Connection", payload: bytes) -> None:
        """Connection.on_message: decode, validate, act; never raises."""
        self.stats.messages_in += 1
        table, actions = self._tables[conn.kind]
        try:
            frame = parse_request(conn.codec.decode(payload), table)
            actions[type(frame)](conn, frame)
        except ProtocolError as exc:
            if exc.close_code is not None:
                conn.close(exc.close_code, exc.reason)
            else:
                self.stats.errors += 1
                conn.send(Error(exc.code, exc.reason, exc.request_id))
        except Exception:
            log.exception("frame handling failed on %r", conn)
            self.stats.errors += 1
            conn.send(Error(ErrorCode.INTERNAL, "internal error"))

    # --------------------------------------------------------------- every

    def ping(self, conn: "Connection", frame: Ping) -> None:
        conn.send(Pong(frame.id))

    # ----------------------------------------------------------------- app

    def publish(self, conn: "Connection", frame: Publish) -> None:
        recipients = self.hub.route_publish(frame.topic, frame.key)
        if recipients:
            worker = self.worker
            worker.seq += 1
            obj: dict[str, Any] = {
                "type": "message",
                "topic": frame.topic,
                "data": frame.data,
                "from": conn.sender,
                "worker": worker.id,
                "seq": worker.seq,
                "ts": now_ms(),
            }
            if frame.key is not None:
                obj["key"] = frame.key
            if frame.trace is not None:
                obj["trace"] = frame.trace
            self.stats.messages_out += fan_out(obj, recipients)
        if frame.id is not None:
            conn.send(Ack(frame.id, delivered=len(recipients)))

    # ------------------------------------------------------------ consumer

    def subscribe(self, conn: "Connection", frame: Subscribe) -> None:
        try:
            self.hub.subscribe(conn, frame.topic, frame.group, frame.key)
        except SubscriptionLimit as exc:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"a connection may hold at most {exc.args[0]} subscriptions",
                request_id=frame.id,
            ) from None
        _ack(conn, frame.id)

    def unsubscribe(self, conn: "Connection", frame: Unsubscribe) -> None:
        self.hub.unsubscribe(conn, frame.topic, frame.group)
        _ack(conn, frame.id)

    def pause(self, conn: "Connection", frame: Pause) -> None:
        self.hub.set_paused(conn, True)
        _ack(conn, frame.id)

    def resume(self, conn: "Connection", frame: Resume) -> None:
        self.hub.set_paused(conn, False)
        _ack(conn, frame.id)

    def notify(self, conn: "Connection", frame: Notify) -> None:
        obj = {
            "type": "notify",
            "data": frame.data,
            "from": conn.name,
            "id": frame.id if frame.id is not None else self.new_id(),
        }
        local = self.deliver_notify(frame.to, obj)
        if frame.id is None:
            self.worker.cluster.forward_notify(frame.to, obj, _noop)
            return

        def done(remote: int) -> None:
            conn.send(Ack(frame.id, delivered=local + remote))  # type: ignore[arg-type]

        if not self.worker.cluster.forward_notify(frame.to, obj, done):
            done(0)

    def deliver_notify(self, target: Any, obj: dict[str, Any]) -> int:
        """Write a notify frame to the matching apps on this worker; returns the count."""
        count = fan_out(obj, self.hub.route_notify(target))
        self.stats.messages_out += count
        return count

    def new_id(self) -> str:
        """A notify id for senders that gave none: unique per worker run."""
        return f"{self.worker.id}-{self.worker.started_ns:x}-{next(self._ids)}"

    # ---------------------------------------------------------------- chat

    def send(self, conn: "Connection", frame: Send) -> None:
        room = conn.room
        seq = room.next_seq()  # type: ignore[union-attr]
        obj: dict[str, Any] = {
            "type": "chat",
            "from": conn.client,
            "data": frame.data,
            "seq": seq,
            "ts": now_ms(),
        }
        if frame.trace is not None:
            obj["trace"] = frame.trace
        self.stats.messages_out += fan_out(obj, room.others(conn))  # type: ignore[union-attr]
        if frame.id is not None:
            conn.send(Ack(frame.id, seq=seq))


def _ack(conn: "Connection", rid: str | None) -> None:
    if rid is not None:
        conn.send(Ack(rid))


def _noop(*args: Any) -> None:
    return None
