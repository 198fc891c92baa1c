"""``mc publish``: publish topic messages as an app, one output line per ack."""

from __future__ import annotations

import argparse
import functools
import os

import trio

import mc
from mc.client.console import add_master, emit, parse_data, read_line, run


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish", help="publish topic messages (as an app)",
        description="Publish DATA on TOPIC through the master and print one JSON line per "
                    "ack: {\"n\", \"topic\", \"delivered\"} (delivered = consumer connections "
                    "reached). DATA is sent as JSON when it parses as JSON, else as a string.",
    )
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("data", metavar="DATA", help="the message; '-' publishes each line of stdin")
    p.add_argument("--key", help="message key (subscribers may filter on it)")
    p.add_argument("--count", type=int, default=1, metavar="N", help="send each message N times")
    p.add_argument("--rate", type=float, default=0.0, metavar="R",
                   help="at most R messages per second (default: as fast as acks come)")
    p.add_argument("--client", default="mc-cli", metavar="NAME", help="app client id (default: %(default)s)")
    add_master(p)
    p.set_defaults(run=lambda args: run(functools.partial(publish, args), "mc publish"))


async def publish(args: argparse.Namespace) -> int:
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    # a device per process: two `mc publish` at once must not replace each other (4009)
    async with mc.connect_app(args.master, client=args.client, device=f"cli-{os.getpid()}") as app:
        n = 0
        next_at = trio.current_time()
        while True:
            line = args.data if args.data != "-" else await read_line()
            if line is None:
                break
            data = parse_data(line)
            for _ in range(args.count):
                if interval:  # never faster than --rate, no bursts to catch up
                    await trio.sleep_until(next_at)
                    next_at = max(next_at, trio.current_time()) + interval
                n += 1
                emit({"n": n, "topic": args.topic,
                      "delivered": await app.publish(args.topic, data, key=args.key)})
            if args.data != "-":
                break
    return 0
