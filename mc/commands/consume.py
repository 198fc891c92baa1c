"""``mc consume``: subscribe on every worker and print each message as a JSON line."""

from __future__ import annotations

import argparse
import functools
import os
import sys

import trio

import mc
from mc.client.console import add_api_key, add_master, api_key, emit, run, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "consume", help="print topic messages as JSON lines (a consumer)",
        description="Subscribe to each PATTERN ('*' = one segment, '>' = the rest) on every "
                    "worker and print one JSON object per message on stdout (the wire 'message' "
                    "frame without 'type': topic, key, data, from, worker, seq, ts, trace), "
                    "flushed per line for jq. Status goes to stderr. --master may also name a "
                    "standalone worker (mc worker without --master): then it consumes from that "
                    "worker alone.",
    )
    p.add_argument("patterns", nargs="+", metavar="PATTERN")
    p.add_argument("--group", help="consumer group: each message goes to one member of the group")
    p.add_argument("--key", help="only messages published with this key")
    p.add_argument("--name", default=f"mc-consume-{os.getpid()}", metavar="N",
                   help="consumer name (default: mc-consume-PID)")
    add_api_key(p)
    add_master(p)
    p.set_defaults(run=lambda args: run(functools.partial(consume, args), "mc consume"))


async def consume(args: argparse.Namespace) -> int:
    received = 0
    topics: set[str] = set()
    started: float | None = None  # once subscribed: a run that never started has nothing to sum up
    try:
        async with mc.connect_consumer(args.master, name=args.name, api_key=api_key(args)) as consumer:
            for pattern in args.patterns:
                await consumer.subscribe(pattern, group=args.group, key=args.key)
            say(f"mc consume: subscribed to {' '.join(args.patterns)} on "
                f"{len(consumer.workers)} worker(s)", sys.stderr)
            started = trio.current_time()
            async for msg in consumer:
                wire = msg.to_wire()
                del wire["type"]
                emit(wire)
                received += 1
                if len(topics) < 1000:
                    topics.add(msg.topic)
    finally:
        if started is not None:
            elapsed = trio.current_time() - started
            rate = received / elapsed if elapsed > 0 else 0.0
            say(f"mc consume: received {received} messages on {len(topics)} topic(s) in {elapsed:.1f} s "
                f"({rate:.0f} msg/s)", sys.stderr)
    return 0
