"""Fixtures shared by the cluster, SDK and CLI integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.procs import Proc

from .cluster import cluster


@pytest.fixture(scope="module")
def two() -> Iterator[tuple[Proc, list[Proc]]]:
    """A master (lease 2 s) with two registered workers, one set per test module."""
    with cluster(2) as (master, workers):
        yield master, workers
