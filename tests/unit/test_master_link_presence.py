"""The control link's presence merging (mc/worker/master_link.py): a run of app
announcements queued together goes to the master as one ``presence``, and its
one ``recorded`` welcomes every app it stood for."""

from __future__ import annotations

from typing import Any

from mc.protocol.control import PRESENCE_CHUNK, ControlMessage, Heartbeat, Metrics, Presence, Recorded
from mc.worker.master_link import MasterLink


class Core:
    resync_needed = False

    def __init__(self) -> None:
        self.got: list[ControlMessage] = []

    def control(self, message: ControlMessage, now: float) -> None:
        self.got.append(message)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the link should not call {name}")


def announce(i: int) -> Presence:
    return Presence(((f"c{i}", "default"),), id=i)


def link() -> tuple[MasterLink, Core]:
    core = Core()
    return MasterLink(core, ("http://m",), "ws://w", "w1"), core  # type: ignore[arg-type]


async def test_a_run_of_announcements_becomes_one_presence_and_one_recorded_welcomes_all() -> None:
    ml, core = link()
    merged = ml._merge_presence([announce(1), announce(2), announce(3)])
    assert merged == Presence(tuple((f"c{i}", "default") for i in (1, 2, 3)), id=1)
    ml._handle(Recorded(1))
    assert core.got == [Recorded(1), Recorded(2), Recorded(3)]
    ml._handle(Recorded(1))  # a second reply for it is the core's business alone
    assert core.got[3:] == [Recorded(1)]


def test_other_messages_keep_their_place_and_split_the_runs() -> None:
    ml, _ = link()
    beat = Heartbeat(Metrics(connections=1))
    gone = Presence(removed=(("x", "default"),))
    merged = ml._merge_presence([announce(1), announce(2), beat, announce(3), gone, announce(4), announce(5)])
    assert merged == [
        Presence((("c1", "default"), ("c2", "default")), id=1), beat, announce(3), gone,
        Presence((("c4", "default"), ("c5", "default")), id=4),
    ]


async def test_a_merged_presence_stays_within_the_chunk() -> None:
    ml, core = link()
    n = PRESENCE_CHUNK + 10
    merged = ml._merge_presence([announce(i) for i in range(1, n + 1)])
    assert isinstance(merged, list) and [len(m.added) for m in merged] == [PRESENCE_CHUNK, 10]
    for m in merged:
        ml._handle(Recorded(m.id))
    assert core.got == [Recorded(i) for i in range(1, n + 1)]
