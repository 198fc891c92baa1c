"""Consumer groups on one real worker: each message to exactly one live member."""

from __future__ import annotations

from collections import Counter
from contextlib import AsyncExitStack

import pytest
import trio

from .wsclient import JSON, MSGPACK, PROTOCOLS, connect, raw_connect, unique

pytestmark = pytest.mark.timeout(60)


def datas(frames):
    return [f["data"] for f in frames if f["type"] == "message"]


async def consumers(stack: AsyncExitStack, worker, n: int, proto: str):
    return [await stack.enter_async_context(
        connect(worker.url, "/v1/consumer", proto=proto, name=unique("member"))) for _ in range(n)]


async def publisher(stack: AsyncExitStack, worker, proto: str):
    return await stack.enter_async_context(
        connect(worker.url, "/v1/app", proto=proto, client=unique("pub")))


async def group_of(stack: AsyncExitStack, worker, n: int, proto: str, topic: str, group: str):
    """``n`` consumers subscribed to ``topic`` in ``group``, and a publishing app."""
    members = await consumers(stack, worker, n, proto)
    app = await publisher(stack, worker, proto)
    for m in members:
        await m.ack({"type": "subscribe", "topic": topic, "group": group, "id": "s"})
    return members, app


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_group_shares_messages_exactly_once(worker, proto):
    topic, group = unique("jobs"), unique("workers")
    n = 60
    async with AsyncExitStack() as stack:
        members = await consumers(stack, worker, 3, proto)
        plain = await stack.enter_async_context(
            connect(worker.url, "/v1/consumer", proto=JSON, name=unique("audit")))
        app = await publisher(stack, worker, proto)
        for m in members:
            await m.ack({"type": "subscribe", "topic": topic, "group": group, "id": "s"})
        await plain.ack({"type": "subscribe", "topic": topic, "id": "s"})
        for i in range(n):
            ack = await app.ack({"type": "publish", "topic": topic, "data": i, "id": f"p{i}"})
            assert ack["delivered"] == 2  # one group member + the plain subscriber
        got = [datas(await m.fence()) for m in members]
        everything = [x for g in got for x in g]
        assert sorted(everything) == list(range(n))  # total = n, no duplicates
        assert all(g == sorted(g) for g in got)  # each member sees its share in order
        assert all(len(g) > 0 for g in got), [len(g) for g in got]  # the load is spread
        assert datas(await plain.fence()) == list(range(n))  # plain subscribers get everything


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_separate_groups_each_get_every_message(worker, proto):
    topic = unique("ev")
    g1, g2 = unique("g1"), unique("g2")
    async with AsyncExitStack() as stack:
        a = await consumers(stack, worker, 2, proto)
        b = await consumers(stack, worker, 2, MSGPACK)
        app = await publisher(stack, worker, proto)
        for m in a:
            await m.ack({"type": "subscribe", "topic": topic, "group": g1, "id": "s"})
        for m in b:
            await m.ack({"type": "subscribe", "topic": topic, "group": g2, "id": "s"})
        for i in range(20):
            assert (await app.ack({"type": "publish", "topic": topic, "data": i, "id": f"p{i}"}))[
                "delivered"] == 2
        for grp in (a, b):
            got = [x for m in grp for x in datas(await m.fence())]
            assert sorted(got) == list(range(20))


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_group_skips_paused_member_and_resumes(worker, proto):
    topic, group = unique("jobs"), unique("grp")
    async with AsyncExitStack() as stack:
        members, app = await group_of(stack, worker, 3, proto, topic, group)
        await members[0].ack({"type": "pause", "id": "pz"})
        for i in range(30):
            assert (await app.ack({"type": "publish", "topic": topic, "data": i, "id": f"p{i}"}))[
                "delivered"] == 1
        assert datas(await members[0].fence()) == []
        rest = datas(await members[1].fence()) + datas(await members[2].fence())
        assert sorted(rest) == list(range(30))
        # every member paused: the group gets nothing and the publish reaches no one
        for m in members[1:]:
            await m.ack({"type": "pause", "id": "pz"})
        assert (await app.ack({"type": "publish", "topic": topic, "data": "lost", "id": "x"}))[
            "delivered"] == 0
        # resumed, the member takes part again
        await members[0].ack({"type": "resume", "id": "rs"})
        for i in range(30, 40):
            assert (await app.ack({"type": "publish", "topic": topic, "data": i, "id": f"p{i}"}))[
                "delivered"] == 1
        assert datas(await members[0].fence()) == list(range(30, 40))
        assert datas(await members[1].fence()) == datas(await members[2].fence()) == []


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_group_member_leaving(worker, proto):
    topic, group = unique("jobs"), unique("grp")
    async with AsyncExitStack() as stack:
        members, app = await group_of(stack, worker, 2, proto, topic, group)
        # unsubscribe one: the other gets everything
        await members[0].ack({"type": "unsubscribe", "topic": topic, "group": group, "id": "u"})
        for i in range(10):
            await app.ack({"type": "publish", "topic": topic, "data": i, "id": f"p{i}"})
        assert datas(await members[0].fence()) == []
        assert datas(await members[1].fence()) == list(range(10))
        # a member that disconnects is forgotten; a late joiner shares again
        async with connect(worker.url, "/v1/consumer", proto=proto, name=unique("late")) as late:
            await late.ack({"type": "subscribe", "topic": topic, "group": group, "id": "s"})
            for i in range(10, 30):
                assert (await app.ack({"type": "publish", "topic": topic, "data": i, "id": f"p{i}"}))[
                    "delivered"] == 1
            got = Counter(datas(await members[1].fence()) + datas(await late.fence()))
            assert sorted(got) == list(range(10, 30)) and max(got.values()) == 1
        for i in range(30, 35):
            assert (await app.ack({"type": "publish", "topic": topic, "data": i, "id": f"p{i}"}))[
                "delivered"] == 1
        assert datas(await members[1].fence()) == list(range(30, 35))


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_group_spans_patterns_and_counts_a_connection_once(worker, proto):
    root, group = unique("r"), unique("grp")
    async with AsyncExitStack() as stack:
        members = await consumers(stack, worker, 2, proto)
        app = await publisher(stack, worker, proto)
        await members[0].ack({"type": "subscribe", "topic": f"{root}.*", "group": group, "id": "s"})
        await members[1].ack({"type": "subscribe", "topic": f"{root}.>", "group": group, "id": "s"})
        # the same connection in a group and also plainly subscribed gets a message once
        await members[0].ack({"type": "subscribe", "topic": f"{root}.a", "id": "s2"})
        delivered = []
        for i in range(20):
            ack = await app.ack({"type": "publish", "topic": f"{root}.a", "data": i, "id": f"p{i}"})
            delivered.append(ack["delivered"])
        first, second = datas(await members[0].fence()), datas(await members[1].fence())
        assert first == list(range(20))  # plain subscription: all of them, once each
        # the group's share went to members[1] exactly when the ack counted two connections
        # (to members[0], already written to by its plain subscription, it counts once)
        assert second == [i for i, n in enumerate(delivered) if n == 2], (second, delivered)
        assert set(delivered) <= {1, 2}
        # ties rotate: with nothing queued anywhere the group alternates between its members
        assert 0 < len(second) < 20, delivered



