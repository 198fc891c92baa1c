"""The master's live state: the pure registry and balancer, plus the trio parts.

The registry decides, behind the async :class:`~.store.Store` seam (in memory,
or Redis shared by several masters); this shell supplies the clock, wakes
long-polls when the worker set changes, expires leases on a tick and carries
decisions (kicks, deliveries) over the control links, or through the
:class:`~.routing.Router` to workers linked to another master.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence

import trio

from mc.protocol import Notification, Target
from mc.protocol.control import Adopt, Drain, Shed, Undrain
from mc.protocol.control import Kick as KickMessage
from mc.runner import Reloader
from mc.tokens import TokenVerifier

from .balancer import Balancer
from .config import MasterConfig
from .links import Links
from .observe import MasterCounters, Rates
from .registry import UP, Kick, Registry, WorkerInfo
from .routing import Router
from .store import MemoryStore, Store, StoreUnavailable

log = logging.getLogger("mc.master")

#: a rebalance round has settled when the reported connections are back to this share
SETTLED = 0.95
SETTLE_MAX = 30.0
#: how long after a dead link's grace the purge runs (the registry keeps a
#: worker live *at* its deadline and dead the instant after)
LAPSE_SLACK = 0.005
#: how often a chat handshake waiting on a suspect owner looks again
SETTLE_POLL = 0.05


class MasterState:
    def __init__(self, config: MasterConfig, reloader: Reloader | None = None,
                 store: Store | None = None) -> None:
        self.config = config
        self.tokens = TokenVerifier.from_settings(config.jwt_secret, config.jwt_public_key)
        self.reloader = reloader
        if reloader is not None:
            reloader.apply = self.reconfigure
        self.store = store if store is not None else MemoryStore(
            Registry(lease=config.lease, dedup_max=config.dedup_max))
        self.balancer = Balancer()
        self.links = Links(notify_timeout=config.notify_timeout)
        self.router = Router(self.store, self.links, notify_timeout=config.notify_timeout)
        self._changed = trio.Event()
        self._version = self.store.version_hint
        self.store.on_change = self.touched
        #: the live workers as last listed (for /metrics, which cannot wait on the store)
        self.last_workers: list[WorkerInfo] = []
        #: control messages that did not validate (logged, counted, skipped)
        self.bad_control_messages = 0
        #: store calls that failed (Redis unreachable)
        self.store_errors = 0
        #: control links refused for a missing or wrong cluster key
        self.refused_links = 0
        #: worker id -> since when it holds more than its share (rebalance)
        self._over_since: dict[str, float] = {}
        self._last_shed = float("-inf")
        self._shed_total = 0
        # worker id -> when it is dead: its control link closed without a leave
        # (see link_lost); dropped once that time has passed
        self._lapsed: dict[str, float] = {}
        self._wake = trio.Event()  # a new lapse: the expiry loop recomputes its deadline
        #: per-worker message rates from the heartbeats' counters (/v1/stats)
        self.rates = Rates()
        #: the master's own figures for /metrics
        self.counters = MasterCounters()

    @property
    def registry(self) -> Registry:
        """The pure registry behind a memory store (tests and tools; the shell uses ``store``)."""
        if not isinstance(self.store, MemoryStore):
            raise AttributeError("this master's registry is in a shared store")
        return self.store.registry

    def reconfigure(self, config: MasterConfig) -> None:
        """New settings (SIGHUP, POST /v1/reload): keys, limits and origins apply from the
        next request on; the address, port and store need a restart."""
        self.config = config
        self.tokens = TokenVerifier.from_settings(config.jwt_secret, config.jwt_public_key)

    def bad_control(self, reason: str) -> None:
        """A control message that did not validate: count it; log the first few."""
        self.bad_control_messages += 1
        if self.bad_control_messages <= 100 or self.bad_control_messages % 1000 == 0:
            log.warning("ignored a malformed control message (%d so far): %s",
                        self.bad_control_messages, reason)

    def store_failed(self, exc: Exception) -> None:
        """A store call failed (Redis unreachable): count it; log the first few."""
        self.store_errors += 1
        if self.store_errors <= 100 or self.store_errors % 1000 == 0:
            log.warning("store unavailable (%d errors so far): %s", self.store_errors, exc)

    @staticmethod
    def now() -> float:
        return trio.current_time()

    def store_now(self) -> float:
        """The store's clock (monotonic in memory, the wall clock shared by several masters)."""
        return self.store.now()

    # ---------------------------------------------------------- membership

    def touched(self) -> None:
        """Wake long-polls if the membership version moved."""
        if self.store.version_hint != self._version:
            self._version = self.store.version_hint
            self._changed.set()
            self._changed = trio.Event()

    async def wait_version(self, after: int, timeout: float) -> None:
        """Return once the version exceeds ``after`` or ``timeout`` passes.

        An ``after`` above the current version comes from before a master
        restart (versions start again at 0): answer at once.
        """
        if after > self.store.version_hint:
            return
        with trio.move_on_after(timeout):
            while self.store.version_hint <= after:
                await self._changed.wait()

    async def expire_loop(self) -> None:
        """Purge workers whose lease lapsed, a tenth of a lease at a time; rebalance.

        A worker whose link was lost (:meth:`link_lost`) is purged at its
        grace's end, not at the next tick: the loop wakes for it.
        """
        tick = self.config.lease / 10
        while True:
            deadline = self.now() + tick
            if self._lapsed:
                deadline = min(deadline, min(self._lapsed.values()) + LAPSE_SLACK)
            with trio.move_on_at(deadline):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.purge_lapsed()
                await self.rebalance()
            except StoreUnavailable as exc:
                self.store_failed(exc)

    # ------------------------------------------------------- dead links

    async def link_lost(self, worker_id: str) -> None:
        """A worker's control link closed without an orderly ``leave``.

        A crashed worker's kernel closes its socket at once, so this is
        usually a death; the lease (for silent partitions) would keep it
        listed for seconds. Its lease is cut to ``dead_link_grace`` from now
        instead: if the same worker registers again within it (a link blip,
        the master dropped an overflowing link) it keeps its sessions and
        presence, else it is purged then. Meanwhile it is *suspect*: the
        balancer skips it and chat handshakes for its sessions wait at the
        entry point (see :meth:`owner_settled`). With several masters only
        the master the worker is linked to cuts its lease (a worker that
        moved to another master keeps it).
        """
        grace = self.config.dead_link_grace
        at = self.now() + grace
        try:
            if not await self.store.lapse(worker_id, self.store_now() + grace):
                return  # not a member (it left in order, or was purged), or linked elsewhere now
        except StoreUnavailable as exc:
            self.store_failed(exc)
            return
        self._lapsed[worker_id] = at
        self._wake.set()
        log.warning("worker %s: control link closed without a leave; dead in %.1f s unless it "
                    "registers again", worker_id, grace)

    def suspect(self, worker_id: str) -> bool:
        """Its link was lost and it has not registered again (yet): likely dead."""
        return worker_id in self._lapsed and worker_id not in self.links

    async def owner_settled(self, session: str) -> None:
        """Return once ``session``'s owner is not suspect: back, or purged (session free).

        Bounded by the grace (plus a margin): a member re-opening a session
        of a crashed owner is then sent to a live worker at once instead of
        to the dead one, which would cost it a failed attempt and a backoff.
        """
        if not self._lapsed:  # the common case: no link was lost lately
            return
        with trio.move_on_after(self.config.dead_link_grace + 0.5):
            while True:
                await self.purge_lapsed()
                info = await self.store.lookup_session(session)
                if info is None or not self.suspect(info.worker_id):
                    return
                await self.wait_version(self.store.version_hint, SETTLE_POLL)

    async def purge_lapsed(self) -> None:
        """Purge the workers whose lease lapsed, now.

        Called before answering from sessions or presence too: a worker drops
        out of ``live_workers`` the instant its lease lapses, and its sessions
        and presence entries must not outlive it until the next tick.
        """
        now = self.now()
        gone = await self.store.expire(self.store_now())
        for wid in gone:
            lost = self._lapsed.pop(wid, None)
            if lost is None:
                log.warning("worker %s missed its lease; purged", wid, extra={"worker": wid})
            else:
                log.warning("worker %s: control link lost %.2f s ago and it did not register "
                            "again; purged", wid, now - lost + self.config.dead_link_grace)
        if gone:
            self.rates.forget({w.id for w in await self.live_workers()})
        if self._lapsed:  # past its deadline (and the slack) a lapse has done its work
            self._lapsed = {wid: at for wid, at in self._lapsed.items() if at + LAPSE_SLACK > now}
        self.touched()

    async def live_workers(self) -> list[WorkerInfo]:
        self.last_workers = await self.store.workers(self.store_now())
        return self.last_workers

    async def assign(self) -> WorkerInfo | None:
        """The least loaded live worker, never a suspect one (see :meth:`link_lost`)."""
        live = await self.live_workers()
        if self._lapsed:
            live = [w for w in live if not self.suspect(w.id)]
        return self.balancer.assign(live)

    async def url_of(self, worker_id: str) -> str | None:
        info = await self.store.worker(worker_id)
        return None if info is None else info.url

    # ----------------------------------------------------------- delivery

    async def hand_off(self, worker_id: str, sessions: Mapping[str, int]) -> None:
        """A draining worker's sessions get new owners (the least loaded live
        workers), carrying their last ``seq``; with no other worker they are
        forgotten, and the next member to open one makes a worker its owner."""
        store = self.store
        if await store.set_draining(worker_id):
            self.touched()
        moved = 0
        for session, seq in sessions.items():
            target = await self.assign()
            if target is None or target.id == worker_id:
                await store.release_session(session, worker_id)
                continue
            if await store.move_session(session, target.id, seq):
                self.router.tell(target.id, Adopt(session, seq))
                moved += 1
        log.info("worker %s draining: %d of %d chat sessions handed over", worker_id, moved, len(sessions))

    async def drain(self, worker_id: str) -> bool:
        """Start draining a worker (POST /v1/workers/{id}/drain); False if unknown."""
        if not await self.store.set_draining(worker_id):
            return False
        self.router.tell(worker_id, Drain())
        self.touched()
        log.info("draining worker %s", worker_id)
        return True

    async def undrain(self, worker_id: str) -> bool:
        """Back into service (DELETE /v1/workers/{id}/drain); False if unknown."""
        if not await self.store.set_up(worker_id):
            return False
        self.router.tell(worker_id, Undrain())
        self.touched()
        log.info("worker %s back in service", worker_id)
        return True

    async def rebalance(self, *, force: bool = False) -> dict[str, int]:
        """Ask over-loaded workers to shed idle app connections down to the mean.

        A worker above (1 + tolerance) x the mean of the live ``up`` workers
        for ``rebalance_after`` seconds (at once with ``force``: POST
        /v1/rebalance) is sent ``shed``; it closes idle app connections at
        its drain rate, never below the mean. After a round the master waits
        ``rebalance_after``, and until the reported total is back to SETTLED
        of what it was (at most SETTLE_MAX seconds), before judging again: a
        mean taken while the shed apps are still reconnecting would shed
        the next worker below its share (ping-pong).
        """
        now = self.now()
        up = [w for w in await self.live_workers() if w.state == UP]
        asked: dict[str, int] = {}
        after = self.config.rebalance_after
        if len(up) < 2:
            self._over_since.clear()
            return asked
        total = sum(w.metrics.connections for w in up)
        if not force and (now - self._last_shed < after or (
                total < SETTLED * self._shed_total and now - self._last_shed < SETTLE_MAX)):
            return asked  # let the last round's reconnects land and be reported first
        mean = total / len(up)
        limit = (1 + self.config.rebalance_tolerance) * mean
        for w in up:
            if w.id not in self.links:  # another master's worker: that master rebalances it
                continue
            if w.metrics.connections <= limit:
                self._over_since.pop(w.id, None)
                continue
            since = self._over_since.setdefault(w.id, now)
            if force or now - since >= after:
                excess = w.metrics.connections - math.ceil(mean)
                if excess > 0 and self.router.tell(w.id, Shed(excess)):
                    asked[w.id] = excess
                    self._last_shed = now
                    self._shed_total = total
                    log.info("rebalance: worker %s holds %d (mean %.0f); shedding %d",
                             w.id, w.metrics.connections, mean, excess)
                self._over_since[w.id] = now  # once per period: its reports need time to follow
        return asked

    def kick(self, kicks: Iterable[Kick]) -> None:
        """Tell the old workers to close connections replaced elsewhere (4009)."""
        for k in kicks:
            self.router.tell(k.worker_id, KickMessage(k.client, k.device))

    async def targets(self, target: Target) -> set[str]:
        """The workers that may hold apps ``target`` selects."""
        if target.client is not None:
            return await self.store.workers_for(target.client, target.device)
        return {w.id for w in await self.live_workers()}

    async def route_notify(
        self, target: Target, frame: Notification, exclude: str | None = None,
        workers: set[str] | None = None,
    ) -> int:
        """Deliver a notify frame cluster-wide (except on ``exclude``); the count.

        ``workers``: the ones ``target`` selects, when the caller looked them up already.
        """
        return (await self.route_notify_many([(target, frame, workers)], exclude))[0]

    async def route_notify_many(
        self, jobs: Sequence[tuple[Target, Notification, set[str] | None]], exclude: str | None = None,
    ) -> list[int]:
        """Deliver several notify frames at once (a batch: one wait for every count); their counts."""
        routed: list[tuple[set[str], Target, Notification]] = []
        for target, frame, workers in jobs:
            if workers is None:
                try:
                    workers = await self.targets(target)
                except StoreUnavailable:
                    workers = set()
            if exclude is not None and exclude in workers:
                workers = workers - {exclude}
            routed.append((workers, target, frame))
        asked = [job for job in routed if job[0]]
        if not asked:
            return [0] * len(routed)
        self.counters.notifies_routed += len(asked)
        with self.counters.notify_latency.time():
            counts = iter(await self.router.deliver_many(asked))
        out = [next(counts) if workers else 0 for workers, _, _ in routed]
        if log.isEnabledFor(logging.DEBUG):
            for (workers, _, frame), delivered in zip(routed, out, strict=True):
                log.debug("notify %s routed to %d workers, delivered to %d", frame.id, len(workers),
                          delivered, extra={"trace": frame.trace})
        return out
