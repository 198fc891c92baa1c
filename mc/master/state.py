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
from collections.abc import Iterable, Mapping

import trio

from mc.protocol import Notification, Target
from mc.protocol.control import Adopt, Drain, Shed, Undrain
from mc.protocol.control import Kick as KickMessage

from .balancer import Balancer
from .config import MasterConfig
from .links import Links
from .registry import UP, Kick, Registry, WorkerInfo
from .routing import Router
from .store import MemoryStore, Store, StoreUnavailable

log = logging.getLogger("mc.master")


class MasterState:
    def __init__(self, config: MasterConfig, store: Store | None = None) -> None:
        self.config = config
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
        #: worker id -> since when it holds more than its share (rebalance)
        self._over_since: dict[str, float] = {}

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
        """Purge workers whose lease lapsed, a tenth of a lease at a time; rebalance."""
        while True:
            await trio.sleep(self.config.lease / 10)
            try:
                await self.purge_lapsed()
                await self.rebalance()
            except StoreUnavailable as exc:
                self.store_failed(exc)

    async def purge_lapsed(self) -> None:
        """Purge the workers whose lease lapsed, now.

        Called before answering from sessions or presence too: a worker drops
        out of ``live_workers`` the instant its lease lapses, and its sessions
        and presence entries must not outlive it until the next tick.
        """
        for wid in await self.store.expire(self.store_now()):
            log.warning("worker %s missed its lease; purged", wid)
        self.touched()

    async def live_workers(self) -> list[WorkerInfo]:
        self.last_workers = await self.store.workers(self.store_now())
        return self.last_workers

    async def assign(self) -> WorkerInfo | None:
        return self.balancer.assign(await self.live_workers())

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
        /v1/rebalance) is sent ``shed`` once per ``rebalance_after``; it closes
        idle app connections at its drain rate, never below the mean.
        """
        now = self.now()
        up = [w for w in await self.live_workers() if w.state == UP]
        asked: dict[str, int] = {}
        if len(up) < 2:
            self._over_since.clear()
            return asked
        mean = sum(w.metrics.connections for w in up) / len(up)
        limit = (1 + self.config.rebalance_tolerance) * mean
        after = self.config.rebalance_after
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
        self, target: Target, frame: Notification, exclude: str | None = None
    ) -> int:
        """Deliver a notify frame cluster-wide (except on ``exclude``); the count."""
        try:
            workers = await self.targets(target)
        except StoreUnavailable:
            return 0
        if exclude is not None:
            workers.discard(exclude)
        if not workers:
            return 0
        return await self.router.deliver(workers, target, frame)