PAD = "x" * 16_000  # ~16 KB per message: a member that stops reading fills its buffers soon
BATCH = 50
MAX_BATCHES = 40


async def test_group_prefers_the_member_that_keeps_up(worker):
    """The least busy member gets the message. A member that stops reading
    shares the messages only until its socket buffers are full (frames then
    wait for it); from then on every message goes to the member that reads.
    When the stuck one reads again, it has every message it was given: none lost."""
    topic, group = unique("jobs"), unique("grp")
    async with AsyncExitStack() as stack:
        stuck = await stack.enter_async_context(
            raw_connect(worker.url, "/v1/consumer", name=unique("stuck"), rcvbuf=4096))
        reader = await stack.enter_async_context(
            connect(worker.url, "/v1/consumer", name=unique("reader")))
        app = await publisher(stack, worker, MSGPACK)
        await stuck.send({"type": "subscribe", "topic": topic, "group": group, "id": "s"})
        assert await stuck.recv() == {"type": "ack", "id": "s"}
        await reader.ack({"type": "subscribe", "topic": topic, "group": group, "id": "s"})
        got_reader: list[int] = []
        published = whole_batches = 0
        # publish in batches until two batches in a row went entirely to the reader
        for _ in range(MAX_BATCHES):
            batch = range(published, published + BATCH)
            for i in batch:
                ack = await app.ack({"type": "publish", "topic": topic,
                                     "data": {"i": i, "pad": PAD}, "id": f"p{i}"})
                assert ack["delivered"] == 1
            published += BATCH
            got_reader += [m["i"] for m in datas(await reader.fence(10))]
            whole_batches = whole_batches + 1 if got_reader[-BATCH:] == list(batch) else 0
            if whole_batches == 2:
                break
        assert whole_batches == 2, f"the reader never got every message of a batch: {len(got_reader)}"
        got_stuck: list[int] = []
        with trio.fail_after(20):
            while len(got_stuck) + len(got_reader) < published:  # now the stuck one reads
                frame = await stuck.recv(10)
                if frame["type"] == "message":
                    got_stuck.append(frame["data"]["i"])
        print(f"\n[groups] {published} published: reader got {len(got_reader)}, "
              f"the stuck member {len(got_stuck)} (all before it stopped keeping up)")
        assert sorted(got_reader + got_stuck) == list(range(published))  # each exactly once
        assert max(got_stuck) < published - 2 * BATCH
