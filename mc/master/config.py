"""Master settings: each default and limit written once (flags, env and TOML derive from it)."""

from __future__ import annotations

import attrs

from mc.security import SecuritySettings
from mc.settings import SettingsError, no_control_chars, non_negative, port_number, positive, setting


def store_url(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, str) or not (
        value == "memory" or value.startswith(("redis://", "rediss://", "unix://"))
    ):
        raise SettingsError(f"{attribute.name} must be memory or redis://HOST:PORT/DB, not {value!r}")


@attrs.frozen(slots=True)
class MasterConfig(SecuritySettings):
    host: str = setting("127.0.0.1", "address to listen on", validator=no_control_chars)
    port: int = setting(7100, "port to listen on", validator=port_number)
    lease: float = setting(5.0, "seconds a worker may stay silent before it is dead", validator=positive)
    dead_link_grace: float = setting(
        1.0, "seconds a worker whose control link closed without a leave (a crash) stays listed; "
             "it is dead then unless it registered again (the lease still covers silent links)",
        validator=non_negative)
    report_interval: float = setting(0.5, "seconds between a worker's heartbeats (told at registration)",
                                     validator=positive)
    long_poll: float = setting(30.0, "seconds GET /v1/workers?after=V waits at most", validator=positive)
    notify_timeout: float = setting(5.0, "seconds the master waits for workers to confirm a notify",
                                    validator=positive)
    link_queue: int = setting(10_000, "control messages waiting for one worker; more drops the link",
                              validator=positive)
    max_body: int = setting(64 * 1024, "largest HTTP body, bytes (control frames: 16 MiB)",
                            validator=positive)
    dedup_max: int = setting(100_000, "notify ids remembered for 10 minutes, at most", validator=positive)
    rebalance_tolerance: float = setting(0.25, "a worker above (1 + this) x the mean share is rebalanced",
                                         validator=non_negative)
    rebalance_after: float = setting(10.0, "seconds an imbalance must last before a worker sheds",
                                     validator=positive)
    store: str = setting("memory", "where the registry lives: memory (one master) or redis://HOST:PORT/DB "
                         "(several masters share it)", validator=store_url)
    master_id: str = setting("", "this master's id among those sharing a store (default: host-pid-random)",
                             validator=no_control_chars)
