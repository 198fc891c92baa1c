"""One configuration model per process: defaults written once, every source derived.

A process's settings are one frozen attrs class whose fields are declared
with :func:`setting` (default, help text, validator). Everything else is
derived from those fields, so a default is never restated:

* command-line flags (``--max-frame``; ``--help`` shows each default),
* environment variables (``MC_MAX_FRAME``; lists as comma lists),
* a TOML file (``--config FILE`` or ``MC_CONFIG``; keys are the field names).

Priority, lowest first: defaults, the TOML file, the environment, flags
(PROTOCOL.md "Configuration"). An unknown TOML key, an unknown ``MC_`` name
that looks like a setting of this process, or a bad value is an error that
names the setting: never ignored, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
from attrs import AttrsInstance

ENV_PREFIX = "MC_"
CONFIG_ENV = "MC_CONFIG"

T = TypeVar("T", bound=AttrsInstance)


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it and says why."""


def setting(
    default: Any,
    help: str,
    *,
    validator: Callable[[Any, attrs.Attribute, Any], None] | None = None,
    flags: tuple[str, ...] = (),
    secret: bool = False,
) -> Any:
    """A config field: its default, its ``--help`` text and its validator.

    ``flags`` overrides the derived flag names (the first is the canonical
    one); ``secret`` masks the value wherever settings are shown.
    """
    return attrs.field(
        default=default,
        validator=validator,
        metadata={"help": help, "flags": flags, "secret": secret},
    )


# ------------------------------------------------------------------ validators


def positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SettingsError(f"{attribute.name} must be a positive number, not {value!r}")


def non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SettingsError(f"{attribute.name} must be zero or more, not {value!r}")


def port_number(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise SettingsError(f"{attribute.name} must be a port number 0-65535, not {value!r}")


def one_of(*choices: str) -> Callable[[Any, attrs.Attribute, Any], None]:
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, str) or value.lower() not in choices:
            raise SettingsError(f"{attribute.name} must be one of {', '.join(choices)}, not {value!r}")

    return check


def readable_file(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Empty, or a file this process can read (checked when the settings load)."""
    if value and not os.access(value, os.R_OK):
        raise SettingsError(f"{attribute.name}: cannot read {value!r}")


def no_control_chars(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if not isinstance(v, str) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise SettingsError(f"{attribute.name} must be text without control characters")


# ------------------------------------------------------------------ conversion


def _kind(field: attrs.Attribute) -> type:
    default = field.default
    if isinstance(default, bool):
        return bool
    if isinstance(default, tuple):
        return tuple
    if isinstance(default, float):
        return float
    if isinstance(default, int):
        return int
    return str


def _convert(field: attrs.Attribute, raw: Any) -> Any:
    """A value from text (env, flags) or TOML into the field's type."""
    kind = _kind(field)
    name = field.name
    try:
        if kind is tuple:
            if isinstance(raw, str):
                return tuple(p.strip() for p in raw.split(",") if p.strip())
            if isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
                return tuple(raw)
            raise TypeError
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is float:
            if isinstance(raw, bool):
                raise TypeError
            return float(raw)
        if kind is int:
            if isinstance(raw, (bool, float)):
                raise TypeError
            return int(raw)
        if not isinstance(raw, str):
            raise TypeError
        return raw
    except (TypeError, ValueError):
        raise SettingsError(f"{name}: {raw!r} is not a valid {kind.__name__}") from None


def _flags(field: attrs.Attribute) -> tuple[str, ...]:
    return field.metadata["flags"] or ("--" + field.name.replace("_", "-"),)


def env_name(field: attrs.Attribute) -> str:
    return ENV_PREFIX + field.name.upper()


# ------------------------------------------------------------------ sources


def add_arguments(parser: argparse.ArgumentParser, cls: type[AttrsInstance]) -> None:
    """One flag per field, with its help and default; plus ``--config``."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help=f"TOML settings file (default: ${CONFIG_ENV}, else none)")
    for field in attrs.fields(cls):
        default = field.default
        shown = f"default: {default!r}; " if default not in ("", ()) else ""
        help_text = f"{field.metadata['help']} ({shown}env {env_name(field)})"
        kind = _kind(field)
        if kind is bool:
            parser.add_argument(*_flags(field), dest=field.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        elif kind is tuple:
            parser.add_argument(*_flags(field), dest=field.name, default=None, action="append",
                                metavar="VALUE", help=help_text + "; repeat or comma-separate")
        else:
            parser.add_argument(*_flags(field), dest=field.name, default=None, metavar=field.name.upper(),
                                help=help_text)


def load(
    cls: type[T],
    args: argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults < TOML file < ``MC_*`` env < flags < ``overrides``."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    fields = {f.name: f for f in attrs.fields(cls)}
    path = getattr(args, "config", None) or env.get(CONFIG_ENV)
    if path:
        values.update(_from_toml(fields, path))
    for name, field in fields.items():
        raw = env.get(env_name(field))
        if raw is not None:
            values[name] = _convert(field, raw)
    if args is not None:
        for name, field in fields.items():
            raw = getattr(args, name, None)
            if raw is None:
                continue
            if _kind(field) is tuple:
                raw = ",".join(raw)
            values[name] = _convert(field, raw)
    if overrides:
        values.update(overrides)
    try:
        return cls(**values)
    except SettingsError:
        raise
    except (TypeError, ValueError) as exc:
        raise SettingsError(str(exc)) from None


def _from_toml(fields: Mapping[str, attrs.Attribute], path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path}: {exc}") from None
    out: dict[str, Any] = {}
    for key, raw in data.items():
        field = fields.get(key)
        if field is None:
            raise SettingsError(f"config file {path}: unknown setting {key!r}")
        kind = _kind(field)
        # TOML values are typed: a quoted number for an int setting is a mistake, not text to parse
        allowed = {int: (int,), float: (int, float), bool: (bool,), str: (str,), tuple: (list,)}[kind]
        if isinstance(raw, bool) != (kind is bool) or not isinstance(raw, allowed):
            raise SettingsError(f"config file {path}: {key} must be a TOML {kind.__name__}, not {raw!r}")
        out[key] = _convert(field, raw)
    return out


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@attrs.frozen(slots=True)
class ProcessSettings:
    """What every mc process has, whatever its role."""

    log_level: str = setting("info", "log level", validator=one_of(*LOG_LEVELS))
    log_format: str = setting("text", "log lines as text or as one JSON object per line",
                              validator=one_of(*LOG_FORMATS))


def shown(config: Any) -> dict[str, Any]:
    """The settings as a map, secrets masked (for logs, ``/v1/stats``, ``config check``)."""
    out: dict[str, Any] = {}
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if field.metadata.get("secret") and value:
            value = "***"
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out
