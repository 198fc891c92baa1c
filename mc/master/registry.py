"""The master's registry: workers and their leases, chat sessions, presence, notify ids.

Sans-IO: no trio, no sockets and no clock of its own. Every method that needs
the time takes ``now`` (seconds from a monotonic clock, never decreasing), so
the master's shell decides when time passes and the tests control it exactly.
Single-threaded by design: every method runs to completion without yielding,
which is what makes session claims atomic. This in-memory store is the
embedded default; a shared store (etcd) is meant to offer the same methods, so
nothing here exposes how the data is kept: answers are frozen snapshots or
fresh collections.

Liveness (PROTOCOL.md, "Liveness"). A worker is *live* while
``now - last_seen <= lease``: it stays live exactly at the boundary and is dead
the instant after. A dead worker is *purged* (removed with all its chat
sessions and presence entries) by :meth:`Registry.expire`, which the master
calls on a short tick (a tenth of the lease is plenty), or by
:meth:`Registry.remove` when it leaves in order. Methods that take ``now``
judge liveness themselves, so a lapsed worker cannot heartbeat, claim or be
named by :meth:`Registry.workers` even before the next tick. Methods without
``now`` (lookups, presence updates, draining) see the registry as of the last
purge: a lapsed worker remains a *member* until then.

Bounds. Workers are capped by ``max_workers``. Chat sessions and presence
entries belong to one member each and vanish with it, so they are bounded by
what live workers hold (a worker holds at most its ``capacity`` connections,
and a session lingers only briefly after its last member left). Notify ids are
capped by ``dedup_max``.

After any :meth:`Registry.register` a worker should send its full state with
:meth:`Registry.announce_sessions` and :meth:`Registry.presence_replace`: that
is how a restarted master (or one that purged a worker during a partition)
learns again what the cluster holds.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import attrs

from mc.counts import summed
from mc.protocol.control import Metrics

UP = "up"
DRAINING = "draining"
DRAINED = "drained"


class RegistryError(Exception):
    """Base of the errors the registry raises for requests it refuses."""


class UnknownWorker(RegistryError, LookupError):
    """The worker is not registered, or its lease has lapsed.

    The master answers it by telling the worker to register again.
    """

    def __init__(self, worker_id: str) -> None:
        super().__init__(f"unknown or expired worker {worker_id!r}")
        self.worker_id = worker_id


class RegistryFull(RegistryError):
    """A new worker would exceed ``max_workers``; the worker retries later."""


@attrs.frozen
class WorkerInfo:
    """A snapshot of one registered worker.

    ``state`` is :data:`UP`, :data:`DRAINING` or :data:`DRAINED`. ``last_seen`` is the ``now``
    of its latest register or heartbeat, so it also marks the metrics' age
    (the balancer uses it to know when a fresh report arrived).
    """

    id: str
    url: str
    capacity: int
    state: str
    metrics: Metrics
    registered_at: float
    last_seen: float


@attrs.frozen
class SessionInfo:
    """Who owns a chat session, and how many members the owner last reported."""

    session: str
    worker_id: str
    members: int
    #: the last seq of a session handed over from a draining owner (0: none), for its new owner
    seq: int = 0


@attrs.frozen
class Kick:
    """Tell ``worker_id`` to close its connection of (``client``, ``device``) with 4009.

    Returned when the same client and device connected on another worker: a
    (client, device) lives on at most one worker, the newest one.
    """

    worker_id: str
    client: str
    device: str


@attrs.frozen
class Totals:
    """Cluster totals for ``/v1/stats``: the sum of the live workers' latest metrics."""

    workers: int
    draining: int
    metrics: Metrics


@attrs.define
class _Member:
    """What the registry keeps per member: the public snapshot and what to purge with it."""

    info: WorkerInfo
    sessions: set[str] = attrs.Factory(set)
    presence: set[tuple[str, str]] = attrs.Factory(set)


