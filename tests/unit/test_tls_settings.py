"""tls_cert/tls_key: both or neither, loaded at start-up, shown as paths only."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mc.bench.certs import CertFiles
from mc.master.config import MasterConfig
from mc.security import server_ssl_context
from mc.settings import SettingsError, shown
from mc.worker.config import WorkerConfig


@pytest.mark.parametrize("cls", [WorkerConfig, MasterConfig])
def test_off_by_default(cls) -> None:
    assert server_ssl_context(cls()) is None


@pytest.mark.parametrize("which", ["tls_cert", "tls_key"])
def test_one_without_the_other(certs: CertFiles, which: str) -> None:
    with pytest.raises(SettingsError, match="tls_cert and tls_key go together"):
        WorkerConfig(**{which: str(certs.cert if which == "tls_cert" else certs.key)})


def test_a_pair_that_does_not_match(certs: CertFiles) -> None:
    with pytest.raises(SettingsError, match="not a PEM certificate chain and its matching private key"):
        MasterConfig(tls_cert=str(certs.cert), tls_key=str(certs.ca))


def test_a_missing_file(certs: CertFiles) -> None:
    with pytest.raises(SettingsError, match="tls_key: cannot read"):
        WorkerConfig(tls_cert=str(certs.cert), tls_key="/nonexistent/key.pem")


def test_the_context_refuses_old_protocols(certs: CertFiles) -> None:
    ctx = server_ssl_context(WorkerConfig(tls_cert=str(certs.cert), tls_key=str(certs.key)))
    assert ctx is not None and ctx.minimum_version.name == "TLSv1_2"


def test_config_check_shows_paths_never_the_key(certs: CertFiles, tmp_path) -> None:
    config = tmp_path / "mc.toml"
    config.write_text(f'tls_cert = "{certs.cert}"\ntls_key = "{certs.key}"\n')
    out = subprocess.run([sys.executable, "-m", "mc.cli", "config", "check", "--config", str(config)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f'"tls_key": "{certs.key}"' in out.stdout
    assert "PRIVATE KEY" not in out.stdout + out.stderr
    settings = shown(WorkerConfig(tls_cert=str(certs.cert), tls_key=str(certs.key)))
    assert settings["tls_cert"] == str(certs.cert)


def test_bad_pair_is_one_line_and_exit_2(certs: CertFiles) -> None:
    out = subprocess.run([sys.executable, "-m", "mc.cli", "worker", "--port", "0", f"--tls-cert={certs.cert}",
                          f"--tls-key={certs.ca}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "tls_cert/tls_key: cannot load" in out.stderr
    assert "Traceback" not in out.stderr


def test_advertised_url_follows_tls(certs: CertFiles) -> None:
    tls = {"tls_cert": str(certs.cert), "tls_key": str(certs.key)}
    assert WorkerConfig().advertised(7101) == "ws://127.0.0.1:7101"
    assert WorkerConfig(**tls).advertised(7101) == "wss://127.0.0.1:7101"
    assert WorkerConfig(advertise="wss://w1.example.com", **tls).advertised(7101) == "wss://w1.example.com"
