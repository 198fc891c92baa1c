"""``mc up``: a whole local cluster from one command, stopped by one SIGTERM; it restarts workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import psutil
import pytest
import trio

from tests.procs import free_run

from .cluster import follow, get_json, http_client, port_open, wait_for, wait_registered

pytestmark = pytest.mark.timeout(60)


class McUp:
    """``mc up ARGS`` as a child process with its logs in files (never a pipe that can
    fill); ``seen`` collects its children so none is left behind, whatever fails."""

    def __init__(self, *args: str) -> None:
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mc.cli", "up", *args],
            stdout=self.out, stderr=self.err, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.seen: list[psutil.Process] = []

    def children(self) -> list[psutil.Process]:
        found = psutil.Process(self.proc.pid).children(recursive=True)
        self.seen.extend(c for c in found if c not in self.seen)
        return found

    def __enter__(self) -> McUp:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:  # the test failed early: stop mc up, and so its children
            try:
                self.children()
            except psutil.NoSuchProcess:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for child in self.seen:
            try:
                if child.is_running():
                    child.kill()
            except psutil.NoSuchProcess:
                pass
        self.out.close()
        self.err.close()


async def test_up_starts_and_stops_a_cluster():
    port = free_run(3)
    with McUp("--workers", "2", "--port", str(port)) as up:
        proc, out, err = up.proc, up.out, up.err
        async with http_client() as http:
            try:
                body = await wait_registered(http, f"http://127.0.0.1:{port}", ["w1", "w2"], timeout=30)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nmc up exit: {proc.poll()}\n{read(err)[-3000:]}") from None
            urls = {w["id"]: w["url"] for w in body["workers"]}
            assert urls == {"w1": f"ws://127.0.0.1:{port + 1}", "w2": f"ws://127.0.0.1:{port + 2}"}
            # mc up reports itself up once it has seen every worker answer
            banner = f"master http://127.0.0.1:{port}"
            await wait_for(lambda: _has(out, banner), timeout=20, what="the mc up banner")
            children = up.children()
            assert len(children) == 3, children  # the master and two workers

            async with follow(f"ws://127.0.0.1:{port}", "/v1/app", client="up-app") as app:
                assert app.welcome["worker"] in urls

        proc.send_signal(signal.SIGTERM)
        code = await trio.to_thread.run_sync(lambda: proc.wait(15))
        assert code == 0, read(err)[-2000:]
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child
        for p in (port, port + 1, port + 2):
            assert not port_open(p), f"port {p} still open after mc up stopped"


async def _has(f, text: str) -> bool:
    return text in read(f)


def read(f) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
async def test_up_with_two_masters_starts_and_stops_its_own_redis():
    port = free_run(4)
    redis_port = free_run(1)
    with McUp("--workers", "2", "--masters", "2", "--port", str(port),
              "--redis-port", str(redis_port)) as up:
        proc, out, err = up.proc, up.out, up.err
        async with http_client() as http:
            for m in (port, port + 1):
                try:
                    await wait_registered(http, f"http://127.0.0.1:{m}", ["w1", "w2"], timeout=30)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\nmc up exit: {proc.poll()}\n{read(err)[-3000:]}") from None
            await wait_for(lambda: _has(out, "2 masters sharing"), timeout=20, what="the mc up banner")
            assert "started redis-server" in read(out)
            children = up.children()
            assert len(children) == 5, children  # redis-server, two masters, two workers
            assert any("redis-server" in c.name() for c in children)
            async with follow(f"ws://127.0.0.1:{port + 1}", "/v1/chat/up-room", client="c") as chat:
                owner = chat.welcome["worker"]
                body = (await http.get(f"http://127.0.0.1:{port}/v1/sessions/up-room")).json()
                assert body["worker"] == owner
        proc.send_signal(signal.SIGTERM)
        code = await trio.to_thread.run_sync(lambda: proc.wait(15))
        assert code == 0, read(err)[-2000:]
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child
        assert not port_open(redis_port)


def _child(proc: subprocess.Popen, *needle: str) -> psutil.Process:
    """The child of ``mc up`` whose command line contains ``needle`` (e.g. ``--id w2``)."""
    for child in psutil.Process(proc.pid).children(recursive=True):
        cmd = child.cmdline()
        if any(cmd[i:i + len(needle)] == list(needle) for i in range(len(cmd))):
            return child
    raise AssertionError(f"no child with {needle}")


async def test_up_restarts_a_killed_worker_and_stops_when_the_master_dies():
    port = free_run(3)
    with McUp("--workers", "2", "--port", str(port)) as up:
        proc, out, err = up.proc, up.out, up.err
        master = f"http://127.0.0.1:{port}"
        w2 = f"ws://127.0.0.1:{port + 2}"
        async with http_client() as http:
            await wait_registered(http, master, ["w1", "w2"], timeout=30)
            await wait_for(lambda: _has(out, "mc is up"), timeout=20, what="the mc up banner")
            up.children()
            victim = _child(proc, "--id", "w2")

            before = (await get_json(http, f"{master}/v1/workers"))["version"]
            killed = time.monotonic()
            victim.kill()  # SIGKILL

            async def back() -> bool:
                """w2 serves again and the master lists it after two membership changes
                (its purge, its new registration): the new process registered."""
                try:
                    health = await http.get(f"http://127.0.0.1:{port + 2}/healthz", timeout=0.5)
                    body = await get_json(http, f"{master}/v1/workers")
                except httpx.HTTPError:
                    return False
                ids = {w["id"] for w in body["workers"]}
                return health.status_code == 200 and body["version"] >= before + 2 and "w2" in ids

            await wait_for(back, timeout=10, interval=0.02, what="w2 restarted and registered")
            elapsed = time.monotonic() - killed
            print(f"\n[mc up] worker w2 kill -9'd: back (serving, registered) in {elapsed:.2f}s")
            assert elapsed < 5.0, elapsed
            restarted = _child(proc, "--id", "w2")
            assert restarted.pid != victim.pid
            up.seen.append(restarted)
            line = f"worker w2 (port {port + 2}) exited with -9 (SIGKILL); restarting in 1.0 s"
            assert line in read(err), read(err)[-3000:]
            body = await get_json(http, f"{master}/v1/workers")
            assert {w["id"]: w["url"] for w in body["workers"]} == {
                "w1": f"ws://127.0.0.1:{port + 1}", "w2": w2}

        # the master dying is fatal: mc up stops its workers and exits 1
        _child(proc, "master").kill()
        code = await trio.to_thread.run_sync(lambda: proc.wait(20))
        assert code == 1, read(err)[-2000:]
        assert "the master exited with -9 (SIGKILL)" in read(err)
        for child in up.seen:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child
        for p in (port, port + 1, port + 2):
            assert not port_open(p), f"port {p} still open after mc up stopped"


async def test_up_stops_with_one_line_when_a_worker_cannot_start():
    port = free_run(2)
    with socket.socket() as taken:  # the worker's port is in use
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        with McUp("--workers", "1", "--port", str(port)) as up:
            code = await trio.to_thread.run_sync(lambda: up.proc.wait(30))
            err = read(up.err)
    assert code == 1, err[-2000:]
    assert "mc up: worker w1 exited with 2 while starting; the cluster was stopped" in err, err[-2000:]
    assert f"Address already in use: 127.0.0.1:{port + 1}" in err
    assert "Traceback" not in err
    assert not port_open(port), "the master still listens after mc up stopped"
