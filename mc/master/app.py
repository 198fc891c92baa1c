"""The master's ASGI app (Starlette on Hypercorn's trio worker) and its server.

One port serves the HTTP API, the dashboard, ``/metrics``, the control links
of the workers and the WebSocket entry point. Background work (lease expiry)
runs in the same nursery as Hypercorn, so a signal stops everything in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from importlib import resources
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, WebSocketRoute

from mc.protocol.control import CONTROL_PATH

from . import api
from .config import MasterConfig
from .control import control_endpoint
from .entry import http_entry, websocket_entry
from .metrics import metrics_endpoint
from .registry import Registry
from .state import MasterState
from .store import MemoryStore, Store, StoreUnavailable

log = logging.getLogger("mc.master")

_DASHBOARD = resources.files("mc.master").joinpath("static/dashboard.html").read_text("utf-8")
_ENTRY_PATHS = ("/v1/app", "/v1/consumer", "/v1/chat/{session}")


async def dashboard(request: Request) -> Response:
    return HTMLResponse(_DASHBOARD)


def build_app(state: MasterState) -> Starlette:
    routes = [
        Route("/", dashboard),
        Route("/healthz", api.healthz),
        Route("/metrics", metrics_endpoint(state)),
        Route("/v1/assign", api.assign),
        Route("/v1/workers", api.workers),
        Route("/v1/workers/{worker}/drain", api.drain, methods=["POST", "DELETE"]),
        Route("/v1/rebalance", api.rebalance, methods=["POST"]),
        Route("/v1/sessions/{session}", api.session),
        Route("/v1/clients/{client}", api.client),
        Route("/v1/notify", api.notify, methods=["POST"]),
        Route("/v1/stats", api.stats),
        WebSocketRoute(CONTROL_PATH, control_endpoint),
    ]
    for path in _ENTRY_PATHS:
        routes.append(WebSocketRoute(path, websocket_entry))
        routes.append(Route(path, http_entry))
    app = Starlette(routes=routes, exception_handlers={StoreUnavailable: api.store_unavailable})
    app.state.master = state
    return app


def hypercorn_config(config: MasterConfig) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"{config.host}:{config.port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.websocket_max_message_size = config.max_body
    hc.keep_alive_timeout = 60
    hc.graceful_timeout = 2
    return hc


async def serve_master(
    config: MasterConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the master until cancelled."""
    async with open_store(config) as store:
        state = MasterState(config, store)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(state.expire_loop)
            nursery.start_soon(state.router.run)
            await nursery.start(hypercorn_serve, build_app(state), hypercorn_config(config))
            log.info("master %s listening on http://%s:%d (store: %s)", store.master_id, config.host,
                     config.port, "memory" if not store.shared else _masked(config.store))
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
