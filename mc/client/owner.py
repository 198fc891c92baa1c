"""The lifetime every SDK object shares: a nursery from ``__aenter__`` to ``__aexit__``.

Structured concurrency: an SDK object's background tasks (readers,
reconnect loops, discovery) all live in the nursery it opens on entry, so
leaving the ``async with`` block closes the connections (code 1000, within
``close_timeout``) and then cancels whatever is left; nothing outlives it.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Self

import trio

from .options import Options


async def _exit_nursery(
    manager: AbstractAsyncContextManager[trio.Nursery], exc: BaseException | None
) -> bool:
    """Leave the nursery; True if ``exc`` was absorbed (a Cancelled of its own scope).

    The block's own exception propagates as itself, and a single background
    failure is raised bare, not wrapped in an ExceptionGroup (as
    trio-websocket's ``open_websocket`` does), so ``except McError`` works.
    """
    try:
        return bool(await manager.__aexit__(
            type(exc) if exc is not None else None, exc, exc.__traceback__ if exc is not None else None
        ))
    except BaseExceptionGroup as group:
        rest = [e for e in group.exceptions if e is not exc]
        if not rest:
            return False
        if len(rest) == 1:
            raise rest[0] from None
        raise


class Owner:
    """Base class: subclasses implement ``_start`` (connect) and ``_stop`` (close)."""

    _options: Options
    _nursery: trio.Nursery
    _manager: AbstractAsyncContextManager[trio.Nursery]

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        manager = trio.open_nursery()
        self._nursery = await manager.__aenter__()
        self._manager = manager
        try:
            await self._start()
        except BaseException as exc:
            self._nursery.cancel_scope.cancel()
            await _exit_nursery(manager, exc)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._options.close_timeout):
                await self._stop()
        self._nursery.cancel_scope.cancel()
        return await _exit_nursery(self._manager, exc)
