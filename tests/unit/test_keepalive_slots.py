"""Keep-alive pings spread over the heartbeat (WorkerCore's ping slots).

Each scan pings one slot; a connection gets a slot as it opens. So every
connection is pinged once per heartbeat, its first ping comes between half a
heartbeat and one heartbeat after it opened (after its welcome), and a mass
connect never makes one scan ping everybody.
"""

from __future__ import annotations

import math
from collections import Counter

import attrs

from mc.worker.peer import Peer
from tests.unit.test_core import FakeSink, connect, make_core

HB = 10.0  # 10 slots, one scan a second


def _pings(sink: FakeSink, conns: list[Peer]) -> Counter[Peer]:
    return Counter({c: sink.got(c).count("PING") for c in conns})


def test_a_mass_connect_is_pinged_in_slices_once_per_heartbeat() -> None:
    core, sink = make_core(heartbeat=HB)
    conns = [connect(core, f"/v1/app?client=c{i}", 0.0) for i in range(1000)]
    for c in conns:
        sink.got(c)  # the welcomes
    first: dict[Peer, float] = {}
    per_scan = []
    counts: Counter[Peer] = Counter()
    for t in range(1, 31):
        for c in conns:  # every connection answers (it stays open)
            core.received(c, b"", float(t))
        core.tick(float(t))
        got = _pings(sink, conns)
        per_scan.append(sum(got.values()))
        for c, n in got.items():
            if n:
                first.setdefault(c, float(t))
        counts += got
    assert set(counts.values()) == {3}  # 30 s: three pings each, never two in one heartbeat
    assert max(per_scan) <= math.ceil(1000 / (HB / 2))  # spread over half the slots at least
    assert all(HB / 2 <= t <= HB for t in first.values())  # after the welcome, within a heartbeat


def test_connections_opened_over_time_fill_every_slot_evenly() -> None:
    core, _ = make_core(heartbeat=HB)
    conns = []
    for t in range(100):  # ten a second
        core.tick(t / 10)
        conns.append(connect(core, f"/v1/app?client=c{t}", t / 10))
    slots = Counter(c.ping_slot for c in conns)
    assert sorted(slots) == list(range(10)) and max(slots.values()) - min(slots.values()) <= 2


def test_a_heartbeat_reload_keeps_every_connection_pinged() -> None:
    core, sink = make_core(heartbeat=HB)
    conns = [connect(core, f"/v1/app?client=c{i}", 0.0) for i in range(50)]
    core.reload(attrs.evolve(core.config, heartbeat=4.0), None, 0.0)
    for c in conns:
        sink.got(c)
    counts: Counter[Peer] = Counter()
    for step in range(1, 17):  # 16 s at the new 1 s scan: four pings each
        t = float(step)
        for c in conns:
            core.received(c, b"", t)
        core.tick(t)
        counts += _pings(sink, conns)
    assert set(counts.values()) == {4}
