"""Browser tests: a real Chromium (Debian's ``chromium``) driven by Playwright for Python.

Playwright cannot download browsers here, so every launch uses
``executable_path`` (CHROMIUM). Each page a test drives comes from a local
origin: a tiny HTTP server the test starts on 127.0.0.1 (:class:`PageServer`),
or the master itself for the dashboard. The Python SDK side of a test runs in
its own trio loop on a thread (:class:`SdkThread`), since Playwright's sync API
owns the test's thread.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trio

CHROMIUM = os.environ.get("MC_CHROMIUM", "/usr/bin/chromium")
#: bound for one expectation in a page (ms, as Playwright counts)
PAGE_TIMEOUT = 15_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(PAGE_TIMEOUT)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors
    try:
        yield pg
    finally:
        context.close()


class PageServer:
    """Serves HTML pages from memory on 127.0.0.1 (a local origin of its own)."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, html: str) -> str:
        self.pages[path] = html
        return self.origin + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pages() -> Iterator[PageServer]:
    server = PageServer()
    try:
        yield server
    finally:
        server.close()


def mc_page(master_http: str) -> str:
    """A page that loads the master's /mc.js and keeps what it receives in ``window.got``."""
    return f"""<!doctype html><meta charset="utf-8"><title>mc test page</title>
<script type="module">
import * as mc from "{master_http}/mc.js";
window.mc = mc;
window.got = [];
window.mcReady = true;
</script>"""


class SdkThread:
    """A trio loop on a thread: ``run(fn, *args)`` awaits ``fn(*args)`` there and returns its result;
    ``start(fn, *args)`` starts a long-lived task (``task_status.started(value)``) and returns value."""

    def __init__(self) -> None:
        handoff: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=trio.run, args=(self._main, handoff), daemon=True)
        self.thread.start()
        self.token, self.nursery, self._stop = handoff.get(timeout=10)

    async def _main(self, handoff: queue.Queue[Any]) -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            handoff.put((trio.lowlevel.current_trio_token(), nursery, stop))
            await stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float = 15.0) -> Any:
        async def bounded() -> Any:
            with trio.fail_after(timeout):
                return await fn(*args)
        return trio.from_thread.run(bounded, trio_token=self.token)

    def start(self, fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float = 15.0) -> Any:
        async def bounded() -> Any:
            with trio.fail_after(timeout):
                return await self.nursery.start(fn, *args)
        return trio.from_thread.run(bounded, trio_token=self.token)

    def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def close(self) -> None:
        try:
            trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        except trio.RunFinishedError:
            pass
        self.thread.join(10)


@pytest.fixture
def sdk() -> Iterator[SdkThread]:
    thread = SdkThread()
    try:
        yield thread
    finally:
        thread.close()
