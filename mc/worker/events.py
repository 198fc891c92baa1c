"""The worker's operational log lines, rate-limited (mc/logs.py ``Limited``).

Refused handshakes and non-1000 closes are what a flood of bad clients
repeats, so each kind has its own token bucket; the fields go in ``extra``
so ``--log-format json`` carries them as keys.
"""

from __future__ import annotations

import logging
from typing import Any

from mc.logs import Limited

log = logging.getLogger("mc.worker")
limited = Limited(log, rate=2.0, burst=20.0)


def refused(status: int, body: Any, path: str, remote: str) -> None:
    """A handshake answered with an HTTP error (a 307 to a session's owner is not one)."""
    if status >= 400:
        reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
        limited.log(logging.INFO, f"refused-{status}", "handshake refused with %d: %s", status, reason,
                    status=status, reason=reason, path=path, remote=remote)


def closing(conn: object, code: int, reason: str) -> None:
    """The worker closes a connection with a code other than 1000."""
    if code != 1000:
        limited.log(logging.INFO, f"close-{code}", "closing with %d: %s", code, reason, code=code,
                    reason=reason, client=getattr(conn, "client", None) or None,
                    device=getattr(conn, "device", None), conn=f"{id(conn):x}",
                    session=getattr(getattr(conn, "room", None), "session", None))
