"""The master's side of the control links: one per connected worker.

Each link has a bounded outbound queue and a writer task, so the master
never blocks on a slow worker while handling another; a link whose queue
overflows is dropped (the worker reconnects and re-registers). Requests the
master makes of workers (``deliver``) are matched to replies by id.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
from collections.abc import Callable, Sequence

import trio

from mc.protocol import Codec, Notification, Target
from mc.protocol.control import ControlMessage, Deliver

log = logging.getLogger("mc.master")


class LinkOverflow(Exception):
    """The worker does not read its control messages fast enough."""


class WorkerLink:
    """One worker's control connection: queued sends and pending replies."""

    def __init__(self, worker_id: str, queue: int, codec: Codec) -> None:
        self.worker_id = worker_id
        self.codec = codec
        self.send_channel, self.receive_channel = trio.open_memory_channel[ControlMessage](queue)
        self.pending: dict[int, Callable[[int], None]] = {}
        self.closed = trio.Event()
        #: a message from this worker could not be applied (the store was unreachable): at its
        #: next heartbeat that the store takes, it is told to register again, in full
        self.resync = False

    def send(self, msg: ControlMessage) -> None:
        """Queue a message without waiting; raises LinkOverflow when the queue is full."""
        try:
            self.send_channel.send_nowait(msg)
        except trio.WouldBlock:
            self.closed.set()
            raise LinkOverflow(self.worker_id) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def close(self) -> None:
        self.closed.set()
        self.send_channel.close()
        for reply in self.pending.values():
            reply(0)
        self.pending.clear()


class Gather:
    """One ``deliver_many``: each job's total so far, how many replies are still due, its waiter.

    The waiting task is parked and rescheduled with trio's low-level calls,
    not through an Event: no Event, parking lot and ordered dict per notify.
    """

    __slots__ = ("_task", "over", "remaining", "totals")

    def __init__(self, jobs: int) -> None:
        self.totals = [0] * jobs
        self.remaining = 0
        self.over = False
        self._task: trio.lowlevel.Task | None = None

    def reply(self, job: int, count: int) -> None:
        self.totals[job] += count
        self.remaining -= 1
        if self.remaining == 0:
            self.end()

    def end(self) -> None:
        """Every reply is in, or the wait is over: the waiter goes on (once)."""
        if not self.over:
            self.over = True
            if self._task is not None:
                trio.lowlevel.reschedule(self._task)
                self._task = None

    async def wait(self) -> None:
        """Until :meth:`end`; a checkpoint (cancellable)."""
        if self.over:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED
        await trio.lowlevel.wait_task_rescheduled(abort)


class Links:
    """All live control links, and scatter-gather of deliveries over them.

    :meth:`expire_gathers` must run (``Router.run`` runs it) for a delivery
    that a worker never answers to end at ``notify_timeout``.
    """

    def __init__(self, *, notify_timeout: float) -> None:
        self.notify_timeout = notify_timeout
        self._links: dict[str, WorkerLink] = {}
        self._ids = itertools.count(1)
        self._gather_ids = itertools.count(1)
        self._waiting: dict[int, Gather] = {}  # the deliveries being waited for, by number
        # (deadline, number) of each wait, oldest first: plain tuples, so the ones whose delivery
        # ended long ago cost the cyclic collector nothing while they wait their turn here
        self._due: collections.deque[tuple[float, int]] = collections.deque()
        self._watched = trio.Event()  # set when the first wait is added to an empty deque

    def __len__(self) -> int:
        return len(self._links)

    def __contains__(self, worker_id: str) -> bool:
        return worker_id in self._links

    def attach(self, link: WorkerLink) -> None:
        old = self._links.get(link.worker_id)
        if old is not None:
            old.close()
        self._links[link.worker_id] = link

    def detach(self, link: WorkerLink) -> bool:
        """Close ``link``; True if it was its worker's current link (not replaced by a newer one)."""
        current = self._links.get(link.worker_id) is link
        if current:
            del self._links[link.worker_id]
        link.close()
        return current

    def tell(self, worker_id: str, msg: ControlMessage) -> bool:
        """Send a one-way message; False when the worker has no link."""
        link = self._links.get(worker_id)
        if link is None:
            return False
        try:
            link.send(msg)
        except LinkOverflow:
            log.warning("control link to %s overflowed; dropping it", worker_id)
            return False
        return True

    async def deliver(self, worker_ids: set[str], to: Target, frame: Notification) -> int:
        """Ask each worker to deliver ``frame`` locally; the total they report.

        Workers that do not answer within ``notify_timeout`` count as 0.
        """
        return (await self.deliver_many([(worker_ids, to, frame)]))[0]

    async def deliver_many(self, jobs: Sequence[tuple[set[str], Target, Notification]]) -> list[int]:
        """Each job's ``frame`` delivered on its workers, all asked at once; each job's total.

        One wait (at most ``notify_timeout``) for every reply, however many
        jobs: a batch costs one round trip, not one per notify.
        """
        gather = Gather(len(jobs))
        asked: list[tuple[WorkerLink, int]] = []
        for job, (worker_ids, to, frame) in enumerate(jobs):
            for wid in worker_ids:
                link = self._links.get(wid)
                if link is None:
                    continue
                rid = next(self._ids)
                try:
                    link.send(Deliver(rid, to, frame))
                except LinkOverflow:
                    continue
                link.pending[rid] = functools.partial(gather.reply, job)
                asked.append((link, rid))
        if not asked:
            return gather.totals
        gather.remaining = len(asked)
        number = next(self._gather_ids)
        self._waiting[number] = gather
        if not self._due:
            self._watched.set()
        self._due.append((trio.current_time() + self.notify_timeout, number))
        try:
            await gather.wait()
        finally:
            del self._waiting[number]
            if gather.remaining:  # forget the ones that never answered
                for link, rid in asked:
                    link.pending.pop(rid, None)
        return gather.totals

    async def expire_gathers(self) -> None:
        """End the waits of deliveries not fully answered within ``notify_timeout``, until cancelled.

        One task for all of them instead of a timeout scope per request: the
        waits are kept in deadline order (every one is ``notify_timeout``
        long), so this sleeps until the oldest one's deadline. At most
        ``notify_timeout`` worth of deliveries are held.
        """
        due, waiting = self._due, self._waiting
        while True:
            while due and due[0][1] not in waiting:  # answered in full already
                due.popleft()
            if not due:
                self._watched = trio.Event()
                await self._watched.wait()
                continue
            await trio.sleep_until(due[0][0])
            now = trio.current_time()
            while due and due[0][0] <= now:
                gather = waiting.get(due.popleft()[1])
                if gather is not None:
                    gather.end()

    def replied(self, link: WorkerLink, rid: int, count: int) -> None:
        callback = link.pending.pop(rid, None)
        if callback is not None:
            callback(count)

