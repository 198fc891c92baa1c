"""The master's live state: the pure registry and balancer, plus the trio parts.

The registry decides; this shell supplies the clock, wakes long-polls when the
worker set changes, expires leases on a tick and carries decisions (kicks,
deliveries) over the control links.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import trio

from mc.protocol import Notification, Target
from mc.protocol.control import Kick as KickMessage

from .balancer import Balancer
from .config import MasterConfig
from .links import Links
from .registry import Kick, Registry, WorkerInfo

log = logging.getLogger("mc.master")

#: how long after a dead link's grace the purge runs (the registry keeps a
#: worker live *at* its deadline and dead the instant after)
LAPSE_SLACK = 0.005
#: how often a chat handshake waiting on a suspect owner looks again
SETTLE_POLL = 0.05


class MasterState:
    def __init__(self, config: MasterConfig) -> None:
        self.config = config
        self.registry = Registry(lease=config.lease, dedup_max=config.dedup_max)
        self.balancer = Balancer()
        self.links = Links(notify_timeout=config.notify_timeout)
        self._changed = trio.Event()
        self._version = self.registry.version
        #: control messages that did not validate (logged, counted, skipped)
        self.bad_control_messages = 0
        # worker id -> when it is dead: its control link closed without a leave
        # (see link_lost); dropped once that time has passed
        self._lapsed: dict[str, float] = {}
        self._wake = trio.Event()  # a new lapse: the expiry loop recomputes its deadline

    def bad_control(self, reason: str) -> None:
        """A control message that did not validate: count it; log the first few."""
        self.bad_control_messages += 1
        if self.bad_control_messages <= 100 or self.bad_control_messages % 1000 == 0:
            log.warning("ignored a malformed control message (%d so far): %s",
                        self.bad_control_messages, reason)

    @staticmethod
    def now() -> float:
        return trio.current_time()

    # ---------------------------------------------------------- membership

    def touched(self) -> None:
        """Wake long-polls if the membership version moved."""
        if self.registry.version != self._version:
            self._version = self.registry.version
            self._changed.set()
            self._changed = trio.Event()

    async def wait_version(self, after: int, timeout: float) -> None:
        """Return once the version exceeds ``after`` or ``timeout`` passes.

        An ``after`` above the current version comes from before a master
        restart (versions start again at 0): answer at once.
        """
        if after > self.registry.version:
            return
        with trio.move_on_after(timeout):
            while self.registry.version <= after:
                await self._changed.wait()

    async def expire_loop(self) -> None:
        """Purge workers whose lease lapsed, a tenth of a lease at a time.

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
            self.purge_lapsed()

    # ------------------------------------------------------- dead links

    def link_lost(self, worker_id: str) -> None:
        """A worker's control link closed without an orderly ``leave``.

        A crashed worker's kernel closes its socket at once, so this is
        usually a death; the lease (for silent partitions) would keep it
        listed for seconds. Its lease is cut to ``dead_link_grace`` from now
        instead: if the same worker registers again within it (a link blip,
        the master dropped an overflowing link) it keeps its sessions and
        presence, else it is purged then. Meanwhile it is *suspect*: the
        balancer skips it and chat handshakes for its sessions wait at the
        entry point (see :meth:`owner_settled`).
        """
        grace = self.config.dead_link_grace
        at = self.now() + grace
        if not self.registry.lapse(worker_id, at):
            return  # not a member: it left in order, or was purged already
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
                self.purge_lapsed()
                info = self.registry.lookup_session(session)
                if info is None or not self.suspect(info.worker_id):
                    return
                await self.wait_version(self.registry.version, SETTLE_POLL)

    def purge_lapsed(self) -> None:
        """Purge the workers whose lease lapsed, now.

        Called before answering from sessions or presence too: a worker drops
        out of ``live_workers`` the instant its lease lapses, and its sessions
        and presence entries must not outlive it until the next tick.
        """
        now = self.now()
        for wid in self.registry.expire(now):
            lost = self._lapsed.pop(wid, None)
            if lost is None:
                log.warning("worker %s missed its lease; purged", wid)
            else:
                log.warning("worker %s: control link lost %.2f s ago and it did not register "
                            "again; purged", wid, now - lost + self.config.dead_link_grace)
        if self._lapsed:  # past its deadline (and the slack) a lapse has done its work
            self._lapsed = {wid: at for wid, at in self._lapsed.items() if at + LAPSE_SLACK > now}
        self.touched()

    def live_workers(self) -> list[WorkerInfo]:
        return self.registry.workers(self.now())

    def assign(self) -> WorkerInfo | None:
        """The least loaded live worker, never a suspect one (see :meth:`link_lost`)."""
        live = self.live_workers()
        if self._lapsed:
            live = [w for w in live if not self.suspect(w.id)]
        return self.balancer.assign(live)

    def url_of(self, worker_id: str) -> str | None:
        info = self.registry.worker(worker_id)
        return None if info is None else info.url

    # ----------------------------------------------------------- delivery

    def kick(self, kicks: Iterable[Kick]) -> None:
        """Tell the old workers to close connections replaced elsewhere (4009)."""
        for k in kicks:
            self.links.tell(k.worker_id, KickMessage(k.client, k.device))

    def targets(self, target: Target) -> set[str]:
        """The workers that may hold apps ``target`` selects."""
        if target.client is not None:
            return self.registry.workers_for(target.client, target.device)
        return {w.id for w in self.live_workers()}

    async def route_notify(
        self, target: Target, frame: Notification, exclude: str | None = None
    ) -> int:
        """Deliver a notify frame cluster-wide (except on ``exclude``); the count."""
        workers = self.targets(target)
        if exclude is not None:
            workers.discard(exclude)
        if not workers:
            return 0
        return await self.links.deliver(workers, target, frame)
