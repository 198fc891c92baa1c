"""MasterState's handling of a lost control link, on trio's virtual clock (no sockets).

A link that closes without a leave cuts the worker's lease to the dead-link
grace: the expiry loop purges it at the grace's end (not at its next tick),
the balancer skips it meanwhile and chat handshakes for its sessions wait.
"""

from __future__ import annotations

import trio

from mc.master.config import MasterConfig
from mc.master.links import WorkerLink
from mc.master.state import MasterState
from mc.protocol import MSGPACK


def cluster(*ids: str, **config: float) -> tuple[MasterState, dict[str, WorkerLink]]:
    state = MasterState(MasterConfig(**config))  # type: ignore[arg-type]
    links = {}
    for wid in ids:
        state.registry.register(wid, f"ws://{wid}", capacity=10, now=trio.current_time())
        links[wid] = WorkerLink(wid, 10, MSGPACK)
        state.links.attach(links[wid])
    return state, links


async def lose(state: MasterState, link: WorkerLink) -> float:
    """What control_endpoint's teardown does; when it happened."""
    assert state.links.detach(link)
    await state.link_lost(link.worker_id)
    return trio.current_time()


async def test_lost_link_is_purged_at_the_grace_not_the_next_tick(autojump_clock: trio.abc.Clock) -> None:
    state, links = cluster("w1", "w2", lease=5.0, dead_link_grace=1.0)
    state.registry.claim_session("s", "w1", now=trio.current_time())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(state.expire_loop)
        await trio.sleep(0.33)  # out of step with the loop's 0.5 s tick
        lost = await lose(state, links["w1"])
        assert state.suspect("w1") and not state.suspect("w2")
        for _ in range(5):  # nobody is sent to it meanwhile
            assert (info := await state.assign()) is not None and info.id == "w2"
        await trio.sleep(0.99)
        assert state.registry.worker("w1") is not None  # still within the grace
        while state.registry.worker("w1") is not None:
            await trio.sleep(0.001)
        assert 1.0 < trio.current_time() - lost <= 1.02
        assert state.registry.lookup_session("s") is None
        assert not state.suspect("w1") and state._lapsed == {}
        nursery.cancel_scope.cancel()


async def test_chat_handshake_waits_for_a_suspect_owner(autojump_clock: trio.abc.Clock) -> None:
    state, links = cluster("w1", "w2", dead_link_grace=1.0)
    state.registry.claim_session("s", "w1", now=trio.current_time())
    state.registry.claim_session("t", "w2", now=trio.current_time())
    lost = await lose(state, links["w1"])
    start = trio.current_time()
    await state.owner_settled("t")  # a live owner: at once
    await state.owner_settled("nobody")  # no owner: at once
    assert trio.current_time() == start
    await state.owner_settled("s")
    assert 1.0 < trio.current_time() - lost <= 1.1  # then the session is free
    assert state.registry.lookup_session("s") is None


async def test_worker_back_within_the_grace_keeps_its_state(autojump_clock: trio.abc.Clock) -> None:
    state, links = cluster("w1", "w2", lease=5.0, dead_link_grace=1.0)
    state.registry.claim_session("s", "w1", now=trio.current_time())
    state.registry.presence_delta("w1", [("alice", "phone")], [])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(state.expire_loop)
        await lose(state, links["w1"])
        waiting = trio.Event()

        async def handshake() -> None:
            await state.owner_settled("s")
            waiting.set()

        nursery.start_soon(handshake)
        await trio.sleep(0.4)
        assert not waiting.is_set()
        # it registers again over a new link (what control.py's _register does)
        state.registry.register("w1", "ws://w1", capacity=10, now=trio.current_time())
        state.links.attach(WorkerLink("w1", 10, MSGPACK))
        assert not state.suspect("w1")
        await trio.sleep(0.1)
        assert waiting.is_set()  # the waiting handshake goes on, to the same owner
        await trio.sleep(3.0)  # well past the grace
        assert state.registry.lookup_session("s") is not None
        assert state.registry.client_connections("alice") == [("w1", "phone")]
        assert state._lapsed == {}
        nursery.cancel_scope.cancel()


async def test_replaced_or_left_links_cost_nothing(autojump_clock: trio.abc.Clock) -> None:
    state, links = cluster("w1", "w2", dead_link_grace=1.0)
    newer = WorkerLink("w1", 10, MSGPACK)
    state.links.attach(newer)  # w1 reconnected before the old link's teardown ran
    assert not state.links.detach(links["w1"])  # so the old teardown lapses nothing
    state.registry.remove("w2")  # w2 left in order; then its link closes
    assert state.links.detach(links["w2"])
    await state.link_lost("w2")
    assert state._lapsed == {}
    await trio.sleep(2.0)
    await state.purge_lapsed()
    assert [w.id for w in await state.live_workers()] == ["w1"]


async def test_zero_grace_is_dead_at_once(autojump_clock: trio.abc.Clock) -> None:
    state, links = cluster("w1", dead_link_grace=0.0)
    await lose(state, links["w1"])
    await trio.sleep(0.001)
    await state.purge_lapsed()
    assert await state.live_workers() == [] and await state.assign() is None
