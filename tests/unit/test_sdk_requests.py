"""The pending-request table and the drop-oldest event inbox."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mc.client import McError
from mc.client.inbox import Inbox
from mc.client.requests import Pending
from mc.protocol import Ack, Error


async def test_ack_and_error_reach_their_request():
    table = Pending()
    rid1, slot1 = table.add()
    rid2, slot2 = table.add()
    assert rid1 != rid2 and len(table) == 2
    assert table.resolve(Error("bad_request", "topic is wrong", rid2))
    assert table.resolve(Ack(rid1, delivered=3))
    assert (await slot1.wait()).delivered == 3
    with pytest.raises(McError) as info:
        await slot2.wait()
    assert (info.value.code, info.value.reason) == ("bad_request", "topic is wrong")
    assert len(table) == 0


async def test_unknown_or_missing_ids_are_not_matched():
    table = Pending()
    table.add()
    assert not table.resolve(Ack("nobody"))
    assert not table.resolve(Error("internal", "x", None))


async def test_ids_differ_between_tables():
    assert Pending().add()[0] != Pending().add()[0]


async def test_fail_all():
    table = Pending()
    slots = [table.add()[1] for _ in range(3)]
    table.fail_all(McError.unavailable("connection lost"))
    for slot in slots:
        with pytest.raises(McError, match="connection lost"):
            await slot.wait()
    assert len(table) == 0


async def test_inbox_drops_the_oldest_when_full():
    inbox: Inbox[int] = Inbox(3)
    for i in range(5):
        inbox.put(i)
    assert inbox.dropped == 2
    inbox.close()
    assert [i async for i in inbox] == [2, 3, 4]


async def test_inbox_failure_comes_after_the_buffered_events():
    inbox: Inbox[str] = Inbox(10)
    inbox.put("a")
    inbox.close(McError("unavailable", "replaced", close_code=4009))
    inbox.put("ignored after close")
    assert await inbox.get() == "a"
    with pytest.raises(McError, match="replaced"):
        await inbox.get()


async def test_inbox_get_waits_for_an_event():
    inbox: Inbox[int] = Inbox(1)

    async def later() -> None:
        await trio.testing.wait_all_tasks_blocked()  # get() is parked
        inbox.put(7)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        with trio.fail_after(1):
            assert await inbox.get() == 7
