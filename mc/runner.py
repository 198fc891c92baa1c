"""Running a long-lived trio service until SIGINT or SIGTERM.

Every process mc starts (master, worker, ``mc up``) runs through here so
shutdown is always the same: the signal cancels the service's scope, whose
``finally`` blocks then drain and close in order.
"""

from __future__ import annotations

import logging
import signal
from typing import Awaitable, Callable

import trio


async def until_signalled(service: Callable[[], Awaitable[object]]) -> None:
    """Run ``service`` until it returns or a SIGINT/SIGTERM arrives."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

            async def watch() -> None:
                async for signum in signals:
                    logging.getLogger("mc").info("got %s, stopping", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            await service()
            nursery.cancel_scope.cancel()


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
