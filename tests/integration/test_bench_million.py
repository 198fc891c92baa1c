"""``mc bench million`` end to end, tiny: 300 connections over 2 workers of a real ``mc up``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mc.bench.holdgen import sources

pytestmark = pytest.mark.timeout(90)


def test_every_connection_is_held_with_presence_and_gets_the_broadcast(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mc.cli", "bench", "million", "--conns", "300", "--up", "2",
         "--seconds", "0.5", "--results", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=80,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["held"] == 300 and result["complete"] is True
    assert result["presence_online"] == result["presence_sampled"] > 0
    assert result["notify_received"] == 300 and result["met_delivered"] is True
    assert 0 < result["notify_all_s"] < 30
    for key in ("workers_kib_per_conn", "master_kib_per_conn", "kernel_slab_kib_per_conn", "open_s"):
        assert key in result, key


def test_generators_use_disjoint_source_blocks() -> None:
    blocks = [set(sources(slot)) for slot in range(600)]
    assert len(set().union(*blocks)) == 600 * len(blocks[0])
    assert all(a.startswith("127.") for b in blocks for a in b)
