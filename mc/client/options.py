"""The timeouts and limits every SDK connection takes, with their defaults.

They are keyword parameters of ``connect_app``, ``open_chat`` and
``connect_consumer``; this class carries them from there to the transport.
"""

from __future__ import annotations

import ssl
from typing import Any

import attrs

from .backoff import Backoff
from .errors import McError


def _positive(inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise McError("bad_request", f"{attr.name} must be positive, not {value!r}")


@attrs.frozen(kw_only=True)
class Options:
    #: seconds a request waits for its ``ack`` (including waiting for a connection)
    timeout: float = attrs.field(default=10.0, validator=_positive)
    #: seconds ``__aenter__`` keeps trying to connect before raising McError
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: seconds a clean close (code 1000) may take when the context exits
    close_timeout: float = attrs.field(default=2.0, validator=_positive)
    #: events kept for the reader; when full the OLDEST event is dropped
    buffer: int = attrs.field(default=1000, validator=_positive)
    #: requests awaiting an ack at once; more wait for a free slot
    max_pending: int = attrs.field(default=1000, validator=_positive)
    #: largest frame sent (the worker's default limit); larger raises McError
    max_frame: int = attrs.field(default=64 * 1024, validator=_positive)
    #: largest frame accepted from the server
    max_message: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    #: redirects (307) followed per connection attempt
    max_hops: int = 5
    backoff: Backoff = attrs.field(factory=Backoff)
    #: certificates for ``wss://`` and ``https://`` (a private CA); None: the system's, verified
    ssl_context: ssl.SSLContext | None = None

    def verify(self) -> ssl.SSLContext:
        """What httpx's ``verify=`` takes: ``ssl_context``, else the same default as for
        ``wss://`` (the system's CAs, or ``$SSL_CERT_FILE``), never "don't verify"."""
        return self.ssl_context if self.ssl_context is not None else ssl.create_default_context()
