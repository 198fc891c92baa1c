"""Worker settings, their defaults, and what happens at each limit (docs/architecture.md)."""

from __future__ import annotations

import socket

import attrs


@attrs.define(slots=True)
class WorkerConfig:
    host: str = "127.0.0.1"
    port: int = 7101
    #: unique in the cluster; defaults to HOSTNAME:PORT
    worker_id: str = ""
    #: the ws:// URL clients are redirected to; defaults to ws://HOST:PORT
    advertise: str = ""
    #: master base URLs (http://...), tried in order; empty = standalone
    masters: tuple[str, ...] = ()
    #: seconds between server pings; silence for 3x this closes with 4008
    heartbeat: float = 25.0
    #: largest accepted message; larger closes with 1009
    max_frame: int = 64 * 1024
    #: open connections; the next handshake gets 503 + Retry-After
    max_connections: int = 19_990
    #: frames / bytes waiting to be written to one connection; more closes it with 4029
    max_queued_frames: int = 4096
    max_queued_bytes: int = 4 * 1024 * 1024
    #: subscriptions per consumer connection; more is answered with error too_large
    max_subscriptions: int = 1000
    #: connections per chat session; more is refused with 409
    chat_max_members: int = 1000
    #: seconds an empty chat session lives on
    chat_linger: float = 30.0
    #: seconds a client has to complete the HTTP upgrade
    handshake_timeout: float = 10.0
    #: seconds to wait for the client's close reply before dropping the socket
    close_timeout: float = 2.0

    def __attrs_post_init__(self) -> None:
        if not self.worker_id:
            self.worker_id = f"{socket.gethostname()}:{self.port}"
        if not self.advertise:
            self.advertise = f"ws://{self.host}:{self.port}"
