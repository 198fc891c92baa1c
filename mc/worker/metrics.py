"""A worker's ``GET /metrics`` (Prometheus text), read from the core at scrape time.

The core counts in plain ints (mc/worker/stats.py); :class:`CoreCollector`
turns them into metric families only when someone scrapes, so the hot path
never touches prometheus-client. Two histograms are real prometheus-client
objects because they need buckets: ``mc_delivery_latency_seconds`` (sampled,
one received chunk in :data:`SAMPLE_EVERY`, from the recv to the end of the
core's work on it plus an immediate flush) and ``mc_control_rtt_seconds``
(the control link's request/reply pairs: registration, claims, lookups, leave).
Both are observed off the per-message path.

The process collector (CPU, RSS, open fds, start time) comes with the registry.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs
import trio
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from mc.protocol.control import Metrics

from .peer import APP, CHAT, CONSUMER

if TYPE_CHECKING:
    from .core import WorkerCore

#: one read in this many is timed for ``mc_delivery_latency_seconds`` (a power of two)
SAMPLE_EVERY = 64
ENDPOINTS = (APP, CONSUMER, CHAT)
KINDS = ("publish", "notify", "chat")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class CoreCollector(Collector):
    """Every worker family, read from the core's counters and state when scraped."""

    def __init__(self, core: WorkerCore) -> None:
        self.core = core

    def collect(self) -> Iterator[Metric]:
        core = self.core
        s = core.stats
        ln = ["worker"]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=ln)
            family.add_metric([core.id], value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=ln)
            family.add_metric([core.id], value)
            return family

        received = CounterMetricFamily("mc_messages_received", "publish, notify and chat frames received",
                                       labels=[*ln, "kind"])
        delivered = CounterMetricFamily("mc_messages_delivered",
                                        "frames written to recipients for a publish, notify or chat send",
                                        labels=[*ln, "kind"])
        for kind in KINDS:
            received.add_metric([core.id, kind], getattr(s, f"received_{kind}"))
            delivered.add_metric([core.id, kind], getattr(s, f"delivered_{kind}"))
        yield received
        yield delivered
        yield counter("mc_frames_received", "client data frames received, every type", s.messages_in)
        yield counter("mc_frames_sent", "frames queued for clients, every type", s.messages_out)

        opened = CounterMetricFamily("mc_connections_opened", "connections accepted (101), by endpoint",
                                     labels=[*ln, "endpoint"])
        by_kind = dict.fromkeys(ENDPOINTS, 0)
        for conn in core.connections:
            by_kind[conn.kind] = by_kind.get(conn.kind, 0) + 1
        current = GaugeMetricFamily("mc_connections", "open connections, by endpoint",
                                    labels=[*ln, "endpoint"])
        for endpoint in ENDPOINTS:
            opened.add_metric([core.id, endpoint], s.opened.get(endpoint, 0))
            current.add_metric([core.id, endpoint], by_kind[endpoint])
        yield opened
        yield current

        closed = CounterMetricFamily("mc_connections_closed",
                                     "connections closed, by close code (1006: the socket went without one)",
                                     labels=[*ln, "code"])
        for code, n in sorted(s.closes.items()):
            closed.add_metric([core.id, str(code)], n)
        yield closed
        refused = CounterMetricFamily("mc_handshakes_refused",
                                      "handshakes answered with HTTP >= 300, by status",
                                      labels=[*ln, "status"])
        for status, n in sorted(s.refused.items()):
            refused.add_metric([core.id, str(status)], n)
        yield refused
        yield counter("mc_rate_limited", "requests and handshakes refused by a rate limit", s.rate_limited)
        yield counter("mc_slow_consumer_closes", "connections closed with 4029 (outbound queue overflow)",
                      s.overflows)
        yield counter("mc_idle_closes", "connections closed with 4008 (idle)", s.idle_closes)
        yield counter("mc_error_frames", "error frames sent to clients", s.errors)
        yield gauge("mc_chat_sessions", "chat sessions hosted", len(core.rooms))
        yield gauge("mc_subscriptions", "consumer subscriptions", core.hub.subscription_count)
        yield gauge("mc_draining", "1 while the worker drains", float(core.draining))
        yield gauge("mc_control_link_up", "1 while the control link is registered", float(core.linked))


def counters(core: WorkerCore) -> dict[str, int]:
    """The labelled counters a heartbeat carries to the master (``Metrics.counters``)."""
    s = core.stats
    out: dict[str, int] = {}
    for kind in KINDS:
        out[f"received.{kind}"] = getattr(s, f"received_{kind}")
        out[f"delivered.{kind}"] = getattr(s, f"delivered_{kind}")
    for endpoint, n in s.opened.items():
        out[f"opened.{endpoint}"] = n
    for code, n in s.closes.items():
        out[f"closed.{code}"] = n
    for status, n in s.refused.items():
        out[f"refused.{status}"] = n
    for kind, n in core.kind_counts.items():
        if n:
            out[f"connections.{kind}"] = n
    return out


class WorkerMetrics:
    """The worker's registry: the core's collector, the histograms and the process collector."""

    def __init__(self, core: WorkerCore) -> None:
        self.core = core
        self.registry = CollectorRegistry()
        self.registry.register(CoreCollector(core))
        ProcessCollector(registry=self.registry)
        self.delivery_latency = Histogram(
            "mc_delivery_latency_seconds",
            f"a received chunk's handling to its last immediate write (1 in {SAMPLE_EVERY} sampled)",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.control_rtt = Histogram("mc_control_rtt_seconds", "control link request to reply",
                                     buckets=RTT_BUCKETS, registry=self.registry)

    def heartbeat(self, metrics: Metrics) -> Metrics:
        """The core's heartbeat figures plus the labelled counters (MasterLink.extend)."""
        return attrs.evolve(metrics, counters=counters(self.core))

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def response(self) -> bytes:
        """The whole HTTP/1.1 answer to ``GET /metrics``."""
        body = self.text()
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        return head + body


def wants_metrics(method: str, path: str, is_websocket: bool) -> bool:
    return path == "/metrics" and method == "GET" and not is_websocket


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Write ``data`` to a non-blocking socket, waiting for room as needed."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except OSError:
            return
        view = view[sent:]
