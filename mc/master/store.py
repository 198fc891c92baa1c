"""The seam behind the master's registry: an async ``Store`` and its in-memory default.

The master's shell (state.py, control.py, api.py, entry.py) talks only to a
:class:`Store`. Two implementations:

* :class:`MemoryStore` wraps the pure, synchronous :class:`~.registry.Registry`
  (one master; the default). Its methods never suspend, so they stay atomic
  exactly as the registry's are.
* :class:`~.redis_store.RedisStore` keeps the same data in Redis, so several
  masters can share it (``--store redis://HOST:PORT/DB``); every method is
  one Lua script, atomic across masters.

The semantics are the registry's, method for method (its docstrings are the
reference); the hypothesis state machine in tests/unit/test_registry.py
checks both stores against one model. Each store has its own clock
(:meth:`Store.now`): the registry takes a monotonic one, a shared store the
wall clock, which every master agrees on.

Beyond the registry, a store offers what several masters need: the batch
fast path :meth:`Store.locate` (a control frame's claims and lookups in one
round trip), the version hint and change callback that wake long-polls, and
messages between masters (:meth:`Store.publish`), which :mod:`.routing` uses
to reach workers linked to another master. A memory store is never shared:
every worker is linked here.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs
import trio

from mc.counts import summed
from mc.protocol.control import Metrics

from .registry import (
    Kick,
    Registry,
    RegistryError,
    SessionInfo,
    Totals,
    UnknownWorker,
    WorkerInfo,
)

__all__ = ["Located", "MemoryStore", "Store", "StoreUnavailable"]


class StoreUnavailable(RegistryError):
    """The shared store cannot be reached (Redis down): the request gets 503 or is retried."""


@attrs.frozen
class Located:
    """The answer to one claim or lookup of :meth:`Store.locate`.

    ``owner`` is None when nobody (live) owns the session, or when a claim's
    worker is unknown or lapsed. ``seq`` is the last seq handed over with a
    moved session (0: none).
    """

    owner: str | None
    url: str | None
    seq: int = 0


NOBODY = Located(None, None, 0)


def totals_of(live: Sequence[WorkerInfo]) -> Totals:
    """Cluster totals of live workers (as Registry.totals)."""
    ms = [w.metrics for w in live]
    return Totals(
        workers=len(live),
        draining=sum(w.state != "up" for w in live),
        metrics=Metrics(**{
            f.name: sum(getattr(m, f.name) for m in ms) for f in attrs.fields(Metrics) if f.name != "counters"
        }, counters=summed(m.counters for m in ms)),
    )


class Store(abc.ABC):
    """What the master's shell needs of its registry, async; see registry.py for the semantics."""

    lease: float
    #: True when other masters share this store (workers may be linked elsewhere)
    shared: bool = False
    #: this master's id among those sharing the store
    master_id: str = "local"

    def __init__(self) -> None:
        #: called (without arguments) whenever the version may have moved, here or on another master
        self.on_change: Callable[[], None] = lambda: None
        #: called with each message another master published to this one
        self.on_message: Callable[[bytes], None] = lambda data: None

    @abc.abstractmethod
    def now(self) -> float:
        """The store's clock: what ``now`` the shell passes in."""

    @property
    @abc.abstractmethod
    def version_hint(self) -> int:
        """The latest version this master knows of, without a round trip (for long-polls)."""

    @abc.abstractmethod
    async def version(self) -> int: ...

    # workers
    @abc.abstractmethod
    async def register(self, worker_id: str, url: str, *, capacity: int, now: float) -> WorkerInfo: ...
    @abc.abstractmethod
    async def heartbeat(self, worker_id: str, metrics: Metrics, *, now: float) -> bool: ...
    @abc.abstractmethod
    async def expire(self, now: float) -> list[str]: ...
    @abc.abstractmethod
    async def remove(self, worker_id: str) -> bool: ...
    @abc.abstractmethod
    async def set_draining(self, worker_id: str) -> bool: ...
    @abc.abstractmethod
    async def set_drained(self, worker_id: str) -> bool: ...
    @abc.abstractmethod
    async def set_up(self, worker_id: str) -> bool: ...
    @abc.abstractmethod
    async def workers(self, now: float) -> list[WorkerInfo]: ...
    @abc.abstractmethod
    async def worker(self, worker_id: str) -> WorkerInfo | None: ...

    async def totals(self, now: float) -> Totals:
        return totals_of(await self.workers(now))

    # sessions
    @abc.abstractmethod
    async def claim_session(self, session: str, worker_id: str, *, now: float) -> str: ...
    @abc.abstractmethod
    async def lookup_session(self, session: str) -> SessionInfo | None: ...
    @abc.abstractmethod
    async def sessions(self, limit: int) -> tuple[int, list[SessionInfo]]:
        """How many sessions are owned, and at most ``limit`` of them."""
    @abc.abstractmethod
    async def release_session(self, session: str, worker_id: str) -> bool: ...
    @abc.abstractmethod
    async def report_members(self, session: str, worker_id: str, members: int) -> bool: ...
    @abc.abstractmethod
    async def move_session(self, session: str, worker_id: str, seq: int) -> bool: ...
    @abc.abstractmethod
    async def announce_sessions(self, worker_id: str, sessions: Mapping[str, int], *,
                                now: float) -> list[str]: ...

    @abc.abstractmethod
    async def locate(self, requests: Sequence[tuple[str, str | None]], *, now: float) -> list[Located]:
        """Claims ``(session, worker)`` and lookups ``(session, None)``, in order, atomically each.

        A lookup names only a live owner (a lapsed owner's sessions are
        already gone for it, purge or not).
        """

    # presence
    @abc.abstractmethod
    async def presence_delta(self, worker_id: str, added: Iterable[tuple[str, str]],
                             removed: Iterable[tuple[str, str]]) -> list[Kick]: ...
    @abc.abstractmethod
    async def presence_replace(self, worker_id: str, entries: Iterable[tuple[str, str]]) -> list[Kick]: ...
    @abc.abstractmethod
    async def client_connections(self, client: str) -> list[tuple[str, str]]: ...
    @abc.abstractmethod
    async def workers_for(self, client: str, device: str | None = None) -> set[str]: ...

    # dedup
    @abc.abstractmethod
    async def seen_notify_id(self, notify_id: str, *, now: float) -> bool: ...

    # fast failure (a dead control link)
    async def lapse(self, worker_id: str, at: float) -> bool:
        """End ``worker_id``'s lease at ``at`` (store clock) unless it is heard from again;
        False if unknown. Only the master the worker is linked to may do it (with several
        masters, a link that dropped here may already have been replaced by one elsewhere)."""
        return False

    # between masters
    async def masters_of(self, worker_ids: Iterable[str]) -> dict[str, str]:
        """The master each worker is linked to (workers unknown to the store are left out)."""
        return {}

    async def publish(self, master_id: str, data: bytes) -> None:
        """Send ``data`` to another master's :attr:`on_message`."""
        raise NotImplementedError("a store no other master shares")

    async def tell_worker(self, worker_id: str, data: bytes) -> bool:
        """Send ``data`` to the master ``worker_id`` is linked to; False if it has none."""
        return False


