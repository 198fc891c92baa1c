"""Which hosts may receive the client's credential (PROTOCOL.md "Security", issue 10 item 7).

The SDK sends its app token or API key only to the masters it was given and
to the workers a master named: the ``Location`` of a ``307`` the master
itself answered, or a worker in the master's worker list (a consumer). A
host that a redirect chain introduced from elsewhere (a worker sending the
client on to some other address, a ``Location`` nobody trusted handed out)
never sees it, even on the same host under another scheme or port.

**Decision** (docs/protocol.md): such a hop is not followed with the
credential; the attempt fails with :class:`UntrustedRedirect` (temporary),
and the connection goes back through the master, as after a lost worker.
After :data:`UNTRUSTED_LIMIT` such attempts in a row an app or chat stops
for good with ``forbidden``, naming the hosts (never the credential); a
consumer's link keeps retrying that worker with backoff while the master
lists it. Without a credential there is nothing to protect and redirects
are followed as before.

Pure: an origin is ``(scheme, host, port)`` with ws/http folded together.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import attrs

from mc.protocol import ErrorCode

from .errors import McError

#: attempts in a row that ended at a host nobody trusted before the SDK gives up
UNTRUSTED_LIMIT = 3

Origin = tuple[str, str, int]

_SECURE = {"http": False, "ws": False, "https": True, "wss": True}


def origin(url: str) -> Origin:
    """``("wss", "host", 443)`` for ``https://Host/x``; ``http`` and ``ws`` are the same origin."""
    parts = urlsplit(url)
    secure = _SECURE.get(parts.scheme.lower(), False)
    try:
        port = parts.port
    except ValueError:
        port = None
    return ("wss" if secure else "ws", (parts.hostname or "").lower(),
            port or (443 if secure else 80))


def shown(o: Origin) -> str:
    return f"{o[0]}://{o[1]}:{o[2]}"


class UntrustedRedirect(McError):
    """A redirect to a host no master named: not followed with the credential."""

    def __init__(self, by: str, to: str) -> None:
        super().__init__(
            ErrorCode.UNAVAILABLE,
            f"{shown(origin(by))} redirected to {shown(origin(to))}, a host the master did not name: "
            "the credential is not sent there",
            temporary=True,
        )
        self.by = by
        self.to = to


def given_up(last: McError, attempts: int) -> McError:
    """The final error after ``attempts`` untrusted redirects in a row."""
    return McError(ErrorCode.FORBIDDEN, f"{last.reason} ({attempts} attempts through the master)")


@attrs.frozen
class Trust:
    """The origins a credential may go to during one connection attempt."""

    #: the configured masters: they may name other hosts (their 307 Location)
    masters: frozenset[Origin]
    #: hosts named by a master (its 307, or its worker list)
    named: frozenset[Origin] = frozenset()

    @classmethod
    def of(cls, masters: Iterable[str], named: Iterable[str] = ()) -> Trust:
        return cls(frozenset(map(origin, masters)), frozenset(map(origin, named)))

    def allows(self, url: str) -> bool:
        o = origin(url)
        return o in self.masters or o in self.named

    def redirected(self, by: str, to: str) -> Trust:
        """After ``by`` answered ``307`` to ``to``: ``to`` is named if ``by`` is a master."""
        if origin(by) in self.masters:
            return attrs.evolve(self, named=self.named | {origin(to)})
        return self

    def check(self, by: str, to: str) -> None:
        """Raise UntrustedRedirect unless the credential may follow ``by``'s 307 to ``to``."""
        if not self.allows(to):
            raise UntrustedRedirect(by, to)
