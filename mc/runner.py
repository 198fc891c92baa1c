"""Running a long-lived trio service until SIGINT or SIGTERM; SIGHUP reloads its settings.

Every process mc starts (master, worker, ``mc up``) runs through here so
shutdown is always the same: the signal cancels the service's scope, whose
``finally`` blocks then drain and close in order. SIGHUP reads the settings
again from the same sources (file, env, flags) and hands them to the
service's ``Reloader.apply``: keys, limits and origins change without
dropping a connection; a bad file keeps the old settings (and says why).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from mc import logs
from mc.security import SecuritySettings
from mc.settings import SettingsError

C = TypeVar("C")

log = logging.getLogger("mc")


class Reloader:
    """Loads the settings again and hands them to the running service (``apply``)."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self.apply: Callable[[Any], None] | None = None

    def reload(self) -> str | None:
        """Reload now; the error (and the old settings kept) if they do not load."""
        try:
            config = self._load()
        except SettingsError as exc:
            log.error("reload failed, keeping the running settings: %s", exc, extra={"reason": str(exc)})
            return str(exc)
        if self.apply is not None:
            self.apply(config)
        log.info("settings reloaded", extra={"step": "reload"})
        return None


#: the exit status after Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED = 130


async def until_signalled(service: Callable[[], Awaitable[object]],
                          reloader: Reloader | None = None) -> int | None:
    """Run ``service`` until it returns or a SIGINT/SIGTERM arrives; SIGHUP reloads.

    Returns the signal that stopped it (``signal.SIGINT``: Ctrl-C), or None.
    """
    stopped_by: int | None = None
    # the receiver outlives the nursery: if the service fails, the watcher is
    # cancelled before the receiver closes (else it fails too, hiding the cause)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal stopped_by
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        if reloader is not None:
                            reloader.reload()
                        continue
                    log.info("got %s, stopping", signal.Signals(signum).name)
                    stopped_by = signum
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            await service()
            nursery.cancel_scope.cancel()
    return stopped_by


def run_service(
    load: Callable[[], C], service: Callable[[C, Reloader], Callable[[], Awaitable[Any]]],
    process: str = "mc",
) -> int:
    """Load the settings, then serve until signalled.

    A bad setting or an address already in use is one line on stderr and exit
    code 2, never a traceback (tracebacks only at log level debug). Ctrl-C
    (SIGINT) stops it in order and exits with 130; SIGTERM with 0.
    """
    try:
        config = load()
    except SettingsError as exc:
        print(f"mc: {exc}", file=sys.stderr)
        return 2
    problem = (config.exposure_problem(getattr(config, "host", ""))
               if isinstance(config, SecuritySettings) else None)
    if problem:
        print(f"mc: {problem}", file=sys.stderr)
        return 2
    level = getattr(config, "log_level", "info")
    setup_logging(level, getattr(config, "log_format", "text"), process)
    try:
        reloader = Reloader(load)
        stopped_by = trio.run(until_signalled, service(config, reloader), reloader)
    except (OSError, BaseExceptionGroup) as exc:
        cause = _os_error(exc)
        if cause is None or level.lower() == "debug":
            raise
        print(f"mc: {cause.strerror or cause}: {getattr(config, 'host', '')}:{getattr(config, 'port', '')}",
              file=sys.stderr)
        return 2
    return INTERRUPTED if stopped_by == signal.SIGINT else 0


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError (e.g. address in use) inside ``exc``, if that is all it is."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, OSError) else None


def setup_logging(level: str = "INFO", fmt: str = "text", process: str | None = None) -> None:
    """Text or JSON lines naming the process (mc/logs.py)."""
    logs.setup(level, fmt, process)
