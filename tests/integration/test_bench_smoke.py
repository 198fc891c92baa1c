"""``mc bench``: every scenario runs end to end with tiny parameters.

Checks the shape of the JSON line (the keys, positive figures), never the
performance targets: those are checked by running the benchmarks themselves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

TINY = {
    "fanout": ["--subscribers", "20", "--window", "32", "--seconds", "0.6", "--warmup", "0.2"],
    "relay": ["--sessions", "5", "--rate", "200", "--seconds", "0.6", "--warmup", "0.2",
              "--noise-seconds", "0.3"],
    "connections": ["--conns", "50", "--seconds", "0.3"],
    "master": ["--window", "16", "--seconds", "0.6", "--warmup", "0.2"],
    "notify": ["--apps", "20", "--conns", "8", "--batch", "10", "--seconds", "0.6", "--warmup", "0.2",
               "--rounds", "2"],
}

POSITIVE = {
    "fanout": ["mc_msgs_per_s", "baseline_msgs_per_s", "ratio", "mc_frame_bytes", "mc_server_cpu_pct"],
    "relay": ["mc_msgs_per_s", "baseline_msgs_per_s", "ratio", "mc_p50_ms", "mc_p99_ms",
              "baseline_p50_ms", "baseline_p99_ms", "mc_rate_achieved", "baseline_rate_achieved"],
    "connections": ["mc_connections", "mc_open_after_hold", "mc_rss_mib", "baseline_connections",
                    "baseline_rss_mib"],
    "master": ["mc_ops_per_s", "mc_claims_per_s", "mc_p50_ms", "mc_p99_ms", "registry_ops_per_s"],
    "notify": ["mc_req_per_s", "mc_delivered_per_s", "mc_load_p99_ms", "mc_rate_achieved", "mc_p99_ms",
               "mc_batch_notifies_per_s", "mc_batch_delivered_per_s", "mc_server_cpu_pct"],
}

PRESENT = {
    "fanout": ["target_msgs_per_s", "target_ratio", "met_rate", "met_ratio", "mc_limited_by",
               "mc_gen_cpu_pct", "mc_closed", "baseline_closed"],
    "relay": ["target_msgs_per_s", "target_p99_ms", "met_rate", "met_p99", "mc_load_p99_ms",
              "mc_p999_ms", "mc_limited_by", "mc_closed"],
    "connections": ["mc_kib_per_conn", "baseline_kib_per_conn", "target_kib_per_conn", "met_kib", "met_held"],
    "master": ["target_ops_per_s", "met_rate", "mc_server_cpu_pct", "mc_errors"],
    "notify": ["target_req_per_s", "target_p99_ms", "met_rate", "met_p99", "mc_limited_by", "mc_errors",
               "mc_req_per_cpu_s", "mc_req_per_s_rounds", "mc_spread_pct",
               "mc_batch_errors", "mc_workers_apps_cpu_pct"],
}


def bench(tmp_path: Path, *args: str, timeout: float = 25) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mc.cli", "bench", *args, "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize("scenario", list(TINY))
def test_scenario_prints_a_json_line_with_every_figure(tmp_path: Path, scenario: str) -> None:
    done = bench(tmp_path, scenario, *TINY[scenario], "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert any("mc bench" in line for line in lines)  # the result table
    result = json.loads(lines[-1])
    assert result["scenario"] == scenario
    for key in POSITIVE[scenario]:
        assert isinstance(result.get(key), (int, float)) and result[key] > 0, (key, result.get(key))
    for key in PRESENT[scenario]:
        assert key in result, key
    saved = json.loads((tmp_path / f"{scenario}.json").read_text())
    assert saved["scenario"] == scenario
    if scenario == "notify":  # --rounds 2: two closed loops, the medians reported
        assert len(result["mc_req_per_s_rounds"]) == 2 and result["rounds"] == 2
        assert result["mc_errors"] == 0 and result["mc_latency_errors"] == 0  # summed over rounds


def test_report_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the "bench" extra, not the "test" one
    (tmp_path / "fanout.json").write_text(json.dumps({
        "scenario": "fanout", "subscribers": 10, "mc_msgs_per_s": 1000, "baseline_msgs_per_s": 100,
        "target_msgs_per_s": 1_000_000,
    }))
    done = bench(tmp_path, "report")
    assert done.returncode == 0, done.stderr[-2000:]
    png = tmp_path / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigterm_stops_a_run_and_every_process_it_started(tmp_path: Path) -> None:
    """Started in the background (SIGINT ignored, as a script's ``&`` does), then SIGTERM:
    the run ends as Ctrl-C ends it, with no server or generator left behind."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mc.cli", "bench", "fanout", "--only", "mc", "--subscribers", "20",
         "--seconds", "60", "--results", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        runner = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        while len(runner.children()) < 2 and time.monotonic() < deadline:  # the worker and a generator
            time.sleep(0.1)
        started = runner.children(recursive=True)
        assert len(started) >= 2, "the run started no processes"
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted; every started process was stopped" in err
    assert "Traceback" not in err
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
