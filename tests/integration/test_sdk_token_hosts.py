"""The SDK's credential goes only to the master and to workers it named (issue 10 item 7).

A real master (JWT and API keys on) with a fake worker registered on its
control link: the master sends apps and consumers to the fake, which
answers every handshake with ``307`` to a third server that records what
arrives. The token must reach the fake (the master named it) and never the
third server; the SDK goes back through the master and, for an app, stops
with ``forbidden`` after three such attempts; ``mc publish`` stops at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

import mc
from tests.procs import Proc, free_port, master_proc, running

from .cluster import http_client, wait_registered, ws_base
from .test_worker_security import SECRET, mint

API_KEY = "token-hosts-key-0123456789"
#: a request head larger than this is not one the SDK sends
HEAD_LIMIT = 16384

pytestmark = pytest.mark.timeout(60)


@attrs.define
class HeadServer:
    """A loopback HTTP server that records each request head and answers ``response``."""

    response: bytes
    port: int = attrs.field(factory=free_port)
    heads: list[str] = attrs.field(factory=list)

    def authorized(self) -> list[str]:
        return [h for h in self.heads if "\r\nauthorization:" in h.lower()]

    async def _one(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in data and len(data) < HEAD_LIMIT:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    data += chunk
            self.heads.append(data.decode("latin-1"))
            try:
                await stream.send_all(self.response)
            except trio.BrokenResourceError:
                pass

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self._one, listeners)


def redirect_to(port: int) -> bytes:
    return (f"HTTP/1.1 307 Temporary Redirect\r\nLocation: ws://127.0.0.1:{port}/v1/app?client=x\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()


async def _register(master: Proc, fake: HeadServer, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Keep ``fake`` registered (a heartbeat every 0.5 s) with a capacity no real worker has."""
    async with open_websocket_url(f"{ws_base(master)}/v1/control") as link:
        await link.send_message(orjson.dumps({
            "type": "register", "worker": "fake", "url": f"ws://127.0.0.1:{fake.port}",
            "capacity": 10**6, "sessions": {}, "presence": [],
        }).decode())
        task_status.started()
        while True:
            await link.send_message(orjson.dumps({"type": "heartbeat", "metrics": {}}).decode())
            with trio.move_on_after(0.5):
                while True:
                    await link.get_message()  # registered, and whatever else the master says


@asynccontextmanager
async def fake_cluster() -> AsyncIterator[tuple[Proc, HeadServer, HeadServer]]:
    """A master whose only worker is a fake that redirects every handshake to a recorder."""
    recorder = HeadServer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    fake = HeadServer(redirect_to(recorder.port))
    with running(master_proc("--lease", "5", "--jwt-secret", SECRET, "--api-keys", API_KEY)) as (master,):
        async with trio.open_nursery() as nursery:
            await nursery.start(recorder.serve)
            await nursery.start(fake.serve)
            await nursery.start(_register, master, fake)
            async with http_client() as http:
                await wait_registered(http, master, ["fake"])
            yield master, fake, recorder
            nursery.cancel_scope.cancel()


async def test_an_app_token_never_follows_a_worker_redirect_to_another_host() -> None:
    token = mint("alice", 60)
    async with fake_cluster() as (master, fake, recorder):
        with pytest.raises(mc.McError) as refused:
            async with mc.connect_app(master.http, client="alice", token=token):
                pass
        err = refused.value
        assert err.code == "forbidden" and not err.temporary
        assert f"redirected to ws://127.0.0.1:{recorder.port}" in err.reason
        assert "a host the master did not name" in err.reason and token not in err.reason
        # three attempts, each back through the master (it alone sends apps to the fake)
        assert len(fake.authorized()) == 3
        assert recorder.heads == []
        # a chat too, through the same rule
        with pytest.raises(mc.McError) as chat_refused:
            async with mc.open_chat(master.http, "room", client="alice", token=token):
                pass
        assert chat_refused.value.code == "forbidden"
        assert recorder.heads == []


async def test_a_consumer_key_never_follows_a_worker_redirect() -> None:
    async with fake_cluster() as (master, fake, recorder):
        with trio.move_on_after(2):  # the consumer keeps retrying the listed worker, without the key
            async with mc.connect_consumer(master.http, name="svc", api_key=API_KEY, connect_timeout=5):
                await trio.sleep_forever()
        assert len(fake.authorized()) >= 2
        assert recorder.heads == []


async def test_mc_publish_stops_at_an_untrusted_redirect() -> None:
    token = mint("pub", 60)
    async with fake_cluster() as (master, fake, recorder):
        argv = [sys.executable, "-m", "mc.cli", "publish", "t", "1", "--master", master.http]
        done = await trio.to_thread.run_sync(lambda: subprocess.run(
            argv, env=dict(os.environ, MC_TOKEN=token), capture_output=True, text=True, timeout=30))
        assert done.returncode == 2, done.stderr
        assert "a host the master did not name" in done.stderr and token not in done.stderr
        assert len(fake.authorized()) == 1 and recorder.heads == []
