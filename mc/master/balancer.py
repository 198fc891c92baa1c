"""Which worker a new app should use (``GET /v1/assign`` and the master's ``307``).

Sans-IO and O(number of workers) per call: it runs on every app connect.

A worker's *load* is the connections it reported in its latest heartbeat plus
the apps this balancer sent to it since that heartbeat. Without the second
term, every assignment inside one heartbeat interval would see the same
figures and go to the same worker; with it, a burst spreads as if each
assignment had already connected. The count restarts when a fresh report
arrives, which is recognised by a change of :attr:`WorkerInfo.last_seen`
(every heartbeat sets it). Apps assigned but not yet connected when the report
was taken are briefly undercounted; the next report corrects that.
"""

from __future__ import annotations

from collections.abc import Sequence

from .registry import UP, WorkerInfo


class Balancer:
    """Chooses the least loaded live worker for each new app.

    Least loaded means the lowest ``load / capacity`` among workers in state
    ``up`` whose load is below their capacity; ties go to the lower absolute
    load (the smaller worker fills last), then to the lower id, so the choice
    is deterministic. Memory: one entry per worker it has assigned to, pruned
    to the workers it is shown.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        # worker id -> (the last_seen the count belongs to, apps assigned since)
        self._pending: dict[str, tuple[float, int]] = {}

    def load(self, worker: WorkerInfo) -> int:
        """Connections the worker has or is about to get: its report plus assignments since."""
        stamp, count = self._pending.get(worker.id, (None, 0))
        if stamp != worker.last_seen:
            count = 0
        return worker.metrics.connections + count

    def assign(self, workers: Sequence[WorkerInfo]) -> WorkerInfo | None:
        """Choose a worker for one new app and count the assignment; None if none can take it.

        ``workers`` is the full list of live workers, as
        ``Registry.workers(now)`` returns it (draining ones are skipped here).
        """
        best: WorkerInfo | None = None
        best_key: tuple[float, int, str] | None = None
        for worker in workers:
            if worker.state != UP:
                continue
            load = self.load(worker)
            if load >= worker.capacity:
                continue
            key = (load / worker.capacity, load, worker.id)
            if best_key is None or key < best_key:
                best, best_key = worker, key
        if best is None:
            return None
        stamp, count = self._pending.get(best.id, (None, 0))
        count = count + 1 if stamp == best.last_seen else 1
        self._pending[best.id] = (best.last_seen, count)
        if len(self._pending) > len(workers):
            self._prune(workers)
        return best

    def _prune(self, workers: Sequence[WorkerInfo]) -> None:
        """Drop the counts of workers no longer shown (gone, expired)."""
        ids = {w.id for w in workers}
        self._pending = {wid: p for wid, p in self._pending.items() if wid in ids}
