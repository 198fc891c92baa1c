"""A bounded ring of per-second cluster and per-worker figures (``GET /v1/stats/history``).

The master samples its registry once a second (mc.master.app); the ring keeps
the last ``capacity`` (900: 15 minutes) samples, so memory is bounded whatever
the uptime. Pure: the caller gives the time and the figures.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import attrs

from mc.protocol.control import Metrics

CAPACITY = 900


@attrs.frozen
class Figures:
    connections: int
    msgs_in_per_s: float
    msgs_out_per_s: float
    sessions: int

    @classmethod
    def of(cls, m: Metrics) -> Figures:
        return cls(m.connections, round(m.msgs_in_rate, 3), round(m.msgs_out_rate, 3), m.sessions)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Sample:
    ts: int  # ms since the epoch
    totals: Figures
    workers: tuple[tuple[str, Figures], ...]

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, **self.totals.to_json(),
                "workers": {wid: f.to_json() for wid, f in self.workers}}


class History:
    """The last ``capacity`` samples, oldest first."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ring: deque[Sample] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, ts_ms: int, totals: Metrics, workers: Iterable[tuple[str, Metrics]]) -> Sample:
        sample = Sample(ts_ms, Figures.of(totals), tuple((wid, Figures.of(m)) for wid, m in workers))
        self._ring.append(sample)
        return sample

    def last(self, seconds: int) -> list[Sample]:
        """The samples of the last ``seconds`` seconds (one a second), oldest first."""
        if seconds <= 0:
            return []
        n = min(seconds, len(self._ring))
        return list(self._ring)[len(self._ring) - n:]

    @property
    def latest(self) -> Sample | None:
        return self._ring[-1] if self._ring else None


def parse_seconds(raw: str | None, capacity: int = CAPACITY) -> int | None:
    """``?seconds=N``: 1..capacity, default capacity; None when bad."""
    if raw is None:
        return capacity
    if not raw.isdigit() or len(raw) > 6:
        return None
    n = int(raw)
    return n if 1 <= n <= capacity else None
