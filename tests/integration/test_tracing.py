"""Trace ids end to end (PROTOCOL.md "Observability"): in the frames, and in the JSON logs of
every process a notify passes through, so a grep over all logs reconstructs its path."""

from __future__ import annotations

import re

import orjson
import pytest

from tests.procs import Proc

from .cluster import cluster, http_client, wait_for, wait_presence, worker_id
from .wsclient import connect, unique

pytestmark = pytest.mark.timeout(60)

DEBUG_JSON = ("--log-level", "debug", "--log-format", "json")


def lines_with(proc: Proc, trace: str) -> list[dict]:
    out = []
    for line in proc.output().splitlines():
        if trace in line:
            entry = orjson.loads(line)
            assert entry.get("trace") == trace, entry
            out.append(entry)
    return out


async def test_a_notify_trace_crosses_the_master_to_another_worker() -> None:
    with cluster(2, worker_extra=DEBUG_JSON, master_extra=DEBUG_JSON) as (master, (wa, wb)):
        client, trace = unique("traced"), unique("trace")
        async with http_client() as http, \
                connect(wa.url, "/v1/consumer", name=unique("svc")) as consumer, \
                connect(wb.url, "/v1/app", client=client) as app:
            await wait_presence(http, master, client, [{"worker": worker_id(wb), "device": "default"}])
            ack = await consumer.request({"type": "notify", "to": {"client": client}, "data": "x",
                                          "id": "n1", "trace": trace})
            assert ack["delivered"] == 1
            assert (await app.recv_type("notify"))["trace"] == trace

            async def path() -> tuple | None:
                hops = (lines_with(wa, trace), lines_with(master, trace), lines_with(wb, trace))
                return hops if all(hops) else None

            at_a, at_master, at_b = await wait_for(path, what="the trace in every process's log")
            assert {e["process"] for e in at_a} == {worker_id(wa)}
            assert {e["process"] for e in at_master} == {"master"}
            assert {e["process"] for e in at_b} == {worker_id(wb)}

            # a publish without a trace gets one from the worker, carried to the consumer
            await consumer.request({"type": "subscribe", "topic": "traced.t", "id": "s"})
            async with connect(wa.url, "/v1/app", client=unique("pub")) as pub:
                await pub.request({"type": "publish", "topic": "traced.t", "data": 1, "id": "p"})
            made = (await consumer.recv_type("message"))["trace"]
            assert re.fullmatch(r"[0-9a-z]{1,6}-[0-9a-z]+", made), made
            assert await wait_for(lambda: _logged(wa, made), what="the made-up trace in the log")


async def _logged(proc: Proc, trace: str) -> bool:
    return bool(lines_with(proc, trace))
