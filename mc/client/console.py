"""What the SDK-based CLI commands share (``mc publish|consume|chat|notify|status``).

Each command runs one trio function through :func:`mc.runner.until_signalled`
(Ctrl-C or SIGTERM ends it cleanly, closing its connections with 1000; Ctrl-C
exits with 130) and turns an :class:`McError` into one line on stderr instead
of a traceback: exit status 2 when nothing answered (``unavailable``: a dead
master URL, a refused connection), else 1. Output meant for programs is one JSON object per line,
flushed at once, so ``| jq`` sees each line as it happens.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio

from mc import logs
from mc.protocol import ErrorCode
from mc.runner import INTERRUPTED, until_signalled

from .errors import McError
from .urls import MASTER_ENV, default_master


def add_master(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master", default=default_master(), metavar="URL",
        help=f"the master's URL, or several (a comma list, tried in turn) sharing one store "
             f"(default: ${MASTER_ENV} or %(default)s)",
    )


#: the API key (consumers, the master's HTTP API) and the app token, for the CLI
API_KEY_ENV = "MC_API_KEY"
TOKEN_ENV = "MC_TOKEN"


def add_api_key(parser: argparse.ArgumentParser) -> None:
    """``--api-key``: read when the command runs, never printed (not even in ``--help``)."""
    parser.add_argument(
        "--api-key", metavar="KEY",
        help=f"the cluster's API key, when it has api_keys (default: ${API_KEY_ENV}; prefer the "
             "variable: a flag is visible to other users in ps)",
    )


def add_token(parser: argparse.ArgumentParser) -> None:
    """``--token``: the app's JWT when the cluster has jwt_secret / jwt_public_key."""
    parser.add_argument(
        "--token", metavar="JWT",
        help=f"the app token (see mc token), when the cluster requires one (default: ${TOKEN_ENV})",
    )


def api_key(args: argparse.Namespace) -> str | None:
    return args.api_key or os.environ.get(API_KEY_ENV) or None


def token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get(TOKEN_ENV) or None


def bearer(key: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``key`` (none without one)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def parse_data(text: str) -> Any:
    """``text`` as JSON when it parses (``42``, ``{"a": 1}``), else the string itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def emit(obj: Any) -> None:
    """One JSON line on stdout, flushed."""
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def say(text: str, stream: Any = None) -> None:
    """One human-readable line (stdout by default), flushed."""
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


async def read_line() -> str | None:
    """The next line of stdin without its newline; None at end of input.

    Read in a worker thread that is abandoned on cancellation, so Ctrl-C
    does not wait for the user to type another line.
    """
    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    return line.rstrip("\r\n") if line else None


def run(main: Callable[[], Awaitable[int | None]], prog: str, log_level: str = "WARNING") -> int:
    """Run ``main`` until it returns or a signal arrives; its exit status."""
    logs.setup(log_level, "text", prog)
    status = 0

    async def service() -> None:
        nonlocal status
        try:
            status = await main() or 0
        except McError as exc:
            say(f"{prog}: {exc}", sys.stderr)
            status = 2 if exc.code == ErrorCode.UNAVAILABLE else 1
        except BrokenPipeError:  # e.g. `mc consume ... | head -1`: the reader is gone
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            status = 0

    stopped_by = trio.run(until_signalled, service)
    return INTERRUPTED if stopped_by == signal.SIGINT else status
