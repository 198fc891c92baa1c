"""The worker process's trio shell: listening socket, handshakes, reading, timers.

Every decision is the core's (mc/worker/core.py); this module only moves
bytes and time into it. It owns every task it starts through one nursery:
the accept loop, a short-lived task per handshake, the reactor (one task
reads every open connection, mc/worker/reactor.py), the flusher, the timer
and the control link. Cancelling ``serve`` leaves the cluster, closes every
connection with 4503 (so clients reconnect through the master) and waits
briefly for the close frames to go out.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import time
from typing import cast

import trio

from mc.protocol import CloseCode
from mc.security import server_ssl_context
from mc.tokens import TokenVerifier
from mc.websocket import HandshakeError, HandshakeReader, HandshakeRequest, accept_response

from .answers import Locate, Respond
from .browser import browser_answer
from .config import WorkerConfig
from .connection import Connection
from .core import Sink, WorkerCore
from .events import refused
from .flusher import Flusher
from .master_link import MasterLink
from .metrics import SAMPLE_EVERY, WorkerMetrics, send_all, wants_metrics
from .reactor import RECV_SIZE, Reactor
from .tls import handshake as tls_handshake

log = logging.getLogger("mc.worker")

ACCEPT_BATCH = 256
SHUTDOWN_GRACE = 1.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Worker:
    """One data-plane process: the core, its sockets and its control link."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.listener = _listen(config.host, config.port)
        self.port: int = self.listener.getsockname()[1]
        self.tls = server_ssl_context(config)
        self.reactor = Reactor(self._received, self._closed)
        self.flusher = Flusher(max_frames=config.max_queued_frames, max_bytes=config.max_queued_bytes,
                               release=self.reactor.release)
        # The core hands the sink only connections the shell built (``open``'s
        # ``make``), so the Flusher's methods take Connection where Sink says Peer.
        self.core = WorkerCore(config, cast(Sink, self.flusher), worker_id=config.worker_id(self.port),
                               instance=time.time_ns(), wall_ms=wall_ms,
                               tokens=TokenVerifier.from_settings(config.jwt_secret, config.jwt_public_key))
        self.flusher.on_overflow = self.core.overflowed
        self.metrics = WorkerMetrics(self.core)
        self.link: MasterLink | None = None
        self._exit = trio.Event()
        self._reads = 0
        if config.masters:
            self.link = MasterLink(self.core, config.masters, config.advertised(self.port),
                                   self.core.id, config.cluster_key)
            self.flusher.control = self.link.send
            self.link.on_rtt = self.metrics.control_rtt.observe
            self.link.extend = self.metrics.heartbeat

    def reload(self, config: WorkerConfig) -> None:
        """SIGHUP: keys, limits and token settings from the new config (the rest needs a restart)."""
        tokens = TokenVerifier.from_settings(config.jwt_secret, config.jwt_public_key)
        self.core.reload(config, tokens, trio.current_time())

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status`` gets the bound port.

        The connections, the flusher and the control link run under a cancel
        scope shielded from the caller's cancellation: when ``serve`` is
        cancelled (SIGTERM) a clustered worker first drains (hands its chat
        sessions over, closes connections at ``drain_rate``) for at most
        ``drain_grace``, then leaves the cluster and closes what is left with
        4503 while they can still write, and only then stops them. With
        ``exit_when_drained`` it also returns by itself once a drain is done.
        """
        running = trio.CancelScope(shield=True)
        log.info("worker %s listening on %s:%d", self.core.id, self.config.host, self.port)
        try:
            async with trio.open_nursery() as outer:
                await outer.start(self._run, running)
                task_status.started(self.port)
                try:
                    await self._exit.wait()
                finally:
                    with trio.CancelScope(shield=True):
                        if self.link is not None:
                            await self._drain(self.config.drain_grace)
                            await self.link.leave()
                        await self._close_all(CloseCode.DRAINING, "worker shutting down")
                    running.cancel()
        finally:
            self.listener.close()

    async def _run(self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.flusher.run)
                await nursery.start(self.reactor.run)
                nursery.start_soon(self._timer)
                if self.link is not None:
                    nursery.start_soon(self.link.run)
                nursery.start_soon(self._accept, nursery)
                task_status.started()

    async def _drain(self, grace: float) -> None:
        core = self.core
        if core.connections and not core.drained:
            log.info("stopping: draining for at most %.1f s", grace)
            core.drain(trio.current_time())
            with trio.move_on_after(grace):
                while not core.drained:
                    await trio.sleep(0.02)

    async def _close_all(self, code: int, reason: str) -> None:
        core = self.core
        core.close_all(code, reason, trio.current_time())
        for conn in core.connections:
            self.flusher.final_flush(conn)  # type: ignore[arg-type]
        with trio.move_on_after(SHUTDOWN_GRACE):
            while any(c.out for c in core.connections):  # type: ignore[attr-defined]
                await trio.sleep(0.01)

    async def _timer(self) -> None:
        """Run the core's timers (pings, idle closes, close timeouts, linger) when due."""
        core = self.core
        while True:
            await trio.sleep_until(core.next_timer())
            core.tick(trio.current_time())
            if core.drained and self.config.exit_when_drained:
                log.info("drained; exiting (--exit-when-drained)")
                self._exit.set()

    async def _accept(self, nursery: trio.Nursery) -> None:
        listener = self.listener
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

    # ----------------------------------------------------------- one socket

    async def _serve_socket(self, sock: socket.socket) -> None:
        """The handshake; an accepted connection is handed to the reactor and this task ends."""
        if self.tls is not None:
            secured = await tls_handshake(sock, self.tls, self.config.handshake_timeout)
            if secured is None:
                sock.close()
                return
            sock = cast(socket.socket, secured)  # duck-compatible with every call below (mc/worker/tls.py)
        conn: Connection | None = None
        try:
            conn = await self._handshake(sock)
        except Exception:
            log.exception("connection failed")
        finally:
            if conn is None:
                trio.lowlevel.notify_closing(sock)
                sock.close()

    async def _handshake(self, sock: socket.socket) -> Connection | None:
        """Answer the upgrade request; the open connection, or None when it was refused."""
        core = self.core
        request, trailing = await self._read_request(sock)
        if request is None:
            return None
        if wants_metrics(request.method, request.path, request.is_websocket):
            await send_all(sock, self.metrics.response())
            return None
        answer = core.handshake(request, trio.current_time(), _remote(sock))
        if isinstance(answer, Locate):
            assert self.link is not None  # the core asks only when clustered
            outcome = await self.link.locate(answer.session, answer.create)
            answer = core.located(answer, outcome, trio.current_time())
        if isinstance(answer, Respond):
            refused(answer.status, answer.body, request.path, _remote(sock))
            framed = browser_answer(request, answer)
            _send_nowait(sock, answer.response() if framed is None else framed)
            if framed is not None:  # let the close frame reach the page before the FIN
                with trio.move_on_after(self.config.close_timeout):
                    await trio.lowlevel.wait_readable(sock)
            return None
        _send_nowait(sock, accept_response(request, answer.subprotocol))
        conn = core.open(answer, trio.current_time(), functools.partial(Connection, sock))
        self.reactor.adopt(conn, trailing)  # from here on the reactor reads it and closes it
        return conn

    def _closed(self, conn: Connection) -> None:
        """The reactor is done with ``conn``: the core forgets it, the last frames go out."""
        self.core.closed(conn, trio.current_time())
        self.flusher.final_flush(conn)

    def _received(self, conn: Connection, data: bytes) -> None:
        """One read for the core; a reader that dirtied only a few connections writes them
        itself; one read in SAMPLE_EVERY is timed (mc_delivery_latency_seconds)."""
        self._reads += 1
        sampled = not self._reads % SAMPLE_EVERY
        t0 = time.perf_counter() if sampled else 0.0
        self.core.received(conn, data, trio.current_time())
        flusher = self.flusher
        if flusher.pending_few():
            flusher.flush_now()
        if sampled:
            self.metrics.delivery_latency.observe(time.perf_counter() - t0)

    async def _read_request(self, sock: socket.socket) -> tuple[HandshakeRequest | None, bytes]:
        reader = HandshakeReader()
        with trio.move_on_after(self.config.handshake_timeout):
            while True:
                # recv first: the request is often in already (and TLS may hold it, tls.py ``early``)
                try:
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                    continue
                except OSError:
                    return None, b""
                if not data:
                    return None, b""
                try:
                    request = reader.feed(data)
                except HandshakeError as exc:
                    _send_nowait(sock, self.core.malformed(exc.status, exc.reason).response())
                    return None, b""
                if request is not None:
                    return request, reader.trailing
        return None, b""


def _remote(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""


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