class MemoryStore(Store):
    """The embedded store: the pure :class:`Registry` in this process, behind the async seam."""

    def __init__(self, registry: Registry, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.registry = registry
        self.lease = registry.lease
        self._clock = clock or _trio_clock

    def now(self) -> float:
        return self._clock()

    @property
    def version_hint(self) -> int:
        return self.registry.version

    async def version(self) -> int:
        return self.registry.version

    async def register(self, worker_id: str, url: str, *, capacity: int, now: float) -> WorkerInfo:
        return self.registry.register(worker_id, url, capacity=capacity, now=now)

    async def heartbeat(self, worker_id: str, metrics: Metrics, *, now: float) -> bool:
        return self.registry.heartbeat(worker_id, metrics, now=now)

    async def expire(self, now: float) -> list[str]:
        return self.registry.expire(now)

    async def remove(self, worker_id: str) -> bool:
        return self.registry.remove(worker_id)

    async def set_draining(self, worker_id: str) -> bool:
        return self.registry.set_draining(worker_id)

    async def set_drained(self, worker_id: str) -> bool:
        return self.registry.set_drained(worker_id)

    async def set_up(self, worker_id: str) -> bool:
        return self.registry.set_up(worker_id)

    async def workers(self, now: float) -> list[WorkerInfo]:
        return self.registry.workers(now)

    async def worker(self, worker_id: str) -> WorkerInfo | None:
        return self.registry.worker(worker_id)

    async def totals(self, now: float) -> Totals:
        return self.registry.totals(now)

    async def claim_session(self, session: str, worker_id: str, *, now: float) -> str:
        return self.registry.claim_session(session, worker_id, now=now)

    async def lookup_session(self, session: str) -> SessionInfo | None:
        return self.registry.lookup_session(session)

    async def sessions(self, limit: int) -> tuple[int, list[SessionInfo]]:
        return self.registry.sessions(limit)

    async def release_session(self, session: str, worker_id: str) -> bool:
        return self.registry.release_session(session, worker_id)

    async def report_members(self, session: str, worker_id: str, members: int) -> bool:
        return self.registry.report_members(session, worker_id, members)

    async def move_session(self, session: str, worker_id: str, seq: int) -> bool:
        return self.registry.move_session(session, worker_id, seq)

    async def announce_sessions(self, worker_id: str, sessions: Mapping[str, int], *,
                                now: float) -> list[str]:
        return self.registry.announce_sessions(worker_id, sessions, now=now)

    async def locate(self, requests: Sequence[tuple[str, str | None]], *, now: float) -> list[Located]:
        reg = self.registry
        if any(worker is None for _, worker in requests) and reg.expire(now):  # lookups: live owners
            self.on_change()  # the purge moved the version: wake long-polls now, not at the next tick
        out = []
        for session, worker in requests:
            if worker is not None:
                try:
                    owner: str | None = reg.claim_session(session, worker, now=now)
                except UnknownWorker:
                    owner = None
            else:
                found = reg.lookup_session(session)
                owner = None if found is None else found.worker_id
            if owner is None:
                out.append(NOBODY)
                continue
            info = reg.worker(owner)
            found = reg.lookup_session(session)
            seq = found.seq if found is not None and found.worker_id == owner else 0
            out.append(Located(owner, None if info is None else info.url, seq))
        return out

    async def presence_delta(self, worker_id: str, added: Iterable[tuple[str, str]],
                             removed: Iterable[tuple[str, str]]) -> list[Kick]:
        return self.registry.presence_delta(worker_id, added, removed)

    async def presence_replace(self, worker_id: str, entries: Iterable[tuple[str, str]]) -> list[Kick]:
        return self.registry.presence_replace(worker_id, entries)

    async def client_connections(self, client: str) -> list[tuple[str, str]]:
        return self.registry.client_connections(client)

    async def workers_for(self, client: str, device: str | None = None) -> set[str]:
        return self.registry.workers_for(client, device)

    async def seen_notify_id(self, notify_id: str, *, now: float) -> bool:
        return self.registry.seen_notify_id(notify_id, now=now)

    async def lapse(self, worker_id: str, at: float) -> bool:
        return self.registry.lapse(worker_id, at)


def _trio_clock() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # outside trio (tools, tests)
        return time.monotonic()
