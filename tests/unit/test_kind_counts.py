"""The heartbeat's ``connections.<kind>`` counters come from counts the core keeps
as connections open and close, not from a walk over every connection."""

from __future__ import annotations

from collections import Counter

from mc.protocol import CloseCode
from mc.worker.metrics import counters
from tests.unit.test_core import connect, make_core


def _walked(core) -> dict[str, int]:
    return {f"connections.{k}": n for k, n in Counter(c.kind for c in core.connections).items()}


def test_counts_follow_opens_closes_and_losses() -> None:
    core, _ = make_core()
    apps = [connect(core, f"/v1/app?client=a{i}") for i in range(5)]
    consumers = [connect(core, f"/v1/consumer?name=c{i}") for i in range(3)]
    members = [connect(core, f"/v1/chat/room?client=m{i}") for i in range(2)]

    def conn_counters() -> dict[str, int]:
        return {k: v for k, v in counters(core).items() if k.startswith("connections.")}

    assert conn_counters() == _walked(core) == {
        "connections.app": 5, "connections.consumer": 3, "connections.chat": 2}
    core.close(apps[0], CloseCode.NORMAL, "bye", 1.0)  # closing: still a connection
    assert conn_counters() == _walked(core)
    for conn in [apps[0], apps[1], consumers[0], *members]:
        core.closed(conn, 2.0)
    core.closed(apps[1], 2.5)  # reported twice: counted once
    assert conn_counters() == _walked(core) == {"connections.app": 3, "connections.consumer": 2}
