"""Coalesced writes: every connection with pending frames is written once per pass.

Connections mark themselves dirty when a frame is queued; one task per worker
wakes in the next scheduler pass and writes each dirty connection's frames
with a single non-blocking ``send``. Everything queued by all the tasks that
ran in between (many publishes, many recipients) goes out in one syscall per
connection. Only a connection whose socket buffer is full gets a task of its
own, which waits for writability and exits once drained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from .connection import Connection


class Flusher:
    __slots__ = ("max_frames", "max_bytes", "nursery", "_dirty", "_wake")

    def __init__(self, *, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.nursery: trio.Nursery | None = None
        self._dirty: list[Connection] = []
        self._wake = trio.Event()

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
                await self._wake.wait()
                self._wake = trio.Event()
                dirty, self._dirty = self._dirty, []
                for conn in dirty:
                    conn.flush()
