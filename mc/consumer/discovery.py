"""Following the cluster's worker list: ``GET /v1/workers?after=V`` in a loop.

The master answers a long-poll as soon as its membership version moves past
``V`` (a worker registered, died or started draining) or after 30 s, so a
consumer learns of a new worker within milliseconds of its registration.
While the master is unreachable the last list stays in force (the workers
may be fine) and the poll is retried with backoff; after an error the next
poll asks without ``after``, because a restarted master counts versions from
scratch and would otherwise hold the request for the whole 30 s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import trio

from mc.client.errors import McError
from mc.client.options import Options

log = logging.getLogger("mc.consumer")

#: the master holds a long-poll at most 30 s (PROTOCOL.md); allow a margin
LONG_POLL = 30.0


@attrs.frozen
class WorkerEntry:
    """One worker of ``GET /v1/workers``."""

    id: str
    url: str
    state: str

    @classmethod
    def parse_list(cls, body: Any) -> tuple[int, list[WorkerEntry]]:
        """``(version, workers)`` from the JSON answer; ValueError if malformed."""
        if not isinstance(body, dict) or type(body.get("version")) is not int:
            raise ValueError("no version in the worker list")
        entries = []
        for w in body.get("workers") or ():
            if isinstance(w, dict) and isinstance(w.get("id"), str) and isinstance(w.get("url"), str):
                entries.append(cls(w["id"], w["url"], str(w.get("state", "up"))))
        return body["version"], entries


class Discovery:
    """Polls the master at ``base`` and hands every new list to ``on_list``.

    ``base`` may list several masters sharing one store: a failed poll moves to the next.
    """

    def __init__(self, base: str | list[str], options: Options,
                 on_list: Callable[[list[WorkerEntry]], None]) -> None:
        self._bases = [base] if isinstance(base, str) else list(base)
        self._base = self._bases[0]
        self._options = options
        self._on_list = on_list
        #: the last failure, for error messages
        self.last_error: Exception | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll forever; ``started`` after the first list (a 4xx then raises McError)."""
        backoff = self._options.backoff
        timeout = httpx.Timeout(self._options.connect_timeout, read=LONG_POLL + 10)
        version: int | None = None
        attempt = 0
        started = False
        async with httpx.AsyncClient(timeout=timeout) as http:
            while True:
                try:
                    version, workers = await self._poll(http, version)
                except (httpx.HTTPError, ValueError, McError) as exc:
                    if isinstance(exc, McError) and not exc.temporary and not started:
                        raise
                    self.last_error = exc
                    version = None
                    self._base = self._bases[(self._bases.index(self._base) + 1) % len(self._bases)]
                    delay = backoff.delay(attempt)
                    attempt += 1
                    log.info("worker list from %s: %s; retrying in %.2f s", self._base, exc, delay)
                    await trio.sleep(delay)
                    continue
                attempt = 0
                self._on_list(workers)
                if not started:
                    started = True
                    task_status.started()

    async def _poll(self, http: httpx.AsyncClient, version: int | None) -> tuple[int, list[WorkerEntry]]:
        params = {} if version is None else {"after": str(version)}
        resp = await http.get(f"{self._base}/v1/workers", params=params)
        if resp.status_code != 200:
            raise McError.from_status(resp.status_code, resp.content, resp.headers.items(),
                                      f"GET {self._base}/v1/workers")
        return WorkerEntry.parse_list(resp.json())
