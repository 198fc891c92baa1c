"""The settings model (mc.settings): one default per field, every source derived from it."""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs
import pytest

from mc.master.config import MasterConfig
from mc.settings import SettingsError, add_arguments, load, positive, setting, shown
from mc.worker.config import WorkerConfig


@attrs.frozen
class Demo:
    port: int = setting(7000, "a port")
    rate: float = setting(1.5, "a rate", validator=positive)
    names: tuple[str, ...] = setting((), "names")
    on: bool = setting(False, "a switch")
    secret: str = setting("", "a secret", secret=True)


def parse(cls: type, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return parser.parse_args(list(argv))


def test_priority_defaults_file_env_flags(tmp_path: Path) -> None:
    assert load(Demo, parse(Demo), env={}) == Demo()
    toml = tmp_path / "mc.toml"
    toml.write_text('port = 1\nrate = 2.0\nnames = ["a", "b"]\non = true\n')
    args = parse(Demo, "--config", str(toml))
    assert load(Demo, args, env={}) == Demo(1, 2.0, ("a", "b"), True)
    env = {"MC_PORT": "2", "MC_NAMES": "x, y,", "MC_ON": "no"}
    assert load(Demo, args, env=env) == Demo(2, 2.0, ("x", "y"), False)
    flags = parse(Demo, "--config", str(toml), "--port", "3", "--names", "p", "--names", "q,r")
    assert load(Demo, flags, env=env) == Demo(3, 2.0, ("p", "q", "r"), False)
    assert load(Demo, parse(Demo), env={"MC_CONFIG": str(toml)}).port == 1


@pytest.mark.parametrize(("source", "message"), [
    ({"MC_PORT": "seven"}, "port: 'seven' is not a valid int"),
    ({"MC_RATE": "-1"}, "rate must be a positive number"),
    ({"MC_ON": "maybe"}, "on: 'maybe' is not a valid bool"),
])
def test_bad_values_name_the_setting(source: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(Demo, parse(Demo), env=source)


def test_file_errors_name_the_key_or_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        load(Demo, parse(Demo, "--config", str(bad)), env={})
    bad.write_text("port = [\n")
    with pytest.raises(SettingsError, match=r"bad\.toml"):
        load(Demo, parse(Demo, "--config", str(bad)), env={})
    with pytest.raises(SettingsError, match=r"missing\.toml"):
        load(Demo, parse(Demo, "--config", str(tmp_path / "missing.toml")), env={})
    bad.write_text('port = "1"\n')
    with pytest.raises(SettingsError, match="port"):
        load(Demo, parse(Demo, "--config", str(bad)), env={})


def test_help_shows_each_default_and_env_name() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, WorkerConfig)
    text = parser.format_help()
    assert "(default: 65536; env MC_MAX_FRAME)" in " ".join(text.split())
    assert "--master VALUE, --masters VALUE" in text


def test_secrets_are_masked() -> None:
    assert shown(Demo(secret="hunter2"))["secret"] == "***"
    assert shown(Demo())["secret"] == ""


def test_process_configs_validate() -> None:
    with pytest.raises(SettingsError, match="port must be a port number"):
        WorkerConfig(port=70000)
    with pytest.raises(SettingsError, match="log_level must be one of"):
        MasterConfig(log_level="LOUD")
    with pytest.raises(SettingsError, match="host must be text without control characters"):
        WorkerConfig(host="a\r\nb")
    assert WorkerConfig(log_level="INFO").log_level == "INFO"
    cfg = WorkerConfig(port=0)
    assert cfg.advertised(4321) == "ws://127.0.0.1:4321" and cfg.worker_id(4321).endswith(":4321")
    assert WorkerConfig(id="w", advertise="ws://x:1").advertised(5) == "ws://x:1"
