"""The SDK objects' lifetime: errors come out bare, not wrapped in ExceptionGroup."""

from __future__ import annotations

import pytest
import trio

from mc.client.options import Options
from mc.client.owner import Owner


class Toy(Owner):
    """An owner whose background task fails on demand."""

    def __init__(self, crash: bool = False, fail_start: bool = False) -> None:
        self._options = Options(close_timeout=0.5)
        self.crash = crash
        self.fail_start = fail_start
        self.stopped = False

    async def _start(self) -> None:
        self._nursery.start_soon(self._background)
        if self.fail_start:
            raise KeyError("start")

    async def _background(self) -> None:
        if self.crash:
            raise ValueError("background")
        await trio.sleep_forever()

    async def _stop(self) -> None:
        self.stopped = True


async def test_body_exception_propagates_as_itself():
    toy = Toy()
    with pytest.raises(ZeroDivisionError):
        async with toy:
            _ = 1 / 0
    assert toy.stopped


async def test_background_failure_is_raised_bare():
    with pytest.raises(ValueError, match="background"):
        async with Toy(crash=True):
            await trio.sleep_forever()  # ended by the background failure


async def test_failed_start_raises_and_cleans_up():
    with pytest.raises(KeyError):
        async with Toy(fail_start=True):
            raise AssertionError("the body must not run")


async def test_outer_cancellation_closes_cleanly():
    toy = Toy()
    with trio.move_on_after(0.05) as scope:
        async with toy:
            await trio.sleep_forever()
    assert scope.cancelled_caught and toy.stopped
