"""The worker process: listening socket, handshakes, connections, timers.

Owns every task it starts through one nursery: the accept loop, the flusher,
the ticker (pings, idle closes, chat linger) and one reader task per
connection. Cancelling ``serve`` closes every connection with 4503 (so
clients reconnect through the master) and waits briefly for the close frames
to go out.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any

import orjson
import trio

from mc.protocol import CloseCode, Joined, Left, Welcome
from mc.websocket import (
    OP_PING,
    HandshakeError,
    HandshakeReader,
    HandshakeRequest,
    accept_response,
    encode_frame,
    reject_response,
)

from .admission import Admitted, Refused, admit
from .chat import Rooms
from .cluster import Cluster, Standalone
from .config import WorkerConfig
from .connection import RECV_SIZE, Connection
from .flusher import Flusher
from .handlers import Handlers
from .hub import Hub
from .peer import APP, CHAT, CONSUMER
from .prepared import fan_out
from .stats import Stats

log = logging.getLogger("mc.worker")

PING_FRAME = encode_frame(OP_PING, b"")
ACCEPT_BATCH = 256
SHUTDOWN_GRACE = 1.0


class Worker:
    """One data-plane process: apps, consumers and chat sessions."""

    def __init__(self, config: WorkerConfig, cluster: Cluster | None = None) -> None:
        self.config = config
        self.id = config.worker_id
        self.hub = Hub(max_subscriptions=config.max_subscriptions)
        self.rooms = Rooms(max_members=config.chat_max_members, linger=config.chat_linger)
        self.stats = Stats()
        self.flusher = Flusher(
            max_frames=config.max_queued_frames, max_bytes=config.max_queued_bytes
        )
        self.cluster: Cluster = cluster or Standalone(lambda s: s in self.rooms)
        self.connections: set[Connection] = set()
        self.handlers = Handlers(self)
        self.seq = 0
        self.started_ns = time.time_ns()
        self.draining = False
        self.port = config.port

    # ------------------------------------------------------------ lifecycle

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``task_status`` gets the bound port.

        The connections, the flusher and the control link run under a cancel
        scope shielded from the caller's cancellation: when ``serve`` is
        cancelled it first leaves the cluster and closes every connection
        with 4503 while they can still write, and only then stops them.
        """
        listener = _listen(self.config.host, self.config.port)
        self.port = listener.getsockname()[1]
        running = trio.CancelScope(shield=True)
        try:
            async with trio.open_nursery() as outer:
                await outer.start(self._run, listener, running)
                task_status.started(self.port)
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await self.cluster.leave()
                        await self._close_all(CloseCode.DRAINING, "worker shutting down")
                    running.cancel()
        finally:
            listener.close()

    async def _run(
        self, listener: socket.socket, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.flusher.run)
                nursery.start_soon(self._tick)
                nursery.start_soon(self.cluster.run)
                nursery.start_soon(self._accept, listener, nursery)
                task_status.started()

    async def _close_all(self, code: int, reason: str) -> None:
        for conn in list(self.connections):
            conn.close(code, reason)
            conn.final_flush()
        with trio.move_on_after(SHUTDOWN_GRACE):
            while any(c.out for c in self.connections):
                await trio.sleep(0.01)

    async def _accept(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        log.warning("out of file descriptors; pausing accepts")
                        await trio.sleep(0.1)
                    break
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(self._serve_socket, sock)

    async def _tick(self) -> None:
        """Pings every heartbeat, 4008 after 3 heartbeats of silence, chat linger."""
        hb = self.config.heartbeat
        next_ping = trio.current_time() + hb
        while True:
            await trio.sleep(min(1.0, hb / 4))
            now = trio.current_time()
            ping = now >= next_ping
            if ping:
                next_ping = now + hb
            deadline = now - 3 * hb
            for conn in list(self.connections):
                if conn.last_seen < deadline:
                    self.stats.idle_closes += 1
                    conn.close(CloseCode.IDLE, "idle timeout")
                elif ping:
                    conn.write(PING_FRAME)
            for session in self.rooms.expire(now):
                self.cluster.session_ended(session)

    # ------------------------------------------------------------ handshake

    async def _serve_socket(self, sock: socket.socket) -> None:
        conn: Connection | None = None
        try:
            request, trailing = await self._read_request(sock)
            if request is None:
                return
            if request.path == "/healthz" and not request.is_websocket:
                body = orjson.dumps({"worker": self.id, "connections": len(self.connections)})
                _send_nowait(sock, reject_response(200, body, (("Content-Type", "application/json"),)))
                return
            try:
                admitted = await admit(self, request)
            except Refused as refused:
                self.stats.rejected += 1
                _send_nowait(sock, refused.response())
                return
            _send_nowait(sock, accept_response(request, admitted.subprotocol))
            conn = self._attach(sock, admitted)
            del request, admitted  # ~2 KiB per connection otherwise kept for its lifetime
            await conn.run(trailing)
        except Exception:
            log.exception("connection failed")
        finally:
            if conn is not None:
                self._detach(conn)
                conn.final_flush()
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _read_request(
        self, sock: socket.socket
    ) -> tuple[HandshakeRequest | None, bytes]:
        reader = HandshakeReader()
        with trio.move_on_after(self.config.handshake_timeout):
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    return None, b""
                if not data:
                    return None, b""
                try:
                    request = reader.feed(data)
                except HandshakeError as exc:
                    body = orjson.dumps({"error": "bad_request", "reason": exc.reason})
                    _send_nowait(sock, reject_response(exc.status, body, (("Content-Type", "application/json"),)))
                    return None, b""
                if request is not None:
                    return request, reader.trailing
        return None, b""

    # ---------------------------------------------------------- membership

    def _attach(self, sock: socket.socket, admitted: Admitted) -> Connection:
        cfg = self.config
        conn = Connection(
            sock, admitted.kind, admitted.codec, self.flusher,
            max_message=cfg.max_frame, close_timeout=cfg.close_timeout, **admitted.identity,
        )
        conn.on_message = self.handlers
        self.connections.add(conn)
        welcome: dict[str, Any] = {"worker": self.id, "heartbeat": cfg.heartbeat}
        if conn.kind == APP:
            old = self.hub.attach_app(conn)
            conn.send(Welcome(client=conn.client, device=conn.device, **welcome))
            if old is not None:
                old.close(CloseCode.REPLACED, "replaced by a newer connection")  # type: ignore[attr-defined]
            self.cluster.app_connected(conn.client, conn.device)
        elif conn.kind == CONSUMER:
            self.hub.attach_consumer(conn)
            conn.send(Welcome(name=conn.name, **welcome))
        else:
            room, new_client, old = self.rooms.join(admitted.session, conn, trio.current_time())  # type: ignore[arg-type]
            conn.send(Welcome(session=room.session, client=conn.client,
                              members=tuple(room.members()), **welcome))
            if old is not None:
                old.close(CloseCode.REPLACED, "replaced by a newer connection")  # type: ignore[attr-defined]
            if new_client:
                fan_out(Joined(conn.client).to_wire(), room.others(conn))
        return conn

    def _detach(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if conn.kind == CHAT:
            room = conn.room
            if room is not None and room.remove(conn, trio.current_time()):  # type: ignore[attr-defined]
                fan_out(Left(conn.client).to_wire(), room.peers())  # type: ignore[attr-defined]
        elif self.hub.detach(conn) and conn.kind == APP:
            self.cluster.app_disconnected(conn.client, conn.device)

    def drain(self) -> None:
        """Refuse new connections (503) and close the open ones with 4503."""
        self.draining = True
        for conn in list(self.connections):
            conn.close(CloseCode.DRAINING, "worker draining")

    def drop_session(self, session: str) -> None:
        """Stop hosting ``session`` (another worker owns it): its members reconnect (4503)."""
        room = self.rooms.drop(session)
        if room is not None:
            for peer in list(room.peers()):
                peer.close(CloseCode.DRAINING, "session moved")  # type: ignore[attr-defined]

    def kick(self, client: str, device: str) -> bool:
        """Close the app connection (client, device) with 4009 (it connected elsewhere)."""
        peer = self.hub.app(client, device)
        if peer is None:
            return False
        self.hub.detach(peer)
        peer.close(CloseCode.REPLACED, "replaced by a newer connection")  # type: ignore[attr-defined]
        return True


def _listen(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(4096)
    listener.setblocking(False)
    return listener


def _send_nowait(sock: socket.socket, data: bytes) -> None:
    """Write a small HTTP answer; the kernel buffer always has room for it."""
    try:
        sock.send(data)
    except OSError:
        pass
