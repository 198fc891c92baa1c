"""``GET /metrics``: the registry's figures in Prometheus text format.

A custom collector reads the registry at scrape time, so there is no second
copy of the figures to keep in sync; every per-worker series carries a
``worker`` label.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from .state import MasterState
from .store import StoreUnavailable

_PER_WORKER = (
    ("mc_worker_connections", "open client connections", lambda w: w.metrics.connections),
    ("mc_worker_capacity", "connection limit", lambda w: w.capacity),
    ("mc_worker_sessions", "chat sessions owned", lambda w: w.metrics.sessions),
    ("mc_worker_subscriptions", "consumer subscriptions", lambda w: w.metrics.subscriptions),
    ("mc_worker_messages_in_per_second", "frames received per second", lambda w: w.metrics.msgs_in_rate),
    ("mc_worker_messages_out_per_second", "frames sent per second", lambda w: w.metrics.msgs_out_rate),
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
)


class RegistryCollector(Collector):
    def __init__(self, state: MasterState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        workers = self.state.last_workers  # listed by the endpoint just before
        yield GaugeMetricFamily("mc_workers", "live workers", value=len(workers))
        families: list[tuple[type[GaugeMetricFamily] | type[CounterMetricFamily], tuple]] = [
            (GaugeMetricFamily, _PER_WORKER), (CounterMetricFamily, _COUNTERS)]
        for kind, table in families:
            for name, doc, read in table:
                family = kind(name, doc, labels=["worker"])
                for w in workers:
                    family.add_metric([w.id], read(w))
                yield family


def metrics_endpoint(state: MasterState):
    registry = CollectorRegistry()
    registry.register(RegistryCollector(state))

    async def metrics(request: Request) -> Response:
        try:
            await state.live_workers()
        except StoreUnavailable:
            pass  # the last listing, then
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return metrics
