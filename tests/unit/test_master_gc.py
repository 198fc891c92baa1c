"""``mc master`` collects its young objects every GC_YOUNG allocations, older generations as before."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mc.commands.master import GC_YOUNG, tune_gc


@pytest.fixture
def restored() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_tune_gc_raises_only_the_young_threshold(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == (GC_YOUNG, 10, 10)
    assert gc.isenabled()
