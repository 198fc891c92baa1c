"""What the master measures about itself and derives from the workers' counters.

* :class:`Rates`: per-worker messages in/out per second, from consecutive
  heartbeats' cumulative ``messages_in``/``messages_out`` over a window of a
  few seconds (not the worker's own 0.5 s figure, which jumps with the
  scheduler). A counter that goes backwards (the worker restarted under the
  same id) starts the window again.
* :class:`MasterCounters`: the master's own plain-int counters and the notify
  routing latency histogram, exported by mc/master/metrics.py at scrape time.
"""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Histogram

from mc.protocol.control import Metrics

#: seconds of heartbeats a rate is computed over
WINDOW = 3.0
#: a shorter span than this falls back to the worker's own instantaneous rate
MIN_SPAN = 0.4


class Rates:
    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}

    def observe(self, worker: str, metrics: Metrics, now: float) -> None:
        samples = self._samples.setdefault(worker, deque())
        if samples and (metrics.messages_in < samples[-1][1] or metrics.messages_out < samples[-1][2]):
            samples.clear()  # restarted: counters start from zero again
        samples.append((now, metrics.messages_in, metrics.messages_out))
        # keep one sample at or beyond the window's start so the span covers the whole window
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()

    def of(self, worker: str, fallback: Metrics | None = None) -> tuple[float, float]:
        """(messages in per second, messages out per second) over the window."""
        samples = self._samples.get(worker)
        if samples and len(samples) >= 2:
            t0, in0, out0 = samples[0]
            t1, in1, out1 = samples[-1]
            if t1 - t0 >= MIN_SPAN:
                return (in1 - in0) / (t1 - t0), (out1 - out0) / (t1 - t0)
        if fallback is not None:
            return fallback.msgs_in_rate, fallback.msgs_out_rate
        return 0.0, 0.0

    def forget(self, keep: set[str]) -> None:
        for wid in list(self._samples):
            if wid not in keep:
                del self._samples[wid]


class MasterCounters:
    """The master's own counters (plain ints) and its notify routing histogram."""

    def __init__(self) -> None:
        self.claims = 0
        self.lookups = 0
        self.notifies_routed = 0
        self.heartbeats = 0
        self.registrations = 0
        self.links_opened = 0
        self.links_closed = 0
        self.registry = CollectorRegistry(auto_describe=True)
        self.notify_latency = Histogram(
            "mc_master_notify_routing_seconds", "a notify's fan-out through the master, to the last count",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry)
