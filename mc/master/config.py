"""Master settings: each default and limit written once (flags, env and TOML derive from it)."""

from __future__ import annotations

import attrs

from mc.security import SecuritySettings
from mc.settings import no_control_chars, non_negative, one_of, port_number, positive, setting
from mc.worker.config import LOG_FORMATS, LOG_LEVELS


@attrs.frozen(slots=True)
class MasterConfig(SecuritySettings):
    host: str = setting("127.0.0.1", "address to listen on", validator=no_control_chars)
    port: int = setting(7100, "port to listen on", validator=port_number)
    lease: float = setting(5.0, "seconds a worker may stay silent before it is dead", validator=positive)
    report_interval: float = setting(0.5, "seconds between a worker's heartbeats (told at registration)",
                                     validator=positive)
    long_poll: float = setting(30.0, "seconds GET /v1/workers?after=V waits at most", validator=positive)
    notify_timeout: float = setting(5.0, "seconds the master waits for workers to confirm a notify",
                                    validator=positive)
    link_queue: int = setting(10_000, "control messages waiting for one worker; more drops the link",
                              validator=positive)
    max_body: int = setting(64 * 1024, "largest HTTP body or control message, bytes", validator=positive)
    dedup_max: int = setting(100_000, "notify ids remembered for 10 minutes, at most", validator=positive)
    rebalance_tolerance: float = setting(0.25, "a worker above (1 + this) x the mean share is rebalanced",
                                         validator=non_negative)
    rebalance_after: float = setting(10.0, "seconds an imbalance must last before a worker sheds",
                                     validator=positive)
    log_level: str = setting("info", "log level", validator=one_of(*LOG_LEVELS))
    log_format: str = setting("text", "log lines as text or as one JSON object per line",
                              validator=one_of(*LOG_FORMATS))
