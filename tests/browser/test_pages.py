"""Pages using the master's /mc.js in a real Chromium: chat through a redirect frame with a
Python SDK member, notifications across a worker's kill -9, refused handshakes as errors,
and a page on an origin outside ``allowed_origins``."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import mc
from mc.tokens import mint
from tests.integration.cluster import SETTLE, cluster, wait_registered_sync, worker_for, worker_id
from tests.integration.wsclient import unique
from tests.procs import Proc, master_proc

from .conftest import PageServer, SdkThread, mc_page

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/chat.html"


@pytest.fixture(scope="module")
def two() -> Iterator[tuple[Proc, list[Proc]]]:
    with cluster(2) as (master, workers):
        yield master, workers


def open_page(page: Any, pages: PageServer, master: Proc) -> None:
    page.goto(pages.add("/app.html", mc_page(master.http)))
    page.wait_for_function("window.mcReady === true")


def wait_until(probe: Any, what: str, timeout: float = SETTLE) -> Any:
    """Poll a synchronous probe until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


async def chat_member(url: str, room: str, client: str, events: queue.Queue[Any], *,
                      task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """A Python SDK member of ``room`` until its ``leave`` event is set; events go to ``events``."""
    leave = trio.Event()
    async with mc.open_chat(url, room, client=client) as chat:
        task_status.started((chat, leave))
        async with trio.open_nursery() as nursery:
            async def read() -> None:
                async for event in chat:
                    events.put(event)
            nursery.start_soon(read)
            await leave.wait()
            nursery.cancel_scope.cancel()


def next_event(events: queue.Queue[Any], kind: type, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        event = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(event, kind):
            return event


def test_chat_page_follows_a_redirect_and_talks_to_the_python_sdk(
    two: tuple[Proc, list[Proc]], page: Any, pages: PageServer, sdk: SdkThread,
) -> None:
    master, (wa, _) = two
    room = unique("web-room")
    py_events: queue.Queue[Any] = queue.Queue()
    # the Python member opens the session on wa: the page's handshake at the master is redirected
    chat, leave = sdk.start(chat_member, wa.url, room, "py", py_events)
    open_page(page, pages, master)
    welcome = page.evaluate("""async ([url, room]) => {
        const chat = await mc.openChat(url, room, { client: "web" });
        window.chat = chat;
        window.members = chat.members;
        chat.on("members", (list) => { window.members = list; });
        chat.on("message", (m) => window.got.push([m.from, m.data]));
        return { worker: chat.worker, members: chat.members };
    }""", [master.http, room])
    assert welcome["worker"] == worker_id(wa)
    assert sorted(welcome["members"]) == ["py", "web"]
    assert next_event(py_events, mc.Joined).client == "web"

    sdk.run(chat.send, {"text": "hello from python"})
    page.wait_for_function("window.got.length >= 1")
    assert page.evaluate("window.got") == [["py", {"text": "hello from python"}]]

    seq = page.evaluate("chat.send({ text: 'hello from the page' })")
    assert isinstance(seq, int) and seq > 0
    message = next_event(py_events, mc.ChatMessage)
    assert (message.sender, message.data) == ("web", {"text": "hello from the page"})

    # a third member comes and goes: the page's member list follows
    _, other_leave = sdk.start(chat_member, master.http, room, "py2", queue.Queue())
    page.wait_for_function("window.members.includes('py2')")
    assert sorted(page.evaluate("window.members")) == ["py", "py2", "web"]
    sdk.run_sync(other_leave.set)
    page.wait_for_function("!window.members.includes('py2')")
    sdk.run_sync(leave.set)
    page.wait_for_function("window.members.length === 1")
    assert page.evaluate("window.members") == ["web"]
    page.evaluate("chat.close()")
    assert page.errors == []


def test_readme_chat_page(
    two: tuple[Proc, list[Proc]], page: Any, pages: PageServer, sdk: SdkThread,
) -> None:
    """examples/chat.html, the page the README shows, with a Python SDK member."""
    html = EXAMPLE.read_text()
    assert html in (ROOT / "README.md").read_text(), "the README shows examples/chat.html verbatim"
    master, _ = two
    room = unique("readme")
    py_events: queue.Queue[Any] = queue.Queue()
    chat, leave = sdk.start(chat_member, master.http, room, "py", py_events)
    page.goto(f"{pages.add('/chat.html', html)}?master={master.http}&room={room}&name=web")
    page.wait_for_function("document.getElementById('members').textContent === 'here: py, web'")
    sdk.run(chat.send, "hi page")
    page.wait_for_selector("#log li:text-is('py: hi page')")
    page.fill("#text", "hi python")
    page.press("#text", "Enter")
    message = next_event(py_events, mc.ChatMessage)
    assert (message.sender, message.data) == ("web", "hi python")
    page.wait_for_selector("#log li:text-is('web: hi python')")
    sdk.run_sync(leave.set)
    page.wait_for_function("document.getElementById('members').textContent === 'here: web'")
    assert page.errors == []


def test_refused_handshakes_reach_the_page_as_errors(
    two: tuple[Proc, list[Proc]], page: Any, pages: PageServer,
) -> None:
    master, _ = two
    open_page(page, pages, master)
    errors = page.evaluate("""async ([url, room]) => {
        const out = [];
        for (const attempt of [
            // a generous timeout: on a loaded CI machine a refusal must not turn into "no connection"
            () => mc.openChat(url, room, { client: "web", mode: "join", timeout: 30 }),
            () => mc.connectApp(url, { client: "bad name", timeout: 30 }),
        ]) {
            try { await attempt(); out.push("connected"); }
            catch (e) { out.push({ name: e.name, code: e.code, status: e.status, closeCode: e.closeCode,
                                   temporary: e.temporary, reason: e.reason }); }
        }
        return out;
    }""", [master.http, unique("nobody-here")])
    join, bad = errors
    assert (join["name"], join["code"], join["status"]) == ("McError", "not_found", 404)
    assert join["closeCode"] == 4404
    assert join["temporary"] is False and "no chat session" in join["reason"]
    assert (bad["code"], bad["status"], bad["closeCode"]) == ("bad_request", 400, 4400)
    assert bad["temporary"] is False


def test_app_page_gets_notifies_and_reconnects_after_kill_9(page: Any, pages: PageServer) -> None:
    with cluster(2) as (master, workers):
        open_page(page, pages, master)
        client = unique("web-app")
        first = page.evaluate("""async ([url, client]) => {
            const app = await mc.connectApp(url, { client, backoff: { initial: 0.1, maximum: 1 } });
            window.app = app;
            window.reconnects = 0;
            app.on("notify", (n) => window.got.push(n.data));
            app.on("reconnecting", () => { window.reconnects++; });
            app.on("open", (w) => { window.worker = w.worker; });
            window.worker = app.worker;
            return app.worker;
        }""", [master.http, client])
        with httpx.Client(base_url=master.http, timeout=5) as http:
            def notify(data: Any) -> int:
                r = http.post("/v1/notify", json={"to": {"client": client}, "data": data})
                return r.json()["delivered"] if r.status_code == 200 else 0

            assert notify({"n": 1}) == 1  # presence before welcome: no wait needed
            page.wait_for_function("window.got.length === 1")
            victim = next(w for w in workers if worker_id(w) == first)
            victim.kill9()
            # the page reconnects by itself (through the master, to the live worker)
            page.wait_for_function(f"window.worker !== {first!r} && window.app.connected",
                                   timeout=(SETTLE + 5) * 1000)
            assert page.evaluate("window.reconnects") >= 1
            wait_until(lambda: notify({"n": 2}), "a notify delivered to the reconnected page")
            page.wait_for_function("window.got.length >= 2")
            assert page.evaluate("window.got")[:2] == [{"n": 1}, {"n": 2}]
        assert page.errors == []


def test_page_outside_allowed_origins_is_refused(browser: Any, pages: PageServer) -> None:
    other = PageServer()  # a second local origin, not in allowed_origins
    master = master_proc("--lease", "2", "--allowed-origins", pages.origin)
    worker = worker_for(master, "--allowed-origins", pages.origin)
    master.start()
    try:
        worker.start()
        wait_registered_sync(master, [worker_id(worker)])
        context = browser.new_context()
        try:
            results = {}
            for server in (pages, other):
                pg = context.new_page()
                pg.set_default_timeout(15_000)
                pg.goto(server.add("/app.html", mc_page(master.http)))
                pg.wait_for_function("window.mcReady === true")
                results[server.origin] = pg.evaluate("""async ([url, worker]) => {
                    const out = {};
                    try { out.fetch = (await (await fetch(url + "/v1/workers")).json()).workers.length; }
                    catch (e) { out.fetch = e.name; }
                    try {
                        const app = await mc.connectApp(url, { client: "web" });
                        out.app = app.worker;
                        app.close();
                    }
                    catch (e) { out.app = [e.code, e.status, e.closeCode]; }
                    try { await mc.connectApp(worker, { client: "web2" }); out.worker = "connected"; }
                    catch (e) { out.worker = [e.code, e.status]; }
                    return out;
                }""", [master.http, worker.url])
        finally:
            context.close()
        assert results[pages.origin] == {"fetch": 1, "app": worker_id(worker), "worker": "connected"}
        assert results[other.origin] == {"fetch": "TypeError", "app": ["forbidden", 403, 4403],
                                         "worker": ["forbidden", 403]}
    finally:
        other.close()
        worker.stop()
        master.stop()


def test_app_page_refreshes_its_token_before_exp(page: Any, pages: PageServer) -> None:
    secret = "browser-test-secret-of-32-bytes-at-least"
    with cluster(1, worker_extra=("--jwt-secret", secret)) as (master, _):
        # the first token expires in 33 s: the client refreshes 30 s before, so after ~3 s
        tokens = [mint(secret, "web-jwt", 33), mint(secret, "web-jwt", 600)]
        open_page(page, pages, master)
        page.evaluate("""async ([url, tokens]) => {
            window.tokens = tokens.slice();
            const tokenProvider = () => window.tokens.shift();
            window.app = await mc.connectApp(url, { client: "web-jwt", tokenProvider });
            window.app.on("error", (e) => window.got.push(["error", e.code]));
        }""", [master.http, tokens])
        page.wait_for_function(f"window.app._token === {tokens[1]!r}", timeout=15_000)
        assert page.evaluate("window.app.connected") is True
        assert page.evaluate("window.got") == []
        # without a token the worker refuses the app: 401 reaches the page as an error
        err = page.evaluate("""async (url) => {
            try { await mc.connectApp(url, { client: "web-jwt" }); return "connected"; }
            catch (e) { return [e.code, e.status, e.closeCode]; }
        }""", master.http)
        assert err == ["unauthorized", 401, 4401]
