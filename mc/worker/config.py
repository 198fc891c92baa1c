"""Worker settings: each default and limit written once (flags, env and TOML derive from it).

What happens at each limit is in the field's help, which ``mc worker --help``
shows, and in docs/protocol.md "Limits".
"""

from __future__ import annotations

import socket

import attrs

from mc.security import SecuritySettings
from mc.settings import no_control_chars, non_negative, port_number, positive, setting


@attrs.frozen(slots=True)
class WorkerConfig(SecuritySettings):
    host: str = setting("127.0.0.1", "address to listen on", validator=no_control_chars)
    port: int = setting(7101, "port to listen on (0: any free port, advertised as bound)",
                        validator=port_number)
    id: str = setting("", "worker id, unique in the cluster (default HOSTNAME:PORT)",
                      validator=no_control_chars)
    advertise: str = setting("", "ws:// or wss:// URL clients are redirected to (default ws://HOST:PORT, "
                                 "wss:// with tls_cert)",
                             validator=no_control_chars)
    masters: tuple[str, ...] = setting((), "master base URLs, tried in order; none = standalone",
                                       flags=("--master", "--masters"), validator=no_control_chars)
    heartbeat: float = setting(25.0, "seconds between server pings; 3x silence closes with 4008",
                               validator=positive)
    max_frame: int = setting(64 * 1024, "largest message in bytes; larger closes with 1009",
                             validator=positive)
    max_fragments: int = setting(1024, "frames one fragmented message may span; more closes with 1009",
                                 validator=positive)
    max_connections: int = setting(19_990, "open connections; the next handshake gets 503 + Retry-After",
                                   validator=positive)
    max_queued_frames: int = setting(4096, "frames waiting for one connection; more closes it with 4029",
                                     validator=positive)
    max_queued_bytes: int = setting(4 * 1024 * 1024,
                                    "bytes waiting for one connection; more closes it with 4029",
                                    validator=positive)
    max_subscriptions: int = setting(1000, "subscriptions per consumer connection; more is too_large",
                                     validator=positive)
    chat_max_members: int = setting(1000, "connections per chat session; more is refused with 409",
                                    validator=positive)
    chat_linger: float = setting(30.0, "seconds an empty chat session lives on", validator=non_negative)
    handshake_timeout: float = setting(10.0, "seconds a client has to complete the HTTP upgrade",
                                       validator=positive)
    close_timeout: float = setting(2.0, "seconds to wait for the client's close reply", validator=positive)
    drain_rate: float = setting(500.0, "connections closed per second while draining or rebalancing",
                                validator=positive)
    drain_grace: float = setting(10.0, "seconds SIGTERM waits for a drain before closing the rest",
                                 validator=non_negative)
    exit_when_drained: bool = setting(False, "exit once a drain has closed the last connection")
    presence_wait: float = setting(1.0, "seconds an app's welcome waits for the master to record it",
                                   validator=positive)
    publish_rate: float = setting(0.0, "publish + send per app connection per second, burst 2x (0: off)",
                                  validator=non_negative)
    notify_rate: float = setting(0.0, "notify per consumer connection per second, burst 2x (0: off)",
                                 validator=non_negative)

    def worker_id(self, bound_port: int) -> str:
        """The id this worker registers with: ``id``, else HOSTNAME:PORT (the bound port)."""
        return self.id or f"{socket.gethostname()}:{bound_port}"

    def advertised(self, bound_port: int) -> str:
        """The URL clients are sent to: ``advertise``, else ws(s)://HOST:PORT (the bound port)."""
        scheme = "wss" if self.tls_cert else "ws"
        return self.advertise or f"{scheme}://{self.host}:{bound_port}"
