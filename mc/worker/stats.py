"""Counters a worker keeps for its reports to the master and for benchmarks."""

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
