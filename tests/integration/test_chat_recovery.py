"""A chat owner dies under load: every member is back in its session on a live worker within 2 s.

The issue's target for "the cluster behaves as one server": 50 two-member
sessions, all owned by one worker, their members exchanging messages
through the SDK (``mc.open_chat``); the owner is killed with SIGKILL. What
makes it fast: the master sees the control link close and declares the
worker dead after its 1 s grace (``dead_link_grace``), holding the members'
re-opens meanwhile instead of sending them to the dead worker, and the SDK
retries at once after a close it did not cause.

A member counts as back when it receives a message that its partner sent
while connected to a live worker (the message carries the sender's worker id).
"""

from __future__ import annotations

import statistics

import pytest
import trio

import mc
from tests.procs import master_proc

from .cluster import start_all, wait_registered_sync, worker_for, worker_id
from .wsclient import unique

pytestmark = pytest.mark.timeout(90)

SESSIONS = 50
#: each member sends one message every SEND_EVERY seconds (100 members: ~1000 messages/s)
SEND_EVERY = 0.1
#: the issue's target
TARGET = 2.0


async def test_members_of_a_killed_owner_are_back_within_two_seconds():
    master = master_proc()  # the default 5 s lease: only the dead-link grace (1 s) is at work
    victim = worker_for(master)
    survivors = [worker_for(master), worker_for(master)]
    master.start()
    started = [victim]
    try:
        victim.start()
        wait_registered_sync(master, [worker_id(victim)])
        vid = worker_id(victim)
        killed_at: float | None = None
        back: dict[str, float] = {}  # member -> seconds from the kill to its first message via a live owner
        all_back = trio.Event()
        sends = {"ok": 0, "lost": 0}

        async def speak(chat: mc.Chat) -> None:
            n = 0
            while True:
                n += 1
                try:
                    await chat.send({"w": chat.worker, "n": n})
                    sends["ok"] += 1
                except mc.McError:  # in flight when the owner died: not resent (at-most-once)
                    sends["lost"] += 1
                await trio.sleep(SEND_EVERY)

        async def listen(chat: mc.Chat, me: str) -> None:
            async for event in chat:
                if (killed_at is not None and me not in back and isinstance(event, mc.ChatMessage)
                        and event.data["w"] != vid and chat.worker not in (None, vid)):
                    back[me] = trio.current_time() - killed_at
                    if len(back) == 2 * SESSIONS:
                        all_back.set()

        chats: list[tuple[str, mc.Chat]] = []
        all_open, go = trio.Event(), trio.Event()

        async def member(room: str, client: str) -> None:
            async with mc.open_chat(master.http, room, client=client) as chat:
                chats.append((client, chat))
                if len(chats) == 2 * SESSIONS:
                    all_open.set()
                await go.wait()
                async with trio.open_nursery() as tasks:
                    tasks.start_soon(speak, chat)
                    await listen(chat, client)

        async with trio.open_nursery() as nursery:
            for i in range(SESSIONS):
                room = unique(f"room{i}")
                nursery.start_soon(member, room, f"a{i}")
                nursery.start_soon(member, room, f"b{i}")
            with trio.fail_after(20):
                await all_open.wait()
            assert {chat.worker for _, chat in chats} == {vid}  # one owner for all 50 sessions

            # the workers that will take over join the cluster now
            await trio.to_thread.run_sync(start_all, survivors)
            started += survivors
            await trio.to_thread.run_sync(
                lambda: wait_registered_sync(master, [worker_id(w) for w in survivors]))

            go.set()
            await trio.sleep(1.0)  # under load
            assert sends["ok"] >= SESSIONS and sends["lost"] == 0, sends  # the load is on, cleanly

            killed_at = trio.current_time()
            await trio.to_thread.run_sync(victim.kill9)
            with trio.move_on_after(10):
                await all_back.wait()
            missing = sorted({c for c, _ in chats} - back.keys())
            if missing:
                state = {c: (chat.worker, chat.members, chat._link.last_error)
                         for c, chat in chats if c in missing[:6]}
                rooms = {chat.session for c, chat in chats if c in missing}
                logs = "\n".join(line for p in (master, *survivors) for line in p.output().splitlines()
                                  if any(r in line for r in rooms))
                raise AssertionError(f"{len(missing)} members never came back: {state}\n{logs[-4000:]}")
            times = sorted(back.values())
            median, worst = statistics.median(times), times[-1]
            owners = {chat.worker for _, chat in chats}
            print(f"\n[chat recovery] {SESSIONS} sessions x 2 members, owner killed -9 under "
                  f"~{2 * SESSIONS / SEND_EVERY:.0f} msg/s: members back in median {median:.2f}s, "
                  f"max {worst:.2f}s (target {TARGET}s); new owners {sorted(owners)}; "
                  f"{sends['lost']} sends lost in flight")
            assert vid not in owners
            # each session lives on one worker again: both members are on the same one
            by_room: dict[str, set[str | None]] = {}
            for _, chat in chats:
                by_room.setdefault(chat.session, set()).add(chat.worker)
            assert all(len(w) == 1 for w in by_room.values()), by_room
            nursery.cancel_scope.cancel()
        assert worst < TARGET, times[-10:]
    finally:
        for p in reversed(started):
            p.stop()
        master.stop()
