"""The balancer: least loaded by (reported + assigned since) / capacity, bursts spread."""

from __future__ import annotations

from collections import Counter

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from mc.master.balancer import Balancer
from mc.master.registry import DRAINING, UP, Metrics, Registry, WorkerInfo


def worker(
    wid: str, connections: int = 0, capacity: int = 100, state: str = UP, seen: float = 0.0
) -> WorkerInfo:
    metrics = Metrics(connections=connections)
    return WorkerInfo(wid, f"ws://{wid}", capacity, state, metrics, 0.0, seen)


def reported(w: WorkerInfo, connections: int, seen: float) -> WorkerInfo:
    """The snapshot after a heartbeat: new figures, new last_seen."""
    return attrs.evolve(w, metrics=Metrics(connections=connections), last_seen=seen)


def test_no_workers_or_none_eligible() -> None:
    b = Balancer()
    assert b.assign([]) is None
    full = worker("w1", connections=10, capacity=10)
    draining = worker("w2", state=DRAINING)
    assert b.assign([full, draining]) is None


def test_least_loaded_by_ratio() -> None:
    b = Balancer()
    big = worker("big", connections=50, capacity=1000)  # 5 %
    small = worker("small", connections=2, capacity=10)  # 20 %
    assert b.assign([small, big]) is big


def test_ties_fewer_connections_then_id() -> None:
    b = Balancer()
    a = worker("a", connections=10, capacity=100)
    z = worker("z", connections=1, capacity=10)  # same 10 %, fewer connections
    assert b.assign([a, z]) is z
    b = Balancer()
    assert b.assign([worker("b"), worker("a")]).id == "a"  # type: ignore[union-attr]


def test_burst_within_one_heartbeat_spreads_evenly() -> None:
    b = Balancer()
    ws = [worker(f"w{i}") for i in range(4)]
    picks = Counter(b.assign(ws).id for _ in range(40))  # type: ignore[union-attr]
    assert picks == {"w0": 10, "w1": 10, "w2": 10, "w3": 10}


def test_burst_fills_proportionally_to_capacity_and_stops_at_capacity() -> None:
    b = Balancer()
    ws = [worker("small", capacity=10), worker("big", capacity=30)]
    picks = Counter(b.assign(ws).id for _ in range(40))  # type: ignore[union-attr]
    assert picks == {"small": 10, "big": 30}
    assert b.assign(ws) is None


def test_fresh_report_replaces_pending_assignments() -> None:
    b = Balancer()
    w1, w2 = worker("w1"), worker("w2", connections=3)
    for _ in range(5):
        b.assign([w1, w2])
    assert (b.load(w1), b.load(w2)) == (4, 4)
    # w1 reports: the apps sent to it are now in its figures (or went elsewhere)
    w1 = reported(w1, connections=2, seen=1.0)
    assert b.load(w1) == 2
    assert b.assign([w1, w2]) is w1


def test_forgets_workers_no_longer_shown() -> None:
    b = Balancer()
    ws = [worker(f"w{i}") for i in range(5)]
    for _ in range(5):
        b.assign(ws)
    b.assign(ws[:1])
    assert len(b._pending) <= 1


def test_with_registry_skips_lapsed_and_draining() -> None:
    reg = Registry(lease=5.0)
    for wid in ("w1", "w2", "w3"):
        reg.register(wid, f"ws://{wid}", capacity=10, now=0.0)
    reg.heartbeat("w2", Metrics(connections=1), now=3.0)
    reg.heartbeat("w3", Metrics(connections=5), now=3.0)
    reg.set_draining("w2")
    b = Balancer()
    chosen = b.assign(reg.workers(6.0))  # w1 lapsed, w2 draining
    assert chosen is not None and chosen.id == "w3"


# ---------------------------------------------------------------- properties

workers_st = st.lists(
    st.builds(
        worker,
        wid=st.sampled_from(["a", "b", "c", "d", "e"]),
        connections=st.integers(0, 12),
        capacity=st.integers(1, 12),
        state=st.sampled_from([UP, UP, DRAINING]),
    ),
    max_size=5,
    unique_by=lambda w: w.id,
)


@settings(max_examples=300, deadline=None)
@given(
    initial=workers_st,
    steps=st.lists(
        st.one_of(
            st.just(("assign", 0, 0)),
            st.tuples(st.just("report"), st.integers(0, 4), st.integers(0, 12)),
        ),
        max_size=40,
    ),
)
def test_assign_is_always_an_eligible_worker_with_minimal_load(
    initial: list[WorkerInfo], steps: list[tuple[str, int, int]]
) -> None:
    """Check every choice against loads tracked independently of the balancer."""
    b = Balancer()
    ws = list(initial)
    pending = {w.id: 0 for w in ws}  # assigned since that worker's last report
    clock = 0.0
    for kind, index, connections in steps:
        if kind == "report":
            if ws:
                clock += 1.0
                i = index % len(ws)
                ws[i] = reported(ws[i], connections, clock)
                pending[ws[i].id] = 0
            continue
        load = {w.id: w.metrics.connections + pending[w.id] for w in ws}
        eligible = [w for w in ws if w.state == UP and load[w.id] < w.capacity]
        chosen = b.assign(ws)
        if not eligible:
            assert chosen is None
            continue
        assert chosen is not None and chosen in eligible
        best = min(load[w.id] / w.capacity for w in eligible)
        assert load[chosen.id] / chosen.capacity == best
        pending[chosen.id] += 1


@settings(max_examples=100, deadline=None)
@given(
    connections=st.lists(st.integers(0, 50), min_size=1, max_size=6),
    burst=st.integers(1, 200),
)
def test_burst_spreads_like_water_filling(connections: list[int], burst: int) -> None:
    """With equal capacities, a burst inside one heartbeat levels the loads.

    After it, no worker that got an assignment is more than one above any other
    worker's load: each app went to the lowest level at the time.
    """
    b = Balancer()
    ws = [worker(f"w{i}", connections=c, capacity=1000) for i, c in enumerate(connections)]
    got = Counter(b.assign(ws).id for _ in range(burst))  # type: ignore[union-attr]
    loads = {w.id: b.load(w) for w in ws}
    assert sum(got.values()) == burst
    low = min(loads.values())
    for wid in got:
        assert loads[wid] <= low + 1
