"""``GET /metrics``: the master's own figures and the workers', in Prometheus text format.

A custom collector reads the registry, the links and the master's plain-int
counters (mc/master/observe.py) at scrape time, so there is no second copy
of the figures to keep in sync. Every per-worker series carries a ``worker``
label: the workers' cumulative counters come from their latest heartbeat
(so they only go up while a worker lives), their rates from the master's
window over those counters. The process collector and the notify routing
histogram are in the same registry.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from .state import MasterState
from .store import MemoryStore, StoreUnavailable

_PER_WORKER = (
    ("mc_worker_connections", "open client connections", lambda w: w.metrics.connections),
    ("mc_worker_capacity", "connection limit", lambda w: w.capacity),
    ("mc_worker_sessions", "chat sessions owned", lambda w: w.metrics.sessions),
    ("mc_worker_subscriptions", "consumer subscriptions", lambda w: w.metrics.subscriptions),
    ("mc_worker_cpu_percent", "CPU use of the worker process", lambda w: w.metrics.cpu_percent),
    ("mc_worker_rss_bytes", "resident memory of the worker process", lambda w: w.metrics.rss_bytes),
    ("mc_worker_draining", "1 while the worker drains", lambda w: float(w.state != "up")),
)

#: counters the workers report in their heartbeats (since each worker started)
_COUNTERS = (
    ("mc_slow_consumer_closes", "connections closed with 4029 (outbound queue overflow)",
     lambda w: w.metrics.overflows),
    ("mc_idle_closes", "connections closed with 4008 (idle)", lambda w: w.metrics.idle_closes),
    ("mc_worker_handshakes_refused", "handshakes answered with an HTTP error", lambda w: w.metrics.rejected),
    ("mc_worker_error_frames", "error frames sent to clients", lambda w: w.metrics.errors),
    ("mc_rate_limited", "requests and handshakes refused by a rate limit", lambda w: w.metrics.rate_limited),
    ("mc_worker_frames_received", "client frames received", lambda w: w.metrics.messages_in),
    ("mc_worker_frames_sent", "frames queued for clients", lambda w: w.metrics.messages_out),
)


class RegistryCollector(Collector):
    def __init__(self, state: MasterState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        workers = state.last_workers  # listed by the endpoint just before
        yield GaugeMetricFamily("mc_workers", "live workers", value=len(workers))
        families: list[tuple[type[GaugeMetricFamily] | type[CounterMetricFamily], tuple]] = [
            (GaugeMetricFamily, _PER_WORKER), (CounterMetricFamily, _COUNTERS)]
        for kind, table in families:
            for name, doc, read in table:
                family = kind(name, doc, labels=["worker"])
                for w in workers:
                    family.add_metric([w.id], read(w))
                yield family
        rate_in = GaugeMetricFamily("mc_worker_messages_in_per_second",
                                    "frames received per second (window over the heartbeats' counters)",
                                    labels=["worker"])
        rate_out = GaugeMetricFamily("mc_worker_messages_out_per_second",
                                     "frames sent per second (window over the heartbeats' counters)",
                                     labels=["worker"])
        for w in workers:
            r_in, r_out = state.rates.of(w.id, w.metrics)
            rate_in.add_metric([w.id], r_in)
            rate_out.add_metric([w.id], r_out)
        yield rate_in
        yield rate_out

        yield from _labelled(workers)

        c = state.counters
        yield CounterMetricFamily("mc_master_claims", "chat session claims answered", value=c.claims)
        yield CounterMetricFamily("mc_master_lookups", "chat session lookups answered", value=c.lookups)
        yield CounterMetricFamily("mc_master_notifies_routed", "notifies fanned out to workers",
                                  value=c.notifies_routed)
        yield CounterMetricFamily("mc_master_heartbeats", "worker heartbeats received", value=c.heartbeats)
        yield CounterMetricFamily("mc_master_registrations", "worker registrations", value=c.registrations)
        yield CounterMetricFamily("mc_master_control_links_refused", "control links refused (cluster key)",
                                  value=state.refused_links)
        yield CounterMetricFamily("mc_master_bad_control_messages", "control messages that did not validate",
                                  value=state.bad_control_messages)
        yield GaugeMetricFamily("mc_master_control_links", "control links open", value=len(state.links))
        entries = GaugeMetricFamily("mc_master_registry_entries", "what the registry holds, by kind",
                                    labels=["kind"])
        # in memory only: a shared store's sizes would cost a scrape a round trip per kind
        sizes = state.store.registry.sizes() if isinstance(state.store, MemoryStore) else {}
        for kind_name, n in sizes.items():
            entries.add_metric([kind_name], n)
        yield entries


#: the workers' labelled counters ("family.label" in Metrics.counters): family name, doc, label, type
_LABELLED = {
    "received": ("mc_messages_received", "publish, notify and chat frames received", "kind",
                 CounterMetricFamily),
    "delivered": ("mc_messages_delivered", "frames written to recipients, by kind", "kind",
                  CounterMetricFamily),
    "opened": ("mc_connections_opened", "connections accepted, by endpoint", "endpoint", CounterMetricFamily),
    "closed": ("mc_connections_closed", "connections closed, by close code", "code", CounterMetricFamily),
    "refused": ("mc_handshakes_refused", "handshakes answered with HTTP >= 300, by status", "status",
                CounterMetricFamily),
    "connections": ("mc_connections", "open connections, by endpoint", "endpoint", GaugeMetricFamily),
}


def _labelled(workers: list) -> Iterator[Metric]:
    families = {prefix: kind(name, doc, labels=["worker", label])
                for prefix, (name, doc, label, kind) in _LABELLED.items()}
    for w in workers:
        for key, n in sorted(w.metrics.counters.items()):
            prefix, _, label = key.partition(".")
            family = families.get(prefix)
            if family is not None and label:
                family.add_metric([w.id, label], n)
    sessions = GaugeMetricFamily("mc_chat_sessions", "chat sessions hosted", labels=["worker"])
    subs = GaugeMetricFamily("mc_subscriptions", "consumer subscriptions", labels=["worker"])
    for w in workers:
        sessions.add_metric([w.id], w.metrics.sessions)
        subs.add_metric([w.id], w.metrics.subscriptions)
    yield from families.values()
    yield sessions
    yield subs


def metrics_endpoint(state: MasterState):
    registry = state.counters.registry
    registry.register(RegistryCollector(state))
    ProcessCollector(registry=registry)

    async def metrics(request: Request) -> Response:
        try:
            await state.live_workers()
        except StoreUnavailable:
            pass  # the last listing, then
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return metrics
