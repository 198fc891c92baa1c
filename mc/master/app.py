"""The master's ASGI app (Starlette on Hypercorn's trio worker) and its server.

One port serves the HTTP API, the dashboard, ``/metrics``, the control links
of the workers and the WebSocket entry point. Background work (lease expiry)
runs in the same nursery as Hypercorn, so a signal stops everything in order.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp

from mc.protocol.control import CONTROL_PATH, MAX_CONTROL_FRAME
from mc.runner import Reloader

from . import api, hypercorn_patches
from .config import MasterConfig
from .control import control_endpoint
from .entry import http_entry, websocket_entry
from .guard import Guard
from .history import History
from .metrics import metrics_endpoint
from .notify_api import BATCH_PATH, PATHS, SINGLE_PATH, FastPath, NotifyAPI
from .origins import OriginMiddleware
from .registry import Registry
from .state import MasterState
from .store import MemoryStore, Store, StoreUnavailable

log = logging.getLogger("mc.master")

HTTP_READ_TIMEOUT = 10
_ENTRY_PATHS = ("/v1/app", "/v1/consumer", "/v1/chat/{session}")
#: the dashboard (plain HTML, JS and CSS: nothing is fetched from elsewhere) and the JS client
_STATIC = {
    "/": api.static_file("dashboard.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": api.static_file("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": api.static_file("dashboard.css", "text/css; charset=utf-8"),
    "/mc.js": api.static_file("mc.js", "text/javascript; charset=utf-8"),
}


def build_app(state: MasterState, history: History | None = None) -> ASGIApp:
    """The master's ASGI app: origins, then keys, then the notify API's lean path, then Starlette."""
    notify = NotifyAPI(state)  # in Starlette's routes too, for its 405 to other methods
    routes = [
        *(Route(path, endpoint) for path, endpoint in _STATIC.items()),
        Route("/healthz", api.healthz),
        Route("/metrics", metrics_endpoint(state)),
        Route("/v1/assign", api.assign),
        Route("/v1/workers", api.workers),
        Route("/v1/workers/{worker}/drain", api.drain, methods=["POST", "DELETE"]),
        Route("/v1/rebalance", api.rebalance, methods=["POST"]),
        Route("/v1/reload", api.reload, methods=["POST"]),
        Route("/v1/sessions/{session}", api.session),
        Route("/v1/clients/{client}", api.client),
        Route(SINGLE_PATH, notify, methods=["POST"]),
        Route(BATCH_PATH, notify, methods=["POST"]),
        Route("/v1/sessions", api.sessions),
        Route("/v1/stats", api.stats),
        Route("/v1/stats/history", api.stats_history),
        Route("/v1/events", api.events),
        WebSocketRoute(CONTROL_PATH, control_endpoint),
    ]
    for path in _ENTRY_PATHS:
        routes.append(WebSocketRoute(path, websocket_entry))
        routes.append(Route(path, http_entry))
    app = Starlette(routes=routes, exception_handlers={StoreUnavailable: api.store_unavailable})
    app.state.master = state
    app.state.history = history if history is not None else History()
    # outermost: preflights and 403 for foreign origins first, CORS headers on every answer
    return OriginMiddleware(Guard(FastPath(app, notify), keys=lambda: state.config.api_keys),
                            allowed=lambda: state.config.allowed_origins)


async def sample_loop(state: MasterState, history: History) -> None:
    """Once a second, the cluster's and each live worker's figures into ``history``."""
    while True:
        try:
            await state.purge_lapsed()
            totals = await state.store.totals(state.store_now())
            history.add(time.time_ns() // 1_000_000, totals.metrics,
                        [(w.id, w.metrics) for w in await state.live_workers()])
        except StoreUnavailable as exc:
            state.store_failed(exc)
        await trio.sleep(1.0)


def hypercorn_config(config: MasterConfig) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"{config.host}:{config.port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.websocket_max_message_size = MAX_CONTROL_FRAME  # /v1/control is the master's only WebSocket
    # the same bounds as a worker's handshake: a request head or body that is not
    # complete within 10 s is cut, and heads are at most 16 KiB
    # Hypercorn applies it to every read, the workers' control links too: a link
    # silent for less than the lease is alive by definition, so it is never cut sooner
    # (with a 30 s lease and 10 s here, starved workers lost their links at 10 s)
    hc.read_timeout = max(HTTP_READ_TIMEOUT, math.ceil(config.lease))
    hc.h11_max_incomplete_size = 16384
    hc.keep_alive_timeout = 60
    hc.graceful_timeout = 2
    if config.tls_cert:  # https and wss; Hypercorn's context: TLS >= 1.2, AEAD ciphers, no compression
        hc.certfile = config.tls_cert
        hc.keyfile = config.tls_key
    return hc


async def serve_master(
    config: MasterConfig, reloader: Reloader | None = None, *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the master until cancelled."""
    hypercorn_patches.install(inline=PATHS)  # one write per response, notifies in their connection's task
    async with open_store(config) as store:
        state = MasterState(config, reloader, store)
        async with trio.open_nursery() as nursery:
            history = History()
            nursery.start_soon(state.expire_loop)
            nursery.start_soon(state.router.run)
            nursery.start_soon(sample_loop, state, history)
            await nursery.start(hypercorn_serve, build_app(state, history), hypercorn_config(config))
            log.info("master %s listening on %s://%s:%d (store: %s)", store.master_id,
                     "https" if config.tls_cert else "http", config.host, config.port,
                     "memory" if not store.shared else _masked(config.store))
            task_status.started()


@contextlib.asynccontextmanager
async def open_store(config: MasterConfig) -> AsyncIterator[Store]:
    """The store ``config.store`` names: ``memory`` (the default) or ``redis://HOST:PORT/DB``."""
    if config.store == "memory":
        yield MemoryStore(Registry(lease=config.lease, dedup_max=config.dedup_max))
        return
    from .redis_store import open_redis_store  # only masters that use Redis import coredis

    master_id = config.master_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    async with open_redis_store(config.store, master_id=master_id, lease=config.lease) as store:
        yield store


def _masked(url: str) -> str:
    """A store URL without its password."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
