"""Coalesced writes: every connection with pending frames is written once per pass.

Connections mark themselves dirty when a frame is queued; one task per worker
wakes in the next scheduler pass and writes each dirty connection's frames
with a single non-blocking ``send``. Everything queued by all the tasks that
ran in between (many publishes, many recipients) goes out in one syscall per
connection. Only a connection whose socket buffer is full gets a task of its
own, which waits for writability and exits once drained.

Two refinements: a reader whose frames made only a handful of connections
dirty (a chat message, an ack) writes them itself at the end of its recv
(``flush_now``), saving a scheduler pass of latency; many dirty connections
(a fan-out) still wait for the pass, where they coalesce. And the run loop
also keeps the close deadlines (``expire_at``), so a connection needs no
cancel scope of its own (memory).
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from .connection import Connection


#: at most this many dirty connections are written by the reader that made them
#: dirty, at the end of its recv (a chat reply, an ack); more wait for the pass
IMMEDIATE = 4


class Flusher:
    __slots__ = ("max_frames", "max_bytes", "nursery", "_dirty", "_wake", "_deadlines", "_order")

    def __init__(self, *, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.nursery: trio.Nursery | None = None
        self._dirty: list[Connection] = []
        self._wake = trio.Event()
        # (when, tie-breaker, connection): closes waiting for the client's reply
        self._deadlines: list[tuple[float, int, Connection]] = []
        self._order = itertools.count()

    def expire_at(self, conn: "Connection", when: float) -> None:
        """Stop reading ``conn`` at ``when`` (trio time) unless it is done by then."""
        heapq.heappush(self._deadlines, (when, next(self._order), conn))
        if self._deadlines[0][2] is conn:
            self._wake.set()  # the earliest deadline changed: re-arm the run loop's timer

    def _expire(self) -> None:
        deadlines = self._deadlines
        now = trio.current_time()
        while deadlines and deadlines[0][0] <= now:
            heapq.heappop(deadlines)[2]._stop_reading()

    def pending_few(self) -> bool:
        """A handful of connections (1..IMMEDIATE) wait to be written."""
        return 0 < len(self._dirty) <= IMMEDIATE

    def flush_now(self) -> None:
        """Write the dirty connections now, from the task that queued their frames."""
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    def mark(self, conn: "Connection") -> None:
        """Schedule ``conn`` for the next pass (the caller dedups via conn.dirty)."""
        self._dirty.append(conn)
        if len(self._dirty) == 1:
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write dirty connections until cancelled; blocked ones drain in ``nursery``."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            while True:
                if self._deadlines:
                    with trio.move_on_at(self._deadlines[0][0]):
                        await self._wake.wait()
                    self._expire()
                else:
                    await self._wake.wait()
                self._wake = trio.Event()
                dirty, self._dirty = self._dirty, []
                for conn in dirty:
                    conn.flush()
