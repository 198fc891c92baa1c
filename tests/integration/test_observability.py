"""Issue 11, observability: /metrics on a worker and on the master, JSON logs, /v1/stats rates.

Real processes on loopback: one master and one worker with small limits, so
that every close code we count (1009, 4000, 4009, 4029) can be provoked
quickly. Every wait is bounded and waits for a condition.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import orjson
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed

from mc.websocket import OP_CLOSE, OP_PONG

from .cluster import cluster, wait_for, worker_id
from .wsclient import connect, raw_connect, rejected, unique

pytestmark = pytest.mark.timeout(90)

MC = [sys.executable, "-m", "mc.cli"]
MAX_FRAME = 60_000

#: every family PROTOCOL.md "Observability" lists, with its Prometheus type
LISTED = {
    "mc_messages_received": "counter",
    "mc_messages_delivered": "counter",
    "mc_connections_opened": "counter",
    "mc_connections_closed": "counter",
    "mc_handshakes_refused": "counter",
    "mc_rate_limited": "counter",
    "mc_slow_consumer_closes": "counter",
    "mc_connections": "gauge",
    "mc_chat_sessions": "gauge",
    "mc_subscriptions": "gauge",
}
WORKER_ONLY = {"mc_delivery_latency_seconds": "histogram", "mc_control_rtt_seconds": "histogram"}


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[Any, Any]]:
    extra = ("--max-frame", str(MAX_FRAME), "--max-queued-frames", "16", "--max-queued-bytes", "65536",
             "--log-format", "json")
    with cluster(1, worker_extra=extra) as (master, workers):
        yield master, workers[0]


def scrape(base: str) -> dict[str, Any]:
    """The families of ``base``/metrics by name (counters without ``_total``)."""
    resp = httpx.get(f"{base}/metrics", timeout=5)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(resp.text)}


def samples(families: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (the ``_total`` sample for counters)."""
    family = families[name]
    total = 0.0
    for s in family.samples:
        if family.type == "counter" and not s.name.endswith("_total"):
            continue
        if family.type == "histogram" and not s.name.endswith("_count"):
            continue
        if all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def counter_values(families: dict[str, Any]) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in families.values():
        if family.type in ("counter", "histogram"):
            for s in family.samples:
                if s.name.endswith(("_total", "_count", "_bucket", "_sum")):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def assert_never_decreased(before: dict, after: dict) -> None:
    for key, value in before.items():
        assert key in after, f"{key} vanished between scrapes"
        assert after[key] >= value, f"{key} went down: {value} -> {after[key]}"


