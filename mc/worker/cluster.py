"""What a worker asks of the rest of the cluster, and the standalone answer.

The server calls these hooks at the points where a clustered worker must
consult the master or its peers (chat ownership, presence, cluster-wide
notify). ``Standalone`` is the single-worker answer; the master link
implements the same interface (mc/worker/master_link.py).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from mc.protocol import Target


class SessionNotFound(Exception):
    """``mode=join`` on a session that no worker owns (handshake 404)."""


class ClusterUnavailable(Exception):
    """The master cannot be asked right now (handshake 503, retry shortly)."""


class Cluster(Protocol):
    async def run(self) -> None:
        """Keep in touch with the cluster until cancelled (runs beside the connections)."""
    async def locate_session(self, session: str, create: bool) -> str | None:
        """None when this worker owns ``session`` (claiming it if ``create``);
        otherwise the owner's ws:// URL. Raises SessionNotFound."""

    async def leave(self) -> None:
        """The worker is shutting down: leave the cluster before closing clients."""

    def session_ended(self, session: str) -> None:
        """The session's linger ran out here; tell the registry."""

    def app_connected(self, client: str, device: str) -> None:
        """Presence: an app connection opened on this worker."""

    def app_disconnected(self, client: str, device: str) -> None:
        """Presence: an app connection closed on this worker."""

    def forward_notify(
        self, target: Target, frame: dict[str, Any], done: Callable[[int], None]
    ) -> bool:
        """Deliver ``frame`` to matching apps on other workers; ``done(count)``
        is called once with their total. False when there is no one to ask."""


class Standalone:
    """A worker with no master: it owns every session it is asked to open."""

    def __init__(self, owns: Callable[[str], bool]) -> None:
        self._owns = owns

    async def run(self) -> None:
        return None

    async def locate_session(self, session: str, create: bool) -> str | None:
        if create or self._owns(session):
            return None
        raise SessionNotFound(session)

    async def leave(self) -> None:
        return None

    def session_ended(self, session: str) -> None:
        return None

    def app_connected(self, client: str, device: str) -> None:
        return None

    def app_disconnected(self, client: str, device: str) -> None:
        return None

    def forward_notify(
        self, target: Target, frame: dict[str, Any], done: Callable[[int], None]
    ) -> bool:
        return False
