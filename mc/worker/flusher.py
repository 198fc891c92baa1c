"""The core's Sink over sockets: coalesced writes, every dirty connection once per pass.

The core queues frames (``write``); a connection marks itself dirty and one
task per worker wakes in the next scheduler pass and writes each dirty
connection's frames with a single non-blocking ``send``. Everything queued by
all the tasks that ran in between (many publishes, many recipients) goes out
in one syscall per connection. Only a connection whose socket buffer is full
gets a task of its own, which waits for writability and exits once drained.

A reader whose frames made only a handful of connections dirty (a chat
message, an ack) writes them itself at the end of its recv (``flush_now``),
saving a scheduler pass of latency; a fan-out still waits for the pass,
where it coalesces.

Limits: at most ``max_frames`` frames and ``max_bytes`` bytes wait for one
connection. Past that the queue is dropped (never the tail of a frame already
partly sent: that would corrupt the stream) and the core is told
(``on_overflow``), which closes the connection with 4029.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from mc.protocol.control import ControlMessage
from mc.websocket import encode_close

from .connection import Connection
from .events import closing
from .states import OPEN
from .tls import TLSStream

#: at most this many dirty connections are written by the reader that made them
#: dirty, at the end of its recv (a chat reply, an ack); more wait for the pass
IMMEDIATE = 4


def _no_link(message: ControlMessage) -> bool:
    return False


class Flusher:
    __slots__ = ("max_frames", "max_bytes", "on_overflow", "control", "nursery", "_dirty", "_wake")

    def __init__(self, *, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        #: the core's ``overflowed`` (set once the core exists)
        self.on_overflow: Callable[[Connection, float], None] = lambda conn, now: None
        #: the control link's ``send`` (standalone: there is none)
        self.control: Callable[[ControlMessage], bool] = _no_link
        self.nursery: trio.Nursery | None = None
        self._dirty: list[Connection] = []
        self._wake = trio.Event()

    # ------------------------------------------------------------ the Sink

    def write(self, conn: Connection, frame: bytes) -> None:
        """Queue one complete WebSocket frame; overflow is reported to the core."""
        if conn.state is not OPEN:
            return
        size = conn.out_bytes + len(frame)
        if conn.queued >= self.max_frames or size > self.max_bytes:
            if conn.partial:
                del conn.out[1:]
                conn.queued = 1
                conn.out_bytes = len(conn.out[0])
            else:
                conn.out.clear()
                conn.queued = 0
                conn.out_bytes = 0
            self.on_overflow(conn, trio.current_time())
            return
        conn.out.append(frame)
        conn.queued += 1
        conn.out_bytes = size
        if not conn.dirty:
            conn.dirty = True
            self._mark(conn)

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Queue the close frame after whatever is queued."""
        if code != 1000:
            closing(conn, code, reason)
        conn.out.append(encode_close(code, reason[:120]))
        conn.queued += 1
        if not conn.dirty:
            conn.dirty = True
            self._mark(conn)

    def drop(self, conn: Connection) -> None:
        """Wake the reader (parked in ``wait_readable``) so it sees the state and exits.

        No cancel scope per connection (memory): notify_closing wakes it with
        ClosedResourceError.
        """
        if conn.sock.fileno() != -1:
            trio.lowlevel.notify_closing(conn.sock)

    def send_control(self, message: ControlMessage) -> bool:
        return self.control(message)

    # ------------------------------------------------------------ writing

    def _mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if len(self._dirty) == 1:
            self._wake.set()

    def pending_few(self) -> bool:
        """A handful of connections (1..IMMEDIATE) wait to be written."""
        return 0 < len(self._dirty) <= IMMEDIATE

    def flush_now(self) -> None:
        """Write the dirty connections now, from the task that queued their frames."""
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        conn.dirty = False
        if conn.blocked or not conn.out:
            return
        self._send_some(conn)
        if (conn.out or _backlog(conn)) and self.nursery is not None:
            conn.blocked = True
            self.nursery.start_soon(self._drain, conn)

    def final_flush(self, conn: Connection) -> None:
        """Best-effort last write (e.g. the close frame) before the socket closes."""
        if (conn.out or _backlog(conn)) and not conn.blocked:
            self._send_some(conn)

    @staticmethod
    def _send_some(conn: Connection) -> None:
        out = conn.out
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            return
        except OSError:
            _lost(conn)
            return
        if sent == len(data):
            out.clear()
            conn.queued = 0
            conn.out_bytes = 0
            conn.partial = False
            return
        conn.out_bytes -= sent
        i = 0
        while sent >= len(out[i]):
            sent -= len(out[i])
            i += 1
        del out[:i]
        if sent:
            out[0] = out[0][sent:]
            conn.partial = True
        elif i:
            conn.partial = False
        conn.queued = len(out)

    async def _drain(self, conn: Connection) -> None:
        try:
            while conn.out or _backlog(conn):
                await trio.lowlevel.wait_writable(conn.sock)
                self._send_some(conn)
        except (trio.ClosedResourceError, OSError):
            _lost(conn)
        finally:
            conn.blocked = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write dirty connections until cancelled; blocked ones drain in ``nursery``."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                dirty, self._dirty = self._dirty, []
                for conn in dirty:
                    self._flush(conn)


def _backlog(conn: Connection) -> bool:
    """TLS ciphertext the kernel has not taken yet (a plain socket has none): still output."""
    sock = conn.sock
    return type(sock) is TLSStream and bool(sock.backlog)


def _lost(conn: Connection) -> None:
    """The socket failed: nothing more can be written; wake the reader, which
    sees the error or EOF and reports the connection closed to the core."""
    conn.out.clear()
    conn.queued = 0
    conn.out_bytes = 0
    conn.partial = False
    if conn.sock.fileno() != -1:
        trio.lowlevel.notify_closing(conn.sock)
