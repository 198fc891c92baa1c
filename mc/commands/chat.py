"""``mc chat``: an interactive chat session on stdin/stdout.

Lines typed are sent; others' messages print as ``NAME: TEXT`` and
arrivals and departures as ``* NAME joined`` / ``* NAME left``. End of
input (Ctrl-D, or the end of a pipe) leaves the session.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any

import orjson
import trio

import mc
from mc.client.console import add_master, add_token, read_line, run, say, token


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat", help="chat in a session interactively",
        description="Join (or create) chat SESSION: typed lines are sent, incoming messages, "
                    "joins and leaves are printed; end of input leaves.",
    )
    p.add_argument("session", metavar="SESSION")
    p.add_argument("--client", required=True, metavar="NAME", help="your client id")
    add_token(p)
    add_master(p)
    p.set_defaults(run=lambda args: run(functools.partial(chat, args), "mc chat"))


def _text(data: Any) -> str:
    return data if isinstance(data, str) else orjson.dumps(data).decode()


def describe(event: Any) -> str:
    """One printed line for a chat event."""
    if isinstance(event, mc.ChatMessage):
        return f"{event.sender}: {_text(event.data)}"
    if isinstance(event, mc.Joined):
        return f"* {event.client} joined"
    return f"* {event.client} left"


async def chat(args: argparse.Namespace) -> int:
    async with mc.open_chat(args.master, args.session, client=args.client,
                            device=f"cli-{os.getpid()}", token=token(args)) as session:
        say(f"* in {args.session} (worker {session.worker}); members: {', '.join(session.members)}")
        failure: list[mc.McError] = []
        async with trio.open_nursery() as nursery:

            async def show() -> None:
                try:
                    async for event in session:
                        say(describe(event))
                except mc.McError as exc:
                    failure.append(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(show)
            while (line := await read_line()) is not None:
                if line.strip():
                    await session.send(line)
            nursery.cancel_scope.cancel()
        if failure:
            raise failure[0]
    say("* left", sys.stderr)
    return 0
