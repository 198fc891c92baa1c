"""Following the cluster's worker list: ``GET /v1/workers?after=V`` in a loop.

The master answers a long-poll as soon as its membership version moves past
``V`` (a worker registered, died or started draining) or after 30 s, so a
consumer learns of a new worker within milliseconds of its registration.
While the master is unreachable the last list stays in force (the workers
may be fine) and the poll is retried with backoff; after an error the next
poll asks without ``after``, because a restarted master counts versions from
scratch and would otherwise hold the request for the whole 30 s.

A standalone worker (``mc worker`` without ``--master``) has no worker list:
it answers ``404`` on ``/v1/workers``. When the first poll gets that ``404``
and the same address answers ``/healthz`` the way a worker does (with its
``worker`` id), the worker itself is the whole list, for good.
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
from mc.client.transport import tls_error
from mc.protocol.control import http_to_ws
from mc.protocol.names import is_name

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
        #: the base URL turned out to be a standalone worker's (see the module docstring)
        self.standalone = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll forever; ``started`` after the first list (a 4xx then raises McError)."""
        backoff = self._options.backoff
        timeout = httpx.Timeout(self._options.connect_timeout, read=LONG_POLL + 10)
        version: int | None = None
        attempt = 0
        started = False
        async with httpx.AsyncClient(timeout=timeout, verify=self._options.verify()) as http:
            while True:
                try:
                    version, workers = await self._poll(http, version)
                except (httpx.HTTPError, ValueError, McError) as exc:
                    if isinstance(exc, McError) and exc.status == 404 and not started:
                        alone = await self._standalone(http)
                        if alone is not None:
                            self.standalone = True
                            log.info("%s is a standalone worker (%s): consuming from it alone",
                                     self._base, alone.id)
                            self._on_list([alone])
                            task_status.started()
                            await trio.sleep_forever()
                    if isinstance(exc, McError) and not exc.temporary and not started:
                        raise
                    tls = tls_error(exc, self._base)
                    if tls is not None and not tls.temporary and not started:
                        raise tls from None
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

    async def _standalone(self, http: httpx.AsyncClient) -> WorkerEntry | None:
        """This worker, if ``base`` is a worker's address (its ``/healthz`` names it); else None."""
        try:
            resp = await http.get(f"{self._base}/healthz")
            body = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        wid = body.get("worker") if isinstance(body, dict) else None
        if not is_name(wid):
            return None
        return WorkerEntry(wid, http_to_ws(self._base), "up")