async def traffic(worker: Any) -> dict[str, int]:
    """Publish, notify, chat, and one close of each counted code; what was done."""
    topic, room = unique("obs"), unique("room")
    async with AsyncExitStack() as stack:
        consumer = await stack.enter_async_context(connect(worker.url, "/v1/consumer", name=unique("c")))
        app_client = unique("app")
        app = await stack.enter_async_context(connect(worker.url, "/v1/app", client=app_client))
        await consumer.ack({"type": "subscribe", "topic": topic, "id": "s"})
        for i in range(5):
            assert (await app.ack({"type": "publish", "topic": topic, "data": i, "id": f"p{i}"}))[
                "delivered"] == 1
        ack = await consumer.ack({"type": "notify", "to": {"client": app_client}, "data": "hi", "id": "n1"})
        assert ack["delivered"] == 1
        assert (await app.recv_until("notify"))["data"] == "hi"
        a = await stack.enter_async_context(connect(worker.url, f"/v1/chat/{room}", client="a", mode="open"))
        b = await stack.enter_async_context(connect(worker.url, f"/v1/chat/{room}", client="b"))
        await a.recv_type("joined")
        await b.ack({"type": "send", "data": "hello", "id": "m1"})
        assert (await a.recv_type("chat"))["data"] == "hello"

        # 4009: the same app (client, device) connects again
        async with connect(worker.url, "/v1/app", client=app_client):
            await app.expect_close(4009)
    # 1009: a message over --max-frame
    async with connect(worker.url, "/v1/app", client=unique("big")) as big:
        try:  # the worker closes as soon as the frame header says too much
            await big.send({"type": "publish", "topic": topic, "data": "x" * (MAX_FRAME * 2)})
        except ConnectionClosed as exc:
            assert exc.reason.code == 1009, exc.reason
        else:
            await big.expect_close(1009)
    # 4000: a frame that does not decode
    async with connect(worker.url, "/v1/app", client=unique("bad")) as bad:
        await bad.send_raw("{not json")
        await bad.expect_close(4000)
    # 4029: a consumer that never reads while 50 KB messages pile up past --max-queued-bytes
    slow_topic = unique("firehose")
    async with raw_connect(worker.url, "/v1/consumer", name=unique("slow"), rcvbuf=4096) as slow, \
            connect(worker.url, "/v1/app", client=unique("pub")) as pub:
        await slow.send({"type": "subscribe", "topic": slow_topic, "id": "s"})
        assert await slow.recv() == {"type": "ack", "id": "s"}
        with trio.fail_after(30):
            for i in range(2000):
                ack = await pub.ack({"type": "publish", "topic": slow_topic, "data": "y" * 50_000,
                                     "id": f"f{i}"})
                if ack["delivered"] == 0:
                    break
                await slow.send_frame(OP_PONG, b"")  # not idle, just not reading
            else:
                raise AssertionError("the slow consumer was never cut off")
            while (event := await slow.read_frame(10)) is not None and event[0] != OP_CLOSE:
                pass
            assert event is not None and event[1][0] == 4029, event
    # 404: a handshake refused
    rejection = await rejected(worker.url, "/v1/nowhere")
    assert rejection.status_code == 404
    return {"publish": 5, "notify": 1, "chat": 1}


async def test_metrics_on_the_worker_and_the_master(env):
    master, worker = env
    wid = worker_id(worker)
    w0 = scrape(worker.http)
    m0 = scrape(master.http)
    for name, kind in {**LISTED, **WORKER_ONLY}.items():
        assert name in w0, f"worker /metrics lacks {name}"
        assert w0[name].type == kind, (name, w0[name].type)
    assert "process_cpu_seconds" in w0 and "process_resident_memory_bytes" in w0

    done = await traffic(worker)

    w1 = scrape(worker.http)
    assert_never_decreased(counter_values(w0), counter_values(w1))
    for kind, n in done.items():
        before = samples(w0, "mc_messages_received", kind=kind)
        assert samples(w1, "mc_messages_received", kind=kind) - before >= n, kind
    assert samples(w1, "mc_messages_delivered", kind="publish") - \
        samples(w0, "mc_messages_delivered", kind="publish") >= 5
    assert samples(w1, "mc_messages_delivered", kind="notify") >= 1
    assert samples(w1, "mc_messages_delivered", kind="chat") >= 1
    for code in ("1009", "4000", "4009", "4029"):
        assert samples(w1, "mc_connections_closed", code=code) >= 1, f"close {code} not counted"
    assert samples(w1, "mc_slow_consumer_closes") >= 1
    assert samples(w1, "mc_handshakes_refused", status="404") >= 1
    for endpoint in ("app", "consumer", "chat"):
        assert samples(w1, "mc_connections_opened", endpoint=endpoint) >= 1, endpoint
    assert samples(w1, "mc_control_rtt_seconds") >= 1  # registration and the chat claim at least

    # the master carries the same families per worker, from the heartbeats
    async def master_caught_up() -> bool:
        m = await trio.to_thread.run_sync(scrape, master.http)
        return all(samples(m, "mc_connections_closed", worker=wid, code=c) >= 1
                   for c in ("1009", "4000", "4009", "4029")) and \
            samples(m, "mc_messages_received", worker=wid, kind="publish") >= 5

    await wait_for(master_caught_up, timeout=10, interval=0.1,
                   what="the master's /metrics to show the worker's counters")
    m1 = scrape(master.http)
    for name, kind in LISTED.items():
        assert name in m1, f"master /metrics lacks {name}"
        assert m1[name].type == kind, (name, m1[name].type)
    for name in ("mc_master_claims", "mc_master_lookups", "mc_master_control_links",
                 "mc_master_registry_entries", "mc_master_notify_routing_seconds", "process_cpu_seconds"):
        assert name in m1, name
    assert samples(m1, "mc_master_claims") >= 1
    assert samples(m1, "mc_master_control_links") == 1
    assert_never_decreased(counter_values(m0), counter_values(m1))

    # the worker logged the refused handshake and the closes as JSON lines with their fields
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    assert lines, worker.output()[-2000:]
    for line in lines:
        assert {"ts", "level", "msg", "process"} <= line.keys(), line
        assert line["process"] == wid
    assert any(line.get("status") == 404 and line.get("path") == "/v1/nowhere" for line in lines)
    for code in (1009, 4000, 4009, 4029):
        assert any(line.get("code") == code and line.get("conn") for line in lines), code


