"""Settings reload (SIGHUP, POST /v1/reload) and ``mc config check``.

PROTOCOL.md "Security" (revocation) and "Configuration".
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.procs import master_proc, running, worker_proc

from .cluster import http_client, wait_for
from .wsclient import connect, rejected

pytestmark = pytest.mark.timeout(60)


async def test_sighup_reloads_keys_without_dropping_connections(tmp_path: Path) -> None:
    settings = tmp_path / "worker.toml"
    settings.write_text('api_keys = ["old-key-0123456789"]\n')
    with running(worker_proc("--config", str(settings))) as (w,):
        async with connect(w.url, "/v1/consumer", name="c", token="old-key-0123456789") as revoked, \
                connect(w.url, "/v1/app", client="app") as app:
            settings.write_text('api_keys = ["new-key-0123456789"]\npublish_rate = 1\n')
            w.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
                while True:
                    await revoked.recv(timeout=5)
            assert closed.value.reason.code == 4001
            # the app is still there, and the new limit applies to it
            answers = [await app.request({"type": "publish", "topic": "t", "data": 1, "id": str(i)})
                       for i in range(4)]
            assert [a["type"] for a in answers][-1] == "error"
        old = await rejected(w.url, "/v1/consumer", name="c", token="old-key-0123456789")
        assert old.status_code == 401
        async with connect(w.url, "/v1/consumer", name="c", token="new-key-0123456789"):
            pass
        settings.write_text("publish_rate = -1\n")  # a bad file keeps the running settings
        w.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]

        async def logged() -> bool:
            return "reload failed, keeping the running settings" in w.output()

        await wait_for(logged, what="the failed reload logged")
        async with connect(w.url, "/v1/consumer", name="c2", token="new-key-0123456789"):
            pass


async def test_post_reload_on_the_master(tmp_path: Path) -> None:
    settings = tmp_path / "master.toml"
    settings.write_text('api_keys = ["first-key-0123456789"]\n')
    with running(master_proc("--config", str(settings))) as (m,):
        async with http_client() as http:
            first = {"Authorization": "Bearer first-key-0123456789"}
            second = {"Authorization": "Bearer second-key-0123456789"}
            assert (await http.get(f"{m.http}/v1/stats", headers=first)).status_code == 200
            settings.write_text('api_keys = ["second-key-0123456789"]\n')
            assert (await http.post(f"{m.http}/v1/reload")).status_code == 401
            assert (await http.post(f"{m.http}/v1/reload", headers=first)).json() == {"reloaded": True}
            assert (await http.get(f"{m.http}/v1/stats", headers=first)).status_code == 401
            assert (await http.get(f"{m.http}/v1/stats", headers=second)).status_code == 200
            settings.write_text("nope = 1\n")
            bad = await http.post(f"{m.http}/v1/reload", headers=second)
            assert bad.status_code == 400 and "unknown setting 'nope'" in bad.json()["reason"]
            assert (await http.get(f"{m.http}/v1/stats", headers=second)).status_code == 200


def test_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('api_keys = ["k-0123456789"]\njwt_secret = "shh-0123456789"\npublish_rate = 10\n')
    out = subprocess.run([sys.executable, "-m", "mc.cli", "config", "check", "--config", str(good)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert '"api_keys": "***"' in out.stdout and '"jwt_secret": "***"' in out.stdout
    assert "shh-0123456789" not in out.stdout + out.stderr and '"publish_rate": 10.0' in out.stdout
    for text, named in (("publish_rat = 1\n", "unknown setting 'publish_rat'"),
                        ("heartbeat = -5\n", "heartbeat must be a positive number"),
                        ('port = "7101"\n', "port must be a TOML int")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        out = subprocess.run([sys.executable, "-m", "mc.cli", "config", "check", "--config", str(bad)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and named in out.stderr and "Traceback" not in out.stderr
