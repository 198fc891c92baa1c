"""The SDK over TLS: certificates verified by default, a private CA through ``ssl_context=``.

A real worker behind a TLS-terminating proxy (tests/integration/tlsproxy.py)
with a certificate the test made (mc/bench/certs.py): the app, chat and
consumer SDK and ``mc publish`` connect over ``https://`` / ``wss://`` when
they trust the CA, and refuse to when they do not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import mc
from mc.bench.certs import make_certs
from tests.procs import running, worker_proc

from .tlsproxy import tls_proxy
from .wsclient import unique

pytestmark = pytest.mark.timeout(60)


async def test_sdk_trusts_a_private_ca_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    with running(worker_proc()) as (w,):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(tls_proxy, certs.server_context(), w.port)
            base = f"https://127.0.0.1:{port}"
            ctx = certs.client_context()
            topic = unique("tls")
            async with mc.connect_consumer(base, name="tls", ssl_context=ctx) as consumer, \
                    mc.connect_app(base, client=unique("app"), ssl_context=ctx) as app, \
                    mc.open_chat(base, unique("room"), client=app.client, ssl_context=ctx) as chat:
                assert consumer.workers == (f"w{w.port}",)  # found over https (discovery)
                await consumer.subscribe(topic)
                assert await app.publish(topic, "over tls") == 1
                with trio.fail_after(5):
                    assert (await consumer.receive()).data == "over tls"
                assert chat.members == (app.client,)
            # mc publish (its own pipelined client) trusts the CA through SSL_CERT_FILE
            argv = [sys.executable, "-m", "mc.cli", "publish", topic, "1", "--master", base]
            env = dict(os.environ, SSL_CERT_FILE=str(certs.ca))
            done = await trio.to_thread.run_sync(lambda: subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=30))
            assert done.returncode == 0, done.stderr
            assert '"delivered":0' in done.stdout
            # the system's CAs do not know this one: nothing connects
            for opening in (lambda: mc.connect_app(base, client="x", connect_timeout=2),
                            lambda: mc.connect_consumer(base, name="x", connect_timeout=2)):
                with pytest.raises(mc.McError) as refused:
                    async with opening():
                        pass
                assert "is not trusted" in refused.value.reason and not refused.value.temporary
            env.pop("SSL_CERT_FILE", None)
            done = await trio.to_thread.run_sync(lambda: subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=30))
            assert done.returncode == 2 and "is not trusted" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
            nursery.cancel_scope.cancel()
