"""Commands and notifies for workers linked to another master (several masters, one store).

Each master holds the control links of the workers registered with it
(:class:`~.links.Links`); the shared store records which master each worker
is linked to. A command for a worker linked here goes straight to its link;
one for a worker linked elsewhere is published to that master's channel
(``Store.tell_worker``: one script looks the master up and publishes), and
that master passes it on. A notify's fan-out is split the same way: local
workers are asked directly, and each other master holding some of the
targets gets one message listing them and answers with its delivered count.
The sender waits at most ``notify_timeout`` for all of them, as for its own
workers; a master that does not answer counts 0.

Bounds: at most ``QUEUE`` commands wait to be published (more are dropped
and logged: a kick or drain is then lost, the same as a dropped link), at
most ``QUEUE`` inbound messages wait to be handled, and at most
``MAX_CONCURRENT`` remote notifies are delivered at once.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import trio

from mc.protocol import Notification, ProtocolError, Target
from mc.protocol.control import TO_WORKER, ControlMessage, Deliver, parse_control

from .links import Links
from .store import Store, StoreUnavailable

__all__ = ["Router"]

log = logging.getLogger("mc.master.routing")

QUEUE = 10_000
MAX_CONCURRENT = 256


class Router:
    def __init__(self, store: Store, links: Links, *, notify_timeout: float) -> None:
        self.store = store
        self.links = links
        self.notify_timeout = notify_timeout
        self._out_send, self._out = trio.open_memory_channel[tuple[str, bytes]](QUEUE)
        self._in_send, self._in = trio.open_memory_channel[bytes](QUEUE)
        self._ids = itertools.count(1)
        self._waiting: dict[int, Callable[[int], None]] = {}
        self.dropped = 0
        store.on_message = self._heard

    # ------------------------------------------------------------ commands

    def tell(self, worker_id: str, msg: ControlMessage) -> bool:
        """Send a one-way command to a worker linked here or to another master; never waits.

        False when it cannot be sent (no link here and no shared store, or the
        queue is full).
        """
        if worker_id in self.links:
            return self.links.tell(worker_id, msg)
        if not self.store.shared:
            return False
        data = msgpack.packb({"k": "t", "w": worker_id, "m": msg.to_wire()})
        try:
            self._out_send.send_nowait((worker_id, data))
        except trio.WouldBlock:
            self._drop("command")
            return False
        return True

    async def deliver(self, worker_ids: set[str], to: Target, frame: Notification) -> int:
        """Deliver ``frame`` on every worker in ``worker_ids``, wherever linked; the total count."""
        local = {w for w in worker_ids if w in self.links}
        remote = worker_ids - local
        if not remote or not self.store.shared:
            return await self.links.deliver(local, to, frame) if local else 0
        total = 0

        async def here() -> None:
            nonlocal total
            n = await self.links.deliver(local, to, frame)  # not `total += await`: it reads total first
            total += n

        async def there() -> None:
            nonlocal total
            n = await self._deliver_remote(remote, to, frame)
            total += n

        async with trio.open_nursery() as nursery:
            if local:
                nursery.start_soon(here)
            nursery.start_soon(there)
        return total

    async def deliver_many(self, jobs: Sequence[tuple[set[str], Target, Notification]]) -> list[int]:
        """Several deliveries at once (a batch notify); each one's total count.

        With every target linked here they share one wait (Links.deliver_many);
        else each is delivered as :meth:`deliver` does, all concurrently.
        """
        if not self.store.shared or all(w in self.links for wids, _, _ in jobs for w in wids):
            return await self.links.deliver_many(jobs)
        totals = [0] * len(jobs)

        async def one(i: int, worker_ids: set[str], to: Target, frame: Notification) -> None:
            totals[i] = await self.deliver(worker_ids, to, frame)

        async with trio.open_nursery() as nursery:
            for i, (worker_ids, to, frame) in enumerate(jobs):
                nursery.start_soon(one, i, worker_ids, to, frame)
        return totals

    async def _deliver_remote(self, worker_ids: set[str], to: Target, frame: Notification) -> int:
        try:
            masters = await self.store.masters_of(worker_ids)
        except StoreUnavailable:
            return 0
        by_master: dict[str, list[str]] = {}
        for wid, master in masters.items():
            if master != self.store.master_id:  # linked here once, but no link now
                by_master.setdefault(master, []).append(wid)
        if not by_master:
            return 0
        wire = Deliver(0, to, frame).to_wire()
        total = 0
        remaining = len(by_master)
        done = trio.Event()
        rids = []

        def reply(count: int) -> None:
            nonlocal total, remaining
            total += count
            remaining -= 1
            if remaining == 0:
                done.set()

        try:
            with trio.move_on_after(self.notify_timeout):
                for master, wids in by_master.items():
                    rid = next(self._ids)
                    self._waiting[rid] = reply
                    rids.append(rid)
                    try:
                        await self.store.publish(master, msgpack.packb(
                            {"k": "d", "r": rid, "o": self.store.master_id, "w": wids, "m": wire}))
                    except StoreUnavailable:
                        self._waiting.pop(rid, None)
                        reply(0)
                await done.wait()
        finally:
            for rid in rids:
                self._waiting.pop(rid, None)
        return total

    # ------------------------------------------------------------ the loops

    async def run(self) -> None:
        """End overdue deliveries' waits; publish queued commands and handle other masters'
        messages (with a shared store), until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.links.expire_gathers)
            if not self.store.shared:
                return
            nursery.start_soon(self._publisher)
            nursery.start_soon(self._handler, nursery)

    async def _publisher(self) -> None:
        async for worker_id, data in self._out:
            try:
                if not await self.store.tell_worker(worker_id, data):
                    log.info("no master holds worker %s; command dropped", worker_id)
            except StoreUnavailable as exc:
                self._drop(f"command ({exc})")

    def _heard(self, data: bytes) -> None:
        try:
            self._in_send.send_nowait(data)
        except trio.WouldBlock:
            self._drop("inbound message")

    async def _handler(self, nursery: trio.Nursery) -> None:
        limiter = trio.CapacityLimiter(MAX_CONCURRENT)
        async for data in self._in:
            try:
                msg: Any = msgpack.unpackb(data)
                kind = msg["k"]
                if kind == "c":
                    callback = self._waiting.pop(int(msg["r"]), None)
                    if callback is not None:
                        callback(int(msg["c"]))
                elif kind == "t":
                    self.links.tell(str(msg["w"]), parse_control(msg["m"], TO_WORKER))
                elif kind == "d":
                    command = parse_control(msg["m"], TO_WORKER)
                    if not isinstance(command, Deliver):
                        raise ValueError("not a deliver")
                    token = object()
                    await limiter.acquire_on_behalf_of(token)
                    nursery.start_soon(self._deliver_here, limiter, token, msg, command)
            except (ValueError, KeyError, TypeError, ProtocolError, msgpack.UnpackException) as exc:
                log.warning("ignored a malformed message from another master: %r", exc)

    async def _deliver_here(self, limiter: trio.CapacityLimiter, token: object, msg: Any,
                            command: Deliver) -> None:
        try:
            wids = {str(w) for w in msg["w"] if str(w) in self.links}
            count = await self.links.deliver(wids, command.to, command.frame) if wids else 0
            await self.store.publish(str(msg["o"]), msgpack.packb({"k": "c", "r": msg["r"], "c": count}))
        except StoreUnavailable:
            pass
        finally:
            limiter.release_on_behalf_of(token)

    def _drop(self, what: str) -> None:
        self.dropped += 1
        if self.dropped <= 100 or self.dropped % 1000 == 0:
            log.warning("routing between masters: dropped a %s (%d so far)", what, self.dropped)
