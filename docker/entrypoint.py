#!/opt/mc/bin/python
"""The container entrypoint: ``mc ROLE`` with flags built from ``MC_*`` variables.

``mc master`` and ``mc worker`` get one flag per ``MC_<SETTING>`` variable that
is set and non-empty, for every flag that command has: ``MC_LEASE=2`` becomes
``--lease 2``, ``MC_MAX_CONNECTIONS`` ``--max-connections``, ``MC_INSECURE=1``
``--insecure`` (a switch: 1/true/yes/on), ``MC_MASTERS`` (a comma list, also
``MC_MASTER``) one ``--master`` each. The flags are read from mc's own parser,
so a setting mc gains later (``--cluster-key``...) is passed on without a
change here; a variable for a flag this mc does not have yet is reported and
not passed. Arguments after the role are appended and win.

A worker must advertise an address its clients can reach. Unless
``MC_ADVERTISE`` is set, it advertises ``ws://{ip}:{port}``, where ``ip`` is
this container's own address on the network that leads to the first master
(the source address the kernel picks to reach it; no packet is sent) and
``port`` is ``MC_PORT`` (default 7101). ``MC_ADVERTISE`` may use the same
``{ip}``, ``{hostname}`` and ``{port}`` placeholders, e.g.
``wss://{hostname}.workers.example.com`` behind a proxy.

Anything else is run as given: an ``mc`` subcommand (``consume orders.>``) as
``mc consume orders.>``, any other program (``python app.py``) as is. The
process is exec'd, so it is PID 1 and gets the container's SIGTERM itself.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

#: roles whose flags come from MC_* variables
ROLES = ("master", "worker")
#: what a container listens on unless MC_HOST says otherwise
CONTAINER_HOST = "0.0.0.0"
DEFAULT_PORTS = {"master": 7100, "worker": 7101}
DEFAULT_ADVERTISE = "ws://{ip}:{port}"
#: how long a worker waits for the master's name to resolve (it may start first)
RESOLVE_TIMEOUT = 30.0
SECRET_WORDS = ("key", "secret", "token", "password")
TRUE = ("1", "true", "yes", "on")


def log(text: str) -> None:
    print(f"mc-entrypoint: {text}", file=sys.stderr, flush=True)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """``mc``'s subcommands and their parsers, as mc itself builds them."""
    from mc.cli import build_parser

    for action in build_parser()._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise SystemExit("mc-entrypoint: mc's command line has no subcommands")


def env_name(flag: str) -> str:
    """``--max-connections`` -> ``MC_MAX_CONNECTIONS``."""
    return "MC_" + flag.lstrip("-").replace("-", "_").upper()


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def flags_from_env(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> list[str]:
    """One flag per set ``MC_*`` variable that ``parser`` knows; reports the others."""
    args: list[str] = []
    known = set()
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or longs[0] == "--help":
            continue
        flag = longs[0]
        names = [env_name(flag)]
        if isinstance(action, argparse._AppendAction):
            names.insert(0, names[0] + "S")  # --master: MC_MASTERS, a comma list
        known.update(names)
        value = next((env[n] for n in names if env.get(n, "").strip()), None)
        if value is None:
            continue
        if action.nargs == 0:  # a switch (store_true)
            if value.strip().lower() in TRUE:
                args.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in split_list(value):
                args.append(f"{flag}={item}")  # one word: a value starting with "-" stays a value
        else:
            args.append(f"{flag}={value}")
    for name in sorted(n for n, v in env.items() if n.startswith("MC_") and v and n not in known):
        flag = "--" + name[3:].lower().replace("_", "-")
        log(f"{name} is set, but this mc has no {flag} flag (yet): not passed")
    return args


def own_address(masters: Iterable[str], timeout: float = RESOLVE_TIMEOUT) -> str:
    """This container's address on the network that leads to the first master.

    Connecting a UDP socket sends nothing; it only asks the kernel which
    source address it would use. Falls back to the address the container's
    own hostname resolves to (Docker and Podman put it in /etc/hosts).
    """
    first = next(iter(masters), "")
    parts = urlsplit(first)
    if parts.hostname:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.connect((parts.hostname, port))
                    return probe.getsockname()[0]
            except OSError as exc:
                if time.monotonic() >= deadline:
                    log(f"cannot resolve the master {parts.hostname!r}: {exc}")
                    break
                time.sleep(0.5)
    return socket.gethostbyname(socket.gethostname())


def advertise_url(env: Mapping[str, str], masters: list[str]) -> str:
    template = env.get("MC_ADVERTISE", "").strip() or DEFAULT_ADVERTISE
    port = env.get("MC_PORT", "").strip() or str(DEFAULT_PORTS["worker"])
    values = {"port": port, "hostname": socket.gethostname()}
    if "{ip}" in template:
        values["ip"] = own_address(masters)
    return template.format(**values)


def role_args(role: str, extra: list[str], environ: Mapping[str, str]) -> list[str]:
    """The full ``mc`` argument list for ``master`` or ``worker``."""
    env = dict(environ)
    if not env.get("MC_HOST", "").strip():
        env["MC_HOST"] = CONTAINER_HOST
    if role == "worker":
        masters = split_list(env.get("MC_MASTERS", "") or env.get("MC_MASTER", ""))
        env["MC_ADVERTISE"] = advertise_url(env, masters)
    return [role, *flags_from_env(subcommands()[role], env), *extra]


def masked(args: list[str]) -> str:
    shown = []
    hide = False
    for arg in args:
        shown.append("***" if hide else arg)
        hide = arg.startswith("--") and any(w in arg for w in SECRET_WORDS)
    return " ".join(shown)


def main(argv: list[str]) -> None:
    if not argv:
        argv = ["worker"]
    role, extra = argv[0], argv[1:]
    if role in ROLES:
        args = ["mc", *role_args(role, extra, os.environ)]
        log(masked(args))
    elif role in subcommands():
        args = ["mc", *argv]
    else:
        args = argv
    os.execvp(args[0], args)


if __name__ == "__main__":
    main(sys.argv[1:])
