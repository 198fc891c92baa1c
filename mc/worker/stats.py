"""Counters a worker keeps for its reports to the master, ``/metrics`` and benchmarks.

Plain ints (and small dicts keyed by a close code, an HTTP status or an
endpoint) incremented at the core's decision points: the hot path pays one
attribute increment, and mc/worker/metrics.py turns them into Prometheus
families only when ``/metrics`` is scraped. They only ever go up.
"""

from __future__ import annotations

import attrs


@attrs.define(slots=True)
class Stats:
    messages_in: int = 0  # frames received from clients
    messages_out: int = 0  # frames queued for clients
    overflows: int = 0  # connections closed with 4029
    idle_closes: int = 0  # connections closed with 4008
    rejected: int = 0  # handshakes answered with an HTTP error
    errors: int = 0  # error frames sent
    rate_limited: int = 0  # requests refused by publish_rate / notify_rate, handshakes by handshake_rate
    token_expiries: int = 0  # connections closed with 4001
    # by kind: publish frames from apps, notify frames from consumers, chat sends
    received_publish: int = 0
    received_notify: int = 0
    received_chat: int = 0
    # frames written to recipients, by kind (a notify delivered on the master's behalf included)
    delivered_publish: int = 0
    delivered_notify: int = 0
    delivered_chat: int = 0
    #: connections opened, by endpoint (app, consumer, chat)
    opened: dict[str, int] = attrs.field(factory=dict)
    #: connections closed, by close code (the server's, the client's, 1006 when the socket just went)
    closes: dict[int, int] = attrs.field(factory=dict)
    #: handshakes answered with an HTTP status >= 300, by status
    refused: dict[int, int] = attrs.field(factory=dict)