@pytest.fixture(scope="module")
def plain() -> Iterator[tuple[Any, Any]]:
    """A worker with the default limits (the env's 16-frame queue would cut off a 256 window)."""
    with cluster(1) as (master, workers):
        yield master, workers[0]


async def test_stats_rates_follow_a_known_publish_rate(plain):
    master, worker = plain
    rate = 2000
    proc = await trio.lowlevel.open_process(
        [*MC, "publish", unique("rate"), "1", "--count", str(rate * 30), "--rate", str(rate), "--quiet",
         "--master", master.http], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        readings: list[float] = []

        async def steady() -> bool:
            async with httpx.AsyncClient(timeout=5) as http:
                stats = (await http.get(f"{master.http}/v1/stats")).json()
            (w,) = [w for w in stats["workers"] if w["id"] == worker_id(worker)]
            readings.append(w["msgs_in_per_s"])
            # three consecutive readings within 5% (the window has filled with steady load)
            return len(readings) >= 3 and all(abs(r - rate) <= 0.05 * rate for r in readings[-3:])

        await wait_for(steady, timeout=20, interval=0.25, what=f"msgs_in_per_s within 5% of {rate}")
        assert proc.returncode is None, "the publisher finished before the rate settled"
    finally:
        proc.kill()
        await proc.wait()


async def test_publish_summary_counts_what_was_delivered(plain):
    master, worker = plain
    topic = unique("sum")
    async with connect(worker.url, "/v1/consumer", name=unique("c")) as consumer:
        await consumer.ack({"type": "subscribe", "topic": topic, "id": "s"})
        with trio.fail_after(30):
            done = await trio.run_process(
                [*MC, "publish", topic, '{"n": 1}', "--count", "2000", "--master", master.http],
                capture_stdout=True, capture_stderr=True, check=False)
        assert done.returncode == 0, done.stderr.decode()
        acks = [orjson.loads(line) for line in done.stdout.decode().splitlines()]
        assert [a["n"] for a in acks] == list(range(1, 2001))  # in order
        assert all(a["delivered"] == 1 for a in acks)
        summary = done.stderr.decode().strip().splitlines()[-1]
        assert summary.startswith("mc publish: sent 2000, acked 2000, delivered 2000, errors 0, "), summary
        assert "msg/s, ack p50 " in summary and " p99 " in summary
        got = 0
        with trio.fail_after(10):
            while got < 2000:
                frame = await consumer.recv()
                if frame["type"] == "message":
                    got += 1


async def test_json_logs_of_the_master_name_the_process(env):
    master, _ = env
    # the module's master logs in text: every line names the process
    text_lines = [line for line in master.output().splitlines() if line.strip()]
    assert text_lines and all(" master " in line for line in text_lines), text_lines[:5]
