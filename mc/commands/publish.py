"""``mc publish``: publish topic messages as an app, pipelined, one output line per ack.

Up to ``--window`` publishes are in flight at once (sent, not yet acked), so
the rate is bounded by the worker, not by one round trip per message; acks
are printed in order. A run longer than a second prints a progress line on
stderr every second, and every run ends with a summary on stderr: sent,
acked, delivered, errors, msg/s and the p50/p99 ack latency.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import trio

from mc.client.console import add_master, add_token, parse_data, read_line, run, say, token
from mc.client.errors import McError
from mc.client.pipeline import Publisher
from mc.protocol import is_topic

DEFAULT_CLIENT = "mc-cli"
#: ack latencies kept for the percentiles (reservoir sampling beyond this)
LATENCY_SAMPLES = 100_000
#: pacing sleeps only when ahead of schedule by more than this (a timer per message would cap the rate)
PACE_SLACK = 0.001
#: how far behind schedule sending may catch up (timer slack), in seconds; a longer stall is lost
CATCH_UP = 0.01


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish", help="publish topic messages (as an app)",
        description="Publish DATA on TOPIC through the master and print one JSON line per "
                    "ack, in order: {\"n\", \"topic\", \"delivered\"} (delivered = consumer "
                    "connections reached). DATA is sent as JSON when it parses as JSON, else as "
                    "a string. Up to --window publishes are in flight at once; a summary (and, "
                    "for runs over a second, a progress line each second) goes to stderr.",
    )
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("data", metavar="DATA", help="the message; '-' publishes each line of stdin")
    p.add_argument("--key", help="message key (subscribers may filter on it)")
    p.add_argument("--count", type=int, default=1, metavar="N",
                   help="send each message N times (default: %(default)s)")
    p.add_argument("--rate", type=float, default=0.0, metavar="R",
                   help="at most R messages per second (default: 0, as fast as the window allows)")
    p.add_argument("--window", type=int, default=256, metavar="W",
                   help="publishes in flight, unacknowledged, at most (default: %(default)s)")
    p.add_argument("--quiet", action="store_true",
                   help="no line per ack, only progress and the summary (default: off)")
    p.add_argument("--client", metavar="NAME",
                   help=f"app client id (default: the token's sub with --token, else {DEFAULT_CLIENT})")
    add_token(p)
    add_master(p)
    p.set_defaults(run=lambda args: run(functools.partial(publish, args), "mc publish"))


class Summary:
    """What a run did, for the progress lines and the summary."""

    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self.delivered = 0
        self.errors = 0
        self.started = trio.current_time()
        self.latencies: list[float] = []
        self._seen = 0

    def ack(self, latency: float, delivered: int) -> None:
        self.acked += 1
        self.delivered += delivered
        self._seen += 1
        if len(self.latencies) < LATENCY_SAMPLES:
            self.latencies.append(latency)
        else:
            i = random.randrange(self._seen)
            if i < LATENCY_SAMPLES:
                self.latencies[i] = latency

    def rate(self) -> float:
        elapsed = trio.current_time() - self.started
        return self.acked / elapsed if elapsed > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self) -> str:
        p50, p99 = self.percentile(0.50), self.percentile(0.99)
        lat = (f", ack p50 {p50 * 1000:.2f} ms p99 {p99 * 1000:.2f} ms" if p50 is not None and p99 is not None
               else "")
        return (f"sent {self.sent}, acked {self.acked}, delivered {self.delivered}, errors {self.errors}, "
                f"{self.rate():.0f} msg/s{lat}")


async def _messages(args: argparse.Namespace) -> AsyncIterator[Any]:
    while True:
        line = args.data if args.data != "-" else await read_line()
        if line is None:
            return
        data = parse_data(line)
        for _ in range(args.count):
            yield data
        if args.data != "-":
            return


async def publish(args: argparse.Namespace) -> int:
    if args.window < 1 or args.count < 0 or args.rate < 0:
        raise McError("bad_request", "--window must be at least 1, --count and --rate zero or more")
    if not is_topic(args.topic):
        raise McError("bad_request", f"invalid topic {args.topic!r}: dot-separated names, no wildcards")
    summary = Summary()
    failure: list[McError] = []
    # a device per process: two `mc publish` at once must not replace each other (4009)
    jwt = token(args)
    client = args.client or (None if jwt else DEFAULT_CLIENT)  # with a token the worker takes its sub
    pub = await Publisher.connect(args.master, client=client, device=f"cli-{os.getpid()}", token=jwt)
    try:
        summary.started = trio.current_time()
        await _pipeline(pub, args, summary, failure)
    finally:
        sys.stdout.flush()
        say(f"mc publish: {summary.line()}", sys.stderr)
        with trio.CancelScope(shield=True):
            await pub.aclose()
    if failure:
        raise failure[0]
    return 0


async def _pipeline(pub: Publisher, args: argparse.Namespace, summary: Summary,
                    failure: list[McError]) -> None:
    """Send in batches within the window; read and print the acks as they come."""
    window = args.window
    sent_at: dict[int, float] = {}
    credit = trio.Event()
    out = sys.stdout
    quiet = args.quiet
    topic, key = args.topic, args.key
    topic_json = orjson.dumps(topic).decode()
    clock = trio.current_time
    batch_max = 1 if args.data == "-" else 64
    all_sent = False
    finished = trio.Event()

    def fail(exc: McError) -> None:
        if not failure:
            failure.append(exc)
        finished.set()

    async def reader() -> None:
        nonlocal credit
        try:
            while True:
                lines = []
                for frame in await pub.frames():
                    kind = frame.get("type")
                    if kind not in ("ack", "error"):
                        continue
                    rid = frame.get("id")
                    n = int(rid) if isinstance(rid, str) and rid.isdigit() else 0
                    t0 = sent_at.pop(n, None)
                    if kind == "error":
                        summary.errors += 1
                        fail(McError(str(frame.get("code", "error")), str(frame.get("reason", ""))))
                        continue
                    delivered = frame.get("delivered") or 0
                    summary.ack(clock() - t0 if t0 is not None else 0.0, delivered)
                    if not quiet:
                        lines.append(f'{{"n":{n},"topic":{topic_json},"delivered":{delivered}}}\n')
                if lines:
                    out.write("".join(lines))
                credit.set()
                credit = trio.Event()
                if all_sent and not sent_at:
                    finished.set()
        except McError as exc:
            fail(exc)

    async def ticker() -> None:
        """stdout once every 50 ms (a flush per line would cost more than the publish); progress."""
        next_progress = clock() + 1.0
        while True:
            await trio.sleep(0.05)
            out.flush()
            now = clock()
            if now >= next_progress:
                next_progress = now + 1.0
                say(f"mc publish: {now - summary.started:.0f}s {summary.line()}", sys.stderr)

    async def writer() -> None:
        nonlocal all_sent
        batch: list[dict[str, Any]] = []

        async def flush() -> None:
            frames = list(batch)
            batch.clear()
            await pub.send(frames)

        interval = 1.0 / args.rate if args.rate > 0 else 0.0
        next_at = clock()
        n = 0
        try:
            async for data in _messages(args):
                if interval:  # never faster than --rate
                    now = clock()
                    if next_at - now > PACE_SLACK:
                        if batch:
                            await flush()
                        await trio.sleep_until(next_at)
                    # a late wake-up (timer slack) is made up; a longer stall is not (no burst)
                    next_at = max(next_at, now - CATCH_UP) + interval
                while len(sent_at) >= window:
                    if batch:
                        await flush()
                    else:
                        await credit.wait()
                n += 1
                frame = {"type": "publish", "topic": topic, "data": data, "id": str(n)}
                if key is not None:
                    frame["key"] = key
                sent_at[n] = clock()
                batch.append(frame)
                summary.sent += 1
                if len(batch) >= batch_max:
                    await flush()
            if batch:
                await flush()
        except McError as exc:
            fail(exc)
        all_sent = True
        if not sent_at:
            finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        nursery.start_soon(reader)
        nursery.start_soon(writer)
        await finished.wait()
        nursery.cancel_scope.cancel()
    out.flush()
