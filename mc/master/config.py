"""Master settings and their limits (docs/architecture.md)."""

from __future__ import annotations

import attrs


@attrs.define(slots=True)
class MasterConfig:
    host: str = "127.0.0.1"
    port: int = 7100
    #: seconds a worker may stay silent before it is dead
    lease: float = 5.0
    #: seconds between a worker's heartbeats (told to workers at registration)
    report_interval: float = 0.5
    #: seconds ``GET /v1/workers?after=V`` waits at most
    long_poll: float = 30.0
    #: seconds the master waits for workers to confirm a notify delivery
    notify_timeout: float = 5.0
    #: control messages waiting to be written to one worker; more drops the link
    link_queue: int = 10_000
    #: largest HTTP body / control message accepted, bytes
    max_body: int = 64 * 1024
    #: notify ids remembered for 10 minutes, at most this many
    dedup_max: int = 100_000
