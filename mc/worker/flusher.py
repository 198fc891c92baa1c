"""The core's Sink over sockets: coalesced writes, every dirty connection once per pass.

The core queues frames (``write``); a connection marks itself dirty and one
task per worker wakes in the next scheduler pass and writes each dirty
connection's frames with a single non-blocking ``send``. Everything queued by
all the tasks that ran in between (many publishes, many recipients) goes out
in one syscall per connection. Only a connection whose socket buffer is full
gets a task of its own, which waits for writability and exits once drained.

A publish to many connections is one ``write_many`` call with the route's
list (the very same list object publish after publish, until the route
changes). The flusher keeps it as the pending *run* and appends further
frames for the same list to the run alone: nothing per recipient per
message. The run is settled (its frames appended to every member's queue,
one C-level ``extend`` each) at the pass, before anything else is queued for
one of its members (order per connection), or when it reaches ``RUN_FRAMES``.
In the pass, connections whose queues hold the same frames (every
subscriber of a topic) share one joined ``bytes``.

A reader whose frames made only a handful of connections dirty (a chat
message, an ack) writes them itself at the end of its recv (``flush_now``),
saving a scheduler pass of latency; a fan-out still waits for the pass,
where it coalesces.

Limits: at most ``max_frames`` frames and ``max_bytes`` bytes wait for one
connection (a run takes only frames that fit every member's queue, so the
frame that overflows is the one that would have written alone). Past that
the queue is dropped (never the tail of a frame already
partly sent: that would corrupt the stream) and the core is told
(``on_overflow``), which closes the connection with 4029.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter

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
#: a pending run settles once it holds this many frames, bounding how far past its
#: queue limit a member can go before it is closed (and the run's own memory)
RUN_FRAMES = 256


def _no_link(message: ControlMessage) -> bool:
    return False


class Flusher:
    __slots__ = (
        "max_frames", "max_bytes", "release", "on_overflow", "control", "nursery", "_dirty", "_wake",
        "_run", "_run_frames", "_run_set", "_room_frames", "_room_bytes",
    )

    def __init__(self, *, max_frames: int, max_bytes: int, release: Callable[[Connection], None]) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        #: stop reading a connection and close it (the reactor's ``release``)
        self.release = release
        #: the core's ``overflowed`` (set once the core exists)
        self.on_overflow: Callable[[Connection, float], None] = lambda conn, now: None
        #: the control link's ``send`` (standalone: there is none)
        self.control: Callable[[ControlMessage], bool] = _no_link
        self.nursery: trio.Nursery | None = None
        self._dirty: list[Connection] = []
        self._wake = trio.Event()
        #: the pending run: its connections (the caller's list, never mutated), its frames,
        #: and its members as a set (built when a single write needs to know)
        self._run: Sequence[Connection] | None = None
        self._run_frames: list[bytes] = []
        self._run_set: set[Connection] | None = None
        #: what the pending run may still take (see ``_room``)
        self._room_frames = 0
        self._room_bytes = 0

    # ------------------------------------------------------------ the Sink

    def write(self, conn: Connection, frame: bytes) -> None:
        """Queue one complete WebSocket frame; overflow is reported to the core."""
        if conn.state is not OPEN:
            return
        if self._run is not None and self._in_run(conn):
            self._settle()
        size = conn.out_bytes + len(frame)
        if conn.queued >= self.max_frames or size > self.max_bytes:
            self._overflow(conn)
            return
        conn.out.append(frame)
        conn.queued += 1
        conn.out_bytes = size
        if not conn.dirty:  # _mark, inlined: it runs on nearly every relayed read
            conn.dirty = True
            dirty = self._dirty
            dirty.append(conn)
            if len(dirty) == 1:
                self._wake.set()

    def write_many(self, conns: Sequence[Connection], frame: bytes) -> None:
        """Queue ``frame`` for every connection in ``conns`` (kept, never mutated: see above).

        A run takes only frames that fit every member's queue (``_room``), so
        a member overflows at exactly the frame that crosses its limit, as if
        each frame had been written to it alone.
        """
        size = len(frame)
        if conns is self._run:
            frames = self._run_frames
            if len(frames) < self._room_frames and size <= self._room_bytes:
                frames.append(frame)
                self._room_bytes -= size
                return
        if self._run is not None:
            self._settle()
        elif not self._dirty:
            self._wake.set()
        self._run = conns
        self._run_frames = [frame]
        self._room(conns)
        if self._room_frames < 1 or size > self._room_bytes:
            self._settle()  # the frame that crosses a member's limit: it overflows now
        else:
            self._room_bytes -= size

    def _room(self, conns: Sequence[Connection]) -> None:
        """How many frames and bytes a run for ``conns`` may take without any member overflowing."""
        if conns:
            self._room_frames = min(RUN_FRAMES, self.max_frames - max(map(_queued, conns)))
            self._room_bytes = self.max_bytes - max(map(_out_bytes, conns))
        else:
            self._room_frames, self._room_bytes = RUN_FRAMES, self.max_bytes

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Queue the close frame after whatever is queued."""
        if self._run is not None and self._in_run(conn):
            self._settle()
        if code != 1000:
            closing(conn, code, reason)
        conn.out.append(encode_close(code, reason[:120]))
        conn.queued += 1
        if not conn.dirty:
            conn.dirty = True
            self._mark(conn)

    def drop(self, conn: Connection) -> None:
        """The reactor stops reading ``conn``; it flushes and closes it in its next pass."""
        self.release(conn)

    def send_control(self, message: ControlMessage) -> bool:
        return self.control(message)

    # ------------------------------------------------------------ writing

    def _in_run(self, conn: Connection) -> bool:
        members = self._run_set
        if members is None:
            members = self._run_set = set(self._run or ())
        return conn in members

    def _settle(self) -> None:
        """Queue the pending run's frames on each of its open members (limits checked once each)."""
        conns = self._run
        if conns is None:
            return
        frames = self._run_frames
        self._run = None
        self._run_set = None
        self._run_frames = []
        n = len(frames)
        size = sum(map(len, frames))
        max_frames = self.max_frames - n
        max_bytes = self.max_bytes - size
        dirty = self._dirty
        if not dirty:
            self._wake.set()
        for conn in conns:
            if conn.state is not OPEN:
                continue
            if conn.queued > max_frames or conn.out_bytes > max_bytes:
                self._overflow(conn)
                continue
            conn.out += frames
            conn.queued += n
            conn.out_bytes += size
            if not conn.dirty:
                conn.dirty = True
                dirty.append(conn)

    def _overflow(self, conn: Connection) -> None:
        """Drop the queue (not the tail of a frame already partly sent) and tell the core."""
        if conn.partial:
            del conn.out[1:]
            conn.queued = 1
            conn.out_bytes = len(conn.out[0])
        else:
            conn.out.clear()
            conn.queued = 0
            conn.out_bytes = 0
        self.on_overflow(conn, trio.current_time())

    def _mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if len(self._dirty) == 1:
            self._wake.set()

    def pending_few(self) -> bool:
        """A handful of connections (1..IMMEDIATE) wait to be written."""
        run = self._run
        return 0 < len(self._dirty) + (0 if run is None else len(run)) <= IMMEDIATE

    def flush_now(self) -> None:
        """Write the dirty connections now, from the task that queued their frames."""
        if self._run is not None:
            self._settle()
        self._flush_all()

    def _flush_all(self) -> None:
        """Write every dirty connection; identical queues share one joined ``bytes``."""
        dirty, self._dirty = self._dirty, []
        last: list[bytes] = []
        joined = b""
        for conn in dirty:
            conn.dirty = False
            out = conn.out
            if conn.blocked or not out:
                continue
            if len(out) == 1:  # nothing to join (nor to share: that saves a join)
                self._send_some(conn, out[0])
            else:
                if out != last:  # a pointer comparison per frame, ~free next to a join
                    last = out.copy()
                    joined = b"".join(out)
                self._send_some(conn, joined)
            # _backlog inlined: after nearly every send the queue is empty and the socket plain
            sock = conn.sock
            if (conn.out or (type(sock) is TLSStream and sock.backlog)) and self.nursery is not None:
                conn.blocked = True
                self.nursery.start_soon(self._drain, conn)

    def final_flush(self, conn: Connection) -> None:
        """Best-effort last write (e.g. the close frame) before the socket closes."""
        if (conn.out or _backlog(conn)) and not conn.blocked:
            self._send_some(conn)

    @staticmethod
    def _send_some(conn: Connection, data: bytes | None = None) -> None:
        """One non-blocking ``send`` of the queue (``data``: it joined, if the caller has it)."""
        out = conn.out
        if data is None:
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
                self._settle()
                self._flush_all()


_queued = attrgetter("queued")
_out_bytes = attrgetter("out_bytes")


def _backlog(conn: Connection) -> bool:
    """TLS ciphertext the kernel has not taken yet (a plain socket has none): still output."""
    sock = conn.sock
    return type(sock) is TLSStream and bool(sock.backlog)


def _lost(conn: Connection) -> None:
    """The socket failed: nothing more can be written. Its error or EOF is
    reported to the reactor by epoll (EPOLLERR/EPOLLHUP are level-triggered),
    which reports the connection closed to the core and closes the socket."""
    conn.out.clear()
    conn.queued = 0
    conn.out_bytes = 0
    conn.partial = False
