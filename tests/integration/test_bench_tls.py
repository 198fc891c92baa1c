"""``mc bench fanout|relay --tls``: plain and TLS workers alternate (target ``tls``), ratios come out.

Shape only (tiny parameters): the cost itself is measured by running the
benchmark (docs/deploying.md "TLS").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TINY = {
    "fanout": ["--subscribers", "20", "--window", "32", "--seconds", "0.6", "--warmup", "0.2"],
    "relay": ["--sessions", "5", "--rate", "200", "--seconds", "0.6", "--warmup", "0.2",
              "--noise-seconds", "0"],
}


@pytest.mark.parametrize("scenario", list(TINY))
def test_tls_rounds(tmp_path: Path, scenario: str) -> None:
    done = subprocess.run([sys.executable, "-m", "mc.cli", "bench", scenario, *TINY[scenario], "--tls",
                           "--only", "mc", "--rounds", "2", "--json", "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tls worker" not in done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["scenario"] == scenario and result["rounds"] == 2
    assert result["targets"] == ["mc", "tls"]
    assert len(result["tls_msgs_per_s_rounds"]) == 2 and all(x > 0 for x in result["tls_msgs_per_s_rounds"])
    for key in ("msgs_per_s", "msgs_per_cpu_s"):  # plain over TLS: what TLS costs
        assert result[f"mc_{key}"] > 0 and result[f"tls_{key}"] > 0
        assert result[f"mc_vs_tls_{key}"] > 0
    lines = done.stdout.splitlines()
    header = lines[lines.index(f"mc bench {scenario}") + 1]
    assert header.split()[:3] == ["figure", "mc", "tls"], header  # the table has a TLS column
    assert (tmp_path / f"{scenario}.json").exists()
