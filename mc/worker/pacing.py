"""Closing many connections at a bounded rate (drain and rebalance, PROTOCOL.md "Operations").

Pure: the core queues connections and asks, on each tick, which ones to
close now. Closing 19,990 connections at once would send them all to the
master and the other workers in the same second; at ``rate`` per second
the cluster absorbs them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from .peer import Peer
from .states import OPEN

#: seconds between paced steps (a step closes rate x the time since the last one)
STEP = 0.02


class Pacer:
    __slots__ = ("rate", "_queue", "_last")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._queue: deque[tuple[Peer, str]] = deque()
        self._last = 0.0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, conns: Iterable[Peer], reason: str, now: float, *, first: bool = False) -> None:
        """Queue connections to close; ``first`` puts them ahead of those already queued."""
        if not self._queue:
            self._last = now - STEP  # the first step closes at once
        items = [(c, reason) for c in conns]
        if first:
            self._queue.extendleft(reversed(items))
        else:
            self._queue.extend(items)

    def clear(self) -> None:
        self._queue.clear()

    def next_step(self) -> float | None:
        return self._last + STEP if self._queue else None

    def due(self, now: float) -> list[tuple[Peer, str]]:
        """The connections to close now: rate x elapsed (at most one second's worth)."""
        if not self._queue or now < self._last + STEP:
            return []
        budget = max(1, int(self.rate * min(1.0, now - self._last)))
        self._last = now
        out: list[tuple[Peer, str]] = []
        queue = self._queue
        while queue and len(out) < budget:
            conn, reason = queue.popleft()
            if conn.state is OPEN:  # closed meanwhile: costs no budget
                out.append((conn, reason))
        return out
