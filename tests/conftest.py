"""Shared fixtures: real worker processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.procs import Proc, running, worker_proc


@pytest.fixture(scope="module")
def worker() -> Iterator[Proc]:
    """One standalone worker per test module (heartbeat 1 s so keepalive is testable)."""
    with running(worker_proc("--heartbeat", "1", "--chat-linger", "1")) as (w,):
        yield w
