"""``mc bench --peers``: a peer runs in the same run as mc, with ratios; bad names are refused.

Tiny settings (20 subscribers, 0.6 s): the shape of the result, never the
performance. A peer that is not installed here is skipped by pytest, as
``mc bench`` skips it with a line.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from mc.bench.peers import missing


def bench(tmp_path: Path, *args: str, timeout: float = 60,
          fds: int = 0) -> subprocess.CompletedProcess[str]:
    """``mc bench ARGS``; with ``fds``, it and every process it starts may open that many fds."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fds, fds))

    return subprocess.run(
        [sys.executable, "-m", "mc.cli", "bench", *args, "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=timeout, preexec_fn=limit if fds else None,
    )


@pytest.mark.slow
@pytest.mark.parametrize("peer", ["nats", "picows-coalesced"])
def test_fanout_runs_a_peer_next_to_mc_with_ratios(tmp_path: Path, peer: str) -> None:
    if missing(peer):
        pytest.skip(missing(peer))
    done = bench(tmp_path, "fanout", "--subscribers", "20", "--window", "32", "--seconds", "0.6",
                 "--warmup", "0.2", "--only", "mc", "--peers", peer, "--rounds", "2", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "round 2/2: " + peer in done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    k = peer.replace("-", "_")
    assert result["targets"] == ["mc", peer] and result["rounds"] == 2
    for field in ("msgs_per_s", "msgs_per_cpu_s", "frame_bytes", "server_cpu_pct"):
        assert result[f"{k}_{field}"] > 0, field
    assert len(result[f"{k}_msgs_per_s_rounds"]) == 2
    assert result[f"mc_vs_{k}_msgs_per_s"] == pytest.approx(
        result["mc_msgs_per_s"] / result[f"{k}_msgs_per_s"], rel=0.01)
    assert result[f"{k}_limited_by"]
    assert result["machine"]["cpus"] >= 1 and result["machine"]["cpu"]
    assert "machine: " in done.stdout and peer in done.stdout


@pytest.mark.slow
def test_relay_drives_nats_with_the_nats_generator(tmp_path: Path) -> None:
    if missing("nats"):
        pytest.skip(missing("nats"))
    done = bench(tmp_path, "relay", "--sessions", "5", "--rate", "200", "--window", "8", "--seconds", "0.6",
                 "--warmup", "0.2", "--noise-seconds", "0", "--only", "mc", "--peers", "nats", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["nats_msgs_per_s"] > 0 and result["nats_rate_achieved"] > 0
    assert 0 < result["nats_p50_ms"] <= result["nats_p99_ms"]
    assert 0 < result["nats_load_p50_ms"] <= result["nats_load_p99_ms"]
    for k in ("mc", "nats"):
        assert result[f"{k}_closed"] == 0
        # every message sent was counted once, parsed or by its read's length
        assert result[f"{k}_missing"] == 0, k


@pytest.mark.slow
def test_connections_asks_a_peer_for_what_its_fd_limit_leaves_room_for(tmp_path: Path) -> None:
    if missing("picows"):
        pytest.skip(missing("picows"))
    # 300 fds: picows + uvloop holds 13 of its own, so 295 connections would stall on EMFILE
    done = bench(tmp_path, "connections", "--conns", "295", "--seconds", "0.3", "--only", "mc",
                 "--peers", "picows", "--rounds", "1", "--json", fds=300, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    held = result["picows_connections"]
    assert 280 <= held == result["picows_connections_asked"] == result["picows_open_after_hold"] < 295
    assert "of 295 asked" in done.stdout and "under a limit of 300" in done.stdout
    assert result["picows_kib_per_conn"] > 0 and result["mc_kib_per_conn"] > 0


def test_an_unknown_peer_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    done = bench(tmp_path, "fanout", "--peers", "nats,zeromq")
    assert done.returncode == 2
    assert "unknown peer zeromq" in done.stderr and "picows-coalesced" in done.stderr
