"""Links.deliver_many's scatter-gather: replies summed per job, one shared timeout task for the waits."""

from __future__ import annotations

import trio
import trio.testing

from mc.master.links import Links, WorkerLink
from mc.protocol.codec import MSGPACK
from mc.protocol.control import Deliver
from mc.protocol.frames import Notification, Target

TIMEOUT = 5.0
TO = Target.parse({"client": "c"})


def _frame(n: int) -> Notification:
    return Notification({"n": n}, "api", f"id{n}", f"trace{n}")


def _links(*workers: str) -> tuple[Links, dict[str, WorkerLink]]:
    links = Links(notify_timeout=TIMEOUT)
    by_id = {w: WorkerLink(w, 100, MSGPACK) for w in workers}
    for link in by_id.values():
        links.attach(link)
    return links, by_id


def _asked(link: WorkerLink) -> list[Deliver]:
    out = []
    while True:
        try:
            msg = link.receive_channel.receive_nowait()
        except trio.WouldBlock:
            return out
        assert isinstance(msg, Deliver)
        out.append(msg)


async def test_counts_are_summed_per_job_and_a_silent_worker_counts_zero_at_the_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    links, by_id = _links("a", "b")
    result: list[int] = []
    ended: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(links.expire_gathers)
        started = trio.current_time()

        async def deliver() -> None:
            result.extend(await links.deliver_many([({"a", "b"}, TO, _frame(1)), ({"a"}, TO, _frame(2))]))
            ended.append(trio.current_time())
        nursery.start_soon(deliver)
        await trio.sleep(0.1)
        for msg in _asked(by_id["a"]):
            links.replied(by_id["a"], msg.id, 3)  # "b" never answers
        await trio.sleep(TIMEOUT - 0.5)
        assert result == []  # still waiting for "b"
        await trio.sleep(1)
        assert result == [3, 3]
        assert ended == [started + TIMEOUT]
        assert not by_id["b"].pending  # the unanswered request is forgotten
        nursery.cancel_scope.cancel()


async def test_answered_deliveries_end_at_once_and_later_ones_still_time_out(
        autojump_clock: trio.testing.MockClock) -> None:
    links, by_id = _links("a")
    ends: dict[int, float] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(links.expire_gathers)

        async def deliver(n: int) -> None:
            await links.deliver_many([({"a"}, TO, _frame(n))])
            ends[n] = trio.current_time()
        start = trio.current_time()
        for n in range(3):
            nursery.start_soon(deliver, n)
            await trio.sleep(1)
        asked = _asked(by_id["a"])
        links.replied(by_id["a"], asked[1].id, 1)  # only the middle one is answered
        await trio.testing.wait_all_tasks_blocked()
        assert set(ends) == {1}
        await trio.sleep(TIMEOUT + 3)
        assert ends[0] - start == TIMEOUT
        assert ends[2] - start == 2 + TIMEOUT
        assert not links._due and not links._waiting
        nursery.cancel_scope.cancel()


async def test_a_closed_link_ends_its_wait_with_zero(autojump_clock: trio.testing.MockClock) -> None:
    links, by_id = _links("a")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(links.expire_gathers)
        with trio.fail_after(1):
            async with trio.open_nursery() as inner:
                inner.start_soon(lambda: links.deliver_many([({"a"}, TO, _frame(1))]))
                await trio.sleep(0.1)
                links.detach(by_id["a"])
        nursery.cancel_scope.cancel()


async def test_no_linked_worker_is_no_wait() -> None:
    links, _ = _links()
    with trio.fail_after(1):  # no expiry task running: nothing to wait for
        assert await links.deliver_many([({"gone"}, TO, _frame(1))]) == [0]
