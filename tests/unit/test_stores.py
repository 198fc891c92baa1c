"""The registry's state machine (tests/unit/test_registry.py) against both Stores.

The same rules and model drive :class:`MemoryStore` (the pure registry behind
the async seam) and :class:`RedisStore` (the Lua scripts on a real
``redis-server``, flushed before each example; fewer examples, as each step is
a few round trips). The machine is synchronous, so it runs in a thread and
reaches the stores through ``trio.from_thread``.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from mc.master.registry import Registry
from mc.master.store import MemoryStore, Store
from tests.redisproc import available, redis_server
from tests.unit.test_registry import LEASE, RegistryMachine

pytestmark = pytest.mark.timeout(120)


class SyncStore:
    """A Store's async methods as the Registry's sync ones (called from a worker thread)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def version(self) -> int:
        return trio.from_thread.run(self._store.version)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return trio.from_thread.run(functools.partial(method, *args, **kwargs))

        return call


async def _run_machine(fresh: Any, examples: int, steps: int) -> None:
    class Machine(RegistryMachine):
        def make_registry(self) -> Any:
            return SyncStore(trio.from_thread.run(fresh))

    await trio.to_thread.run_sync(functools.partial(
        run_state_machine_as_test, Machine,
        settings=settings(max_examples=examples, stateful_step_count=steps, deadline=None)))


async def test_memory_store_matches_model() -> None:
    async def fresh() -> Store:
        return MemoryStore(Registry(lease=LEASE))

    await _run_machine(fresh, 60, 40)


@pytest.mark.skipif(not available(), reason="no redis-server (apt-get install redis-server)")
async def test_redis_store_matches_model() -> None:
    from mc.master.redis_store import open_redis_store

    with redis_server() as redis:
        async with open_redis_store(redis.url, master_id="test", lease=LEASE, listen=False) as store:
            async def fresh() -> Store:
                await store.flush()
                return store

            await _run_machine(fresh, 40, 30)


@pytest.mark.skipif(not available(), reason="no redis-server (apt-get install redis-server)")
async def test_redis_store_between_masters() -> None:
    """Two RedisStores on one Redis: one claim winner, the master each worker is linked to,
    dedup across them, and a lapse only by the master the worker is linked to."""
    from mc.master.redis_store import open_redis_store

    with redis_server() as redis:
        async with open_redis_store(redis.url, master_id="A", lease=LEASE) as a, \
                open_redis_store(redis.url, master_id="B", lease=LEASE) as b:
            now = a.now()
            await a.register("w1", "ws://w1", capacity=10, now=now)
            await b.register("w2", "ws://w2", capacity=10, now=now)
            assert await a.masters_of(["w1", "w2", "nobody"]) == {"w1": "A", "w2": "B"}
            got = await a.locate([("room", "w1")], now=now)
            assert got[0].owner == "w1" and got[0].url == "ws://w1"
            assert (await b.locate([("room", "w2"), ("room", None)], now=now))[1].owner == "w1"
            assert not await a.seen_notify_id("n1", now=now)
            assert await b.seen_notify_id("n1", now=now)
            assert not await b.lapse("w1", now)  # w1 is linked to A, not B
            assert await a.lapse("w1", now)
            assert await a.expire(now + 0.001) == ["w1"]
            assert await b.lookup_session("room") is None
            with trio.fail_after(2):  # b heard the version move
                while b.version_hint != await a.version():
                    await trio.sleep(0.01)
