"""A two-terminal chat with the mc SDK.

Start a cluster (``mc up``), then in one terminal::

    python examples/chat.py room-1 alice

and in another::

    python examples/chat.py room-1 bob

Type lines to send them; Ctrl-D leaves, Ctrl-C quits. Set ``MC_MASTER`` to
use a master other than http://127.0.0.1:7100.
"""

from __future__ import annotations

import os
import sys

import trio

import mc

MASTER = os.environ.get("MC_MASTER", "http://127.0.0.1:7100")


async def show(chat: mc.Chat) -> None:
    """Print what the others say, and who comes and goes."""
    async for event in chat:
        if isinstance(event, mc.ChatMessage):
            print(f"{event.sender}: {event.data}")
        elif isinstance(event, mc.Joined):
            print(f"* {event.client} joined (members: {', '.join(chat.members)})")
        else:
            print(f"* {event.client} left (members: {', '.join(chat.members)})")


async def main(session: str, me: str) -> None:
    async with mc.open_chat(MASTER, session, client=me) as chat:
        print(f"* you are in {session} with: {', '.join(chat.members)}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(show, chat)
            while True:
                # stdin is blocking: read it in a thread (abandoned on Ctrl-C)
                line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                if not line:  # Ctrl-D: leave the session
                    break
                if line.strip():
                    await chat.send(line.rstrip("\n"))
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    interrupted = False
    try:
        trio.run(main, sys.argv[1], sys.argv[2])
    except* KeyboardInterrupt:  # Ctrl-C, bare or from inside a nursery
        interrupted = True
    if interrupted:
        sys.exit(130)  # quietly, with the status shells give Ctrl-C