class Registry:
    """Workers with leases, chat-session owners, presence and notify-id dedup.

    ``version`` increases whenever the worker set or a worker's url, capacity
    or state changes (never on metrics), so ``GET /v1/workers?after=V`` can
    wait for a value above ``V``.
    """

    __slots__ = (
        "lease",
        "dedup_ttl",
        "dedup_max",
        "max_workers",
        "_version",
        "_members",
        "_sessions",
        "_devices",
        "_notify_ids",
        "_oldest_seen",
    )

    def __init__(
        self,
        *,
        lease: float = 5.0,
        dedup_ttl: float = 600.0,
        dedup_max: int = 100_000,
        max_workers: int = 1024,
    ) -> None:
        if lease <= 0 or dedup_ttl <= 0:
            raise ValueError("lease and dedup_ttl must be positive")
        if dedup_max < 1 or max_workers < 1:
            raise ValueError("dedup_max and max_workers must be at least 1")
        self.lease = lease
        self.dedup_ttl = dedup_ttl
        self.dedup_max = dedup_max
        self.max_workers = max_workers
        self._version = 0
        self._members: dict[str, _Member] = {}
        self._sessions: dict[str, SessionInfo] = {}
        # client -> device -> worker id: a (client, device) maps to one worker by construction.
        self._devices: dict[str, dict[str, str]] = {}
        # notify id -> first use; insertion order is time order because `now` never decreases.
        self._notify_ids: OrderedDict[str, float] = OrderedDict()
        # at most the oldest last_seen of any member (exact after a scan): while it is alive, all
        # are, so expire(), called before every notify, is one comparison, not a scan. Heartbeats
        # and registrations move last_seen to now (later, unless a clock goes back: then this
        # follows); a new member and lapse() bring it down.
        self._oldest_seen = math.inf

    @property
    def version(self) -> int:
        """The membership version (see the class docstring)."""
        return self._version

    # ------------------------------------------------------------------ workers

    def register(self, worker_id: str, url: str, *, capacity: int, now: float) -> WorkerInfo:
        """Add a worker, or refresh a known one, and start its lease at ``now``.

        A live member keeps its sessions, presence and latest metrics, and gets
        the new url and capacity and state ``up`` (a drain is cancelled). A
        member whose lease lapsed before the purge is dead: it is purged first
        and starts afresh, as if :meth:`expire` had run. Raises
        :class:`RegistryFull` for a new id beyond ``max_workers``.
        """
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        member = self._members.get(worker_id)
        if member is not None and not self._alive(member, now):
            self._purge(worker_id)
            member = None
        if member is None:
            if len(self._members) >= self.max_workers:
                raise RegistryFull(f"at most {self.max_workers} workers")
            info = WorkerInfo(worker_id, url, capacity, UP, Metrics(), now, now)
            self._members[worker_id] = _Member(info)
            self._oldest_seen = min(self._oldest_seen, now)
            self._version += 1
            return info
        old = member.info
        member.info = attrs.evolve(old, url=url, capacity=capacity, state=UP, last_seen=now)
        self._oldest_seen = min(self._oldest_seen, now)  # a clock that went back
        if (old.url, old.capacity, old.state) != (url, capacity, UP):
            self._version += 1
        return member.info

    def heartbeat(self, worker_id: str, metrics: Metrics, *, now: float) -> bool:
        """Renew a live worker's lease and store its metrics.

        False when the worker is unknown or its lease has lapsed: it must
        register again (and re-announce), nothing is renewed.
        """
        member = self._members.get(worker_id)
        if member is None or not self._alive(member, now):
            return False
        member.info = attrs.evolve(member.info, metrics=metrics, last_seen=now)
        self._oldest_seen = min(self._oldest_seen, now)
        return True

    def expire(self, now: float) -> list[str]:
        """Purge every worker whose lease has lapsed; return their ids, sorted.

        Their chat sessions are forgotten (the next member to open one makes a
        live worker its owner) and so are their presence entries.
        """
        if now - self._oldest_seen <= self.lease:  # _alive() of the oldest member
            return []
        dead = sorted(wid for wid, m in self._members.items() if not self._alive(m, now))
        for wid in dead:
            self._purge(wid)
        self._oldest_seen = min((m.info.last_seen for m in self._members.values()), default=math.inf)
        return dead

    def remove(self, worker_id: str) -> bool:
        """Purge a worker that leaves in order; False if it was not a member."""
        if worker_id not in self._members:
            return False
        self._purge(worker_id)
        return True

    def set_draining(self, worker_id: str) -> bool:
        """Mark a member as draining: the balancer stops choosing it. False if unknown.

        It stays listed (consumers keep their links to it until it leaves). A
        drained worker stays drained.
        """
        member = self._members.get(worker_id)
        if member is None:
            return False
        if member.info.state == UP:
            self._set_state(member, DRAINING)
        return True

    def set_drained(self, worker_id: str) -> bool:
        """A draining member closed its last connection. False if unknown or not draining.

        Its connection count is 0 from now on, whatever its last heartbeat said
        (taken while it was still closing them), so an undrain balances at once.
        """
        member = self._members.get(worker_id)
        if member is None or member.info.state == UP:
            return False
        self._set_state(member, DRAINED)
        member.info = attrs.evolve(member.info, metrics=attrs.evolve(member.info.metrics, connections=0))
        return True

    def set_up(self, worker_id: str) -> bool:
        """Take a draining or drained member back into service. False if unknown."""
        member = self._members.get(worker_id)
        if member is None:
            return False
        self._set_state(member, UP)
        return True

    def _set_state(self, member: _Member, state: str) -> None:
        if member.info.state != state:
            member.info = attrs.evolve(member.info, state=state)
            self._version += 1

    def workers(self, now: float) -> list[WorkerInfo]:
        """The live workers (up and draining), sorted by id."""
        return [m.info for _, m in sorted(self._members.items()) if self._alive(m, now)]

    def worker(self, worker_id: str) -> WorkerInfo | None:
        """A member's snapshot, even if its lease lapsed since the last purge; else None."""
        member = self._members.get(worker_id)
        return None if member is None else member.info

    def totals(self, now: float) -> Totals:
        """Sum the live workers' latest metrics, for ``/v1/stats``.

        ``cpu_percent`` is summed like ``top`` sums processes: 250 means two
        and a half cores busy across the cluster.
        """
        live = self.workers(now)
        ms = [w.metrics for w in live]
        return Totals(
            workers=len(live),
            draining=sum(w.state != UP for w in live),
            metrics=Metrics(**{
                f.name: sum(getattr(m, f.name) for m in ms) for f in attrs.fields(Metrics)
                if f.name != "counters"
            }, counters=summed(m.counters for m in ms)),
        )

    # ------------------------------------------------------------ chat sessions

    def claim_session(self, session: str, worker_id: str, *, now: float) -> str:
        """Make ``worker_id`` the owner unless a live worker owns ``session``; return the owner.

        The claim is won when the answer is ``worker_id`` (also when it owned
        the session already) and lost otherwise: the claimer redirects to the
        owner. A session whose owner's lease lapsed goes to the claimer. Of any
        sequence of claims for a free session, the first wins and every later
        one gets that owner. Raises :class:`UnknownWorker` if the claimer is
        not live. O(1).
        """
        claimer = self._live_member(worker_id, now)
        current = self._sessions.get(session)
        if current is not None:
            owner = self._members[current.worker_id]
            if owner is claimer or self._alive(owner, now):
                return current.worker_id
            owner.sessions.discard(session)
        self._sessions[session] = SessionInfo(session, worker_id, 0)
        claimer.sessions.add(session)
        return worker_id

    def lookup_session(self, session: str) -> SessionInfo | None:
        """The session's owner and member count, or None when nobody owns it. O(1)."""
        return self._sessions.get(session)

    def sessions(self, limit: int) -> tuple[int, list[SessionInfo]]:
        """How many sessions are owned, and at most ``limit`` of them. O(limit)."""
        return len(self._sessions), list(itertools.islice(self._sessions.values(), max(limit, 0)))

    def release_session(self, session: str, worker_id: str) -> bool:
        """Forget a session that ended on its owner; False (and nothing done) for anyone else."""
        current = self._sessions.get(session)
        if current is None or current.worker_id != worker_id:
            return False
        del self._sessions[session]
        self._members[worker_id].sessions.discard(session)
        return True

    def report_members(self, session: str, worker_id: str, members: int) -> bool:
        """Record the owner's member count; False (ignored) if ``worker_id`` is not the owner."""
        if members < 0:
            raise ValueError("members must be >= 0")
        current = self._sessions.get(session)
        if current is None or current.worker_id != worker_id:
            return False
        self._sessions[session] = attrs.evolve(current, members=members)
        return True

    def move_session(self, session: str, worker_id: str, seq: int) -> bool:
        """Hand ``session`` to the member ``worker_id`` (a drain), remembering its
        last ``seq`` for the new owner. False (nothing done) if either is unknown."""
        current = self._sessions.get(session)
        target = self._members.get(worker_id)
        if current is None or target is None:
            return False
        self._members[current.worker_id].sessions.discard(session)
        self._sessions[session] = SessionInfo(session, worker_id, current.members, seq)
        target.sessions.add(session)
        return True

    def announce_sessions(
        self, worker_id: str, sessions: Mapping[str, int], *, now: float
    ) -> list[str]:
        """Take a worker's full list of sessions (name -> member count); return the conflicts.

        Sent after registering, so a restarted master learns the owners again.
        It replaces what the registry held for this worker: its sessions that
        are not listed are forgotten, listed ones that are free (or owned by a
        lapsed worker) become its own. A listed session that another live
        worker owns stays with that worker (it won the claim while this one was
        unknown) and is returned, sorted: the worker must close its copy with
        4503 so the members reconnect and are redirected to the owner. Raises
        :class:`UnknownWorker` if the worker is not live.
        """
        if any(count < 0 for count in sessions.values()):
            raise ValueError("member counts must be >= 0")
        member = self._live_member(worker_id, now)
        for name in member.sessions - sessions.keys():
            del self._sessions[name]
        member.sessions.intersection_update(sessions.keys())
        conflicts = []
        for name, count in sessions.items():
            current = self._sessions.get(name)
            if current is not None and current.worker_id != worker_id:
                owner = self._members[current.worker_id]
                if self._alive(owner, now):
                    conflicts.append(name)
                    continue
                owner.sessions.discard(name)
            self._sessions[name] = SessionInfo(name, worker_id, count)
            member.sessions.add(name)
        return sorted(conflicts)

    # ----------------------------------------------------------------- presence

    def presence_delta(
        self,
        worker_id: str,
        added: Iterable[tuple[str, str]],
        removed: Iterable[tuple[str, str]],
    ) -> list[Kick]:
        """Apply a member's (client, device) connects and disconnects; return who to kick.

        Removals come first, then additions, so a worker sends net changes.
        A removal only counts when this worker holds the entry (its connection
        may have been replaced elsewhere since). An addition that another
        worker holds moves here, and that worker gets a :class:`Kick` to close
        its old connection with 4009 ("replaced"), in the order of ``added``.
        Raises :class:`UnknownWorker` if the worker is not a member.
        """
        member = self._member(worker_id)
        for client, device in removed:
            entry = (client, device)
            if entry in member.presence:
                member.presence.remove(entry)
                self._drop_entry(client, device)
        kicks = []
        for client, device in added:
            entry = (client, device)
            devices = self._devices.setdefault(client, {})
            previous = devices.get(device)
            if previous == worker_id:
                continue
            devices[device] = worker_id
            member.presence.add(entry)
            if previous is not None:
                self._members[previous].presence.remove(entry)
                kicks.append(Kick(previous, client, device))
        return kicks

    def presence_replace(self, worker_id: str, entries: Iterable[tuple[str, str]]) -> list[Kick]:
        """Replace all of a member's (client, device) entries with ``entries``; return who to kick.

        The full re-announcement after registering. Entries another worker
        holds move here and that worker is kicked (the last announcement wins:
        after a master restart nobody knows which connection is newer).
        Raises :class:`UnknownWorker` if the worker is not a member.
        """
        member = self._member(worker_id)
        wanted = {(client, device) for client, device in entries}
        return self.presence_delta(
            worker_id, sorted(wanted - member.presence), member.presence - wanted
        )

    def client_connections(self, client: str) -> list[tuple[str, str]]:
        """Where a client is connected: (worker id, device) pairs, sorted."""
        devices = self._devices.get(client)
        if devices is None:
            return []
        return sorted((wid, device) for device, wid in devices.items())

    def workers_for(self, client: str, device: str | None = None) -> set[str]:
        """The workers holding ``client`` (only its ``device`` when given): where a notify goes."""
        devices = self._devices.get(client)
        if devices is None:
            return set()
        if device is None:
            return set(devices.values())
        wid = devices.get(device)
        return set() if wid is None else {wid}

    def sizes(self) -> dict[str, int]:
        """How much the registry holds (``mc_master_registry_entries``)."""
        return {
            "workers": len(self._members),
            "sessions": len(self._sessions),
            "clients": len(self._devices),
            "devices": sum(len(d) for d in self._devices.values()),
            "notify_ids": len(self._notify_ids),
        }

    # ------------------------------------------------------------ notify dedup

    def seen_notify_id(self, notify_id: str, *, now: float) -> bool:
        """True if ``notify_id`` was used less than ``dedup_ttl`` ago, else record it and say False.

        Memory is capped at ``dedup_max`` ids: at the cap the oldest id is
        forgotten early, so a duplicate of it is no longer caught. With the
        defaults that only happens above ~166 distinct ids per second for ten
        minutes. Expired ids are dropped first, amortised O(1) per call.
        """
        ids = self._notify_ids
        while ids:
            oldest_at = ids[next(iter(ids))]
            if now - oldest_at < self.dedup_ttl:
                break
            ids.popitem(last=False)
        if notify_id in ids:
            return True
        if len(ids) >= self.dedup_max:
            ids.popitem(last=False)
        ids[notify_id] = now
        return False

    # ---------------------------------------------------------------- internals

    def _alive(self, member: _Member, now: float) -> bool:
        return now - member.info.last_seen <= self.lease

    def _member(self, worker_id: str) -> _Member:
        member = self._members.get(worker_id)
        if member is None:
            raise UnknownWorker(worker_id)
        return member

    def _live_member(self, worker_id: str, now: float) -> _Member:
        member = self._member(worker_id)
        if not self._alive(member, now):
            raise UnknownWorker(worker_id)
        return member

    def _purge(self, worker_id: str) -> None:
        member = self._members.pop(worker_id)
        for name in member.sessions:
            del self._sessions[name]
        for client, device in member.presence:
            self._drop_entry(client, device)
        self._version += 1

    def _drop_entry(self, client: str, device: str) -> None:
        devices = self._devices[client]
        del devices[device]
        if not devices:
            del self._devices[client]

    # --------------------------------------------------------------- dead links

    def lapse(self, worker_id: str, at: float) -> bool:
        """Bring a member's lease expiry forward to ``at`` (never later than it was).

        For a worker whose control link closed without an orderly leave (a
        crashed process: the kernel closes its socket at once). It stays live
        until ``at`` and is dead the instant after, exactly as if its last
        heartbeat had been ``at - lease`` (so ``WorkerInfo.last_seen`` reads
        that); a :meth:`register` or :meth:`heartbeat` before then renews the
        lease as usual, which is how a worker that re-registers within the
        grace keeps its sessions and presence. Nothing is purged here:
        :meth:`expire` does it after ``at``. False (and nothing done) when
        the worker is not a member, e.g. because it left in order.
        """
        member = self._members.get(worker_id)
        if member is None:
            return False
        last_seen = at - self.lease
        if last_seen < member.info.last_seen:
            member.info = attrs.evolve(member.info, last_seen=last_seen)
            self._oldest_seen = min(self._oldest_seen, last_seen)
        return True
