"""The dashboard in a real Chromium: workers listed, charts moving under load (live over
/v1/events), and the drain / undrain actions (checked through /v1/workers). The test
keeps a screenshot at benchmarks/results/dashboard.png (it prints the path)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import mc
from tests.integration.cluster import SETTLE, cluster, worker_id
from tests.integration.wsclient import unique

from .conftest import SdkThread

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parents[2] / "benchmarks/results/dashboard.png"
#: the load's bound: messages sent at most (it stops earlier when told)
MAX_MESSAGES = 50_000


async def chat_load(url: str, room: str, stop: trio.Event, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Two SDK members of one room; one sends ~500 messages/s until ``stop`` (bounded)."""
    async with mc.open_chat(url, room, client="load-a") as a, mc.open_chat(url, room, client="load-b") as b:
        task_status.started()
        async with trio.open_nursery() as nursery:
            async def read() -> None:
                async for _ in b:
                    pass
            nursery.start_soon(read)
            for i in range(MAX_MESSAGES):
                if stop.is_set():
                    break
                await a.send(i)
                await trio.sleep(0.002)
            nursery.cancel_scope.cancel()


def worker_state(http: httpx.Client, wid: str) -> str | None:
    return next((w["state"] for w in http.get("/v1/workers").json()["workers"] if w["id"] == wid), None)


def wait_state(http: httpx.Client, wid: str, states: set[str]) -> str:
    deadline = time.monotonic() + SETTLE
    state = None
    while time.monotonic() < deadline:
        state = worker_state(http, wid)
        if state in states:
            return state
        time.sleep(0.05)
    raise AssertionError(f"{wid} never reached {states} (last: {state})")


def test_dashboard_is_live_charts_move_and_drain_works(page: Any, sdk: SdkThread) -> None:
    with cluster(2) as (master, workers), httpx.Client(base_url=master.http, timeout=5) as http:
        ids = sorted(worker_id(w) for w in workers)
        page.goto(f"{master.http}/")
        page.wait_for_function("window.mcDashboard && window.mcDashboard.events >= 1")
        page.wait_for_function(f"document.querySelectorAll('#workers tbody tr').length === {len(ids)}")
        rows = page.eval_on_selector_all("#workers tbody tr", "rows => rows.map(r => r.dataset.worker)")
        assert sorted(rows) == ids
        assert page.is_hidden("#login")  # no API keys: no login box
        assert page.text_content("#live") == "live"
        before = page.evaluate("document.getElementById('chart-messages').toDataURL()")

        stop = sdk.run_sync(trio.Event)
        sdk.start(chat_load, master.http, unique("load"), stop)
        try:
            page.wait_for_function("""() => {
                const s = window.mcDashboard.samples, last = s[s.length - 1];
                return last && last.msgs_in_per_s > 50 && last.connections >= 2; }""", timeout=SETTLE * 1000)
            page.wait_for_function("document.querySelector('#sessions tbody tr') !== null",
                                   timeout=SETTLE * 1000)
            after = page.evaluate("document.getElementById('chart-messages').toDataURL()")
            assert after != before, "the messages chart did not move"
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            print(f"dashboard screenshot: {SCREENSHOT}")
        finally:
            sdk.run_sync(stop.set)

        target = ids[0]
        page.click(f"#workers button.drain[data-worker='{target}']")
        assert wait_state(http, target, {"draining", "drained"})
        page.wait_for_selector(f"#workers button.undrain[data-worker='{target}']")
        page.click(f"#workers button.undrain[data-worker='{target}']")
        assert wait_state(http, target, {"up"}) == "up"
        assert page.errors == []


def test_dashboard_asks_for_the_api_key_when_keys_are_on(page: Any) -> None:
    key = "dash-key-1"
    with cluster(1, master_extra=("--api-keys", key)) as (master, workers), \
            httpx.Client(base_url=master.http, timeout=5) as http:
        page.goto(f"{master.http}/")
        page.wait_for_selector("#login", state="visible")
        assert page.evaluate("window.mcDashboard.events") == 0  # /v1/events is 401 without the key
        page.fill("#api-key", key)
        page.click("#login button[type=submit]")
        page.wait_for_function("window.mcDashboard.events >= 1")
        page.wait_for_selector("#workers tbody tr")
        assert page.evaluate("sessionStorage.getItem('mc.apiKey')") == key
        assert key not in page.url
        wid = worker_id(workers[0])
        page.click(f"#workers button.drain[data-worker='{wid}']")  # a POST with the key
        assert wait_state(http, wid, {"draining", "drained"})
        assert page.errors == []
