"""One task reads every open connection: a private epoll set, awaited as one fd.

A task per connection parked in ``wait_readable`` costs ~2 KiB of task and
coroutine frame per idle connection; here an idle connection costs only its
epoll registration (kernel memory) and one dict slot. The reading task
awaits the epoll object's own fd with ``trio.lowlevel.wait_readable``; when
it is readable, ``poll(0, MAX_EVENTS)`` says which connections are, and each
gets one ``recv`` of at most RECV_SIZE bytes per pass (level-triggered: what
is left is reported again next pass, so one busy connection cannot starve
the others), fed to the core through ``received``. A pass ends with a trio
checkpoint, so the flusher, the timer and the handshakes run between passes.

The one exception is a client's answer to the keep-alive ping: a read that is
exactly one empty masked pong (6 bytes, ``0x8A 0x80`` + a mask key) arriving
at a frame boundary only marks the connection alive (``last_seen``), which is
all the core would do with it (PROTOCOL.md "Keepalive": any frame counts).
Holding many idle connections is mostly this: one pong per connection per
heartbeat, so it skips the parser, the event list and the dispatch.

Closing is never done inside the call that asks for it (``release`` comes
from the core in the middle of its own work: a fan-out, a tick): the
connection leaves the epoll set at once and a second task, the reaper,
later reports it closed (``closed``: the core forgets it, the last frames are
flushed) and closes its socket, exactly once per connection.

Anything with ``fileno()``, ``recv(n)`` (returning what is available, b"" at
EOF, raising BlockingIOError when there is nothing) and ``close()`` can be
read here: a socket, or the TLS stream of mc/worker/tls.py.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable

import trio

from .connection import Connection

log = logging.getLogger("mc.worker")

#: ready connections handled per pass (then the other tasks get a turn)
MAX_EVENTS = 256
#: bytes read from one connection per pass
RECV_SIZE = 65536
#: the first two bytes of an empty masked pong (FIN + opcode 0xA, mask bit + length 0)
PONG_HEAD = b"\x8a\x80"
#: its length: the two bytes and the 4-byte mask key
PONG_SIZE = 6


class Reactor:
    """Readiness for every open connection, and their orderly end."""

    __slots__ = ("_ep", "_conns", "_gone", "_wake", "_received", "_closed")

    def __init__(self, received: Callable[[Connection, bytes], None],
                 closed: Callable[[Connection], None]) -> None:
        self._ep = select.epoll()
        #: fd -> the open connection read through it
        self._conns: dict[int, Connection] = {}
        #: released, waiting for the reaper
        self._gone: list[Connection] = []
        self._wake = trio.Event()
        self._received = received
        self._closed = closed

    def __len__(self) -> int:
        return len(self._conns)

    def adopt(self, conn: Connection, first: bytes) -> None:
        """Read ``conn`` from now on (its handshake is done), starting with ``first``,
        the bytes that came with the handshake."""
        fd = conn.sock.fileno()
        self._conns[fd] = conn
        self._ep.register(fd, select.EPOLLIN)
        if first:
            self._feed(conn, first)

    def release(self, conn: Connection) -> None:
        """Stop reading ``conn``; the reaper reports it closed and closes its socket.

        Idempotent: a connection that is no longer read is left alone.
        """
        fd = conn.sock.fileno()
        if fd == -1 or self._conns.get(fd) is not conn:
            return
        del self._conns[fd]
        self._ep.unregister(fd)
        self._gone.append(conn)
        if len(self._gone) == 1:
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and reap until cancelled; then every connection left is closed."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reap)
                task_status.started()
                await self._read()
        finally:
            for conn in self._conns.values():
                self._gone.append(conn)
            self._conns.clear()
            self._end(self._gone)
            self._ep.close()

    async def _read(self) -> None:
        ep = self._ep
        conns = self._conns
        received = self._received
        current_time = trio.current_time
        while True:
            ready = ep.poll(0, MAX_EVENTS)
            if not ready:
                await trio.lowlevel.wait_readable(ep)
                continue
            now = current_time()
            for fd, _ in ready:
                conn = conns.get(fd)
                if conn is None:  # released earlier in this pass
                    continue
                try:
                    data = conn.sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.release(conn)
                    continue
                # a bare pong at a frame boundary (the parser holds no partial frame;
                # FrameParser has no public accessor for that: mc/websocket is not ours)
                if len(data) == PONG_SIZE and data.startswith(PONG_HEAD) and conn.parser.at_boundary:
                    conn.last_seen = now
                    continue
                try:
                    received(conn, data)
                except Exception:
                    self._failed(conn)
            await trio.lowlevel.checkpoint()

    def _feed(self, conn: Connection, data: bytes) -> None:
        try:
            self._received(conn, data)
        except Exception:
            self._failed(conn)

    def _failed(self, conn: Connection) -> None:
        log.exception("connection failed")
        self.release(conn)

    async def _reap(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            gone, self._gone = self._gone, []
            self._end(gone)

    def _end(self, gone: list[Connection]) -> None:
        for conn in gone:
            try:
                self._closed(conn)
            except Exception:
                log.exception("closing a connection failed")
            sock = conn.sock
            trio.lowlevel.notify_closing(sock)  # wakes a drain task waiting for writability
            sock.close()
