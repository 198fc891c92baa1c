"""mc bench's bookkeeping: medians of rounds, ports, setup allowance, who was the limit."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mc.bench import procs, scenarios


def test_medians_take_the_middle_number_and_the_most_frequent_word() -> None:
    rounds = [{"rate": 10, "cpu": 0.5, "limit": "server"}, {"rate": 30, "cpu": 0.7, "limit": "both"},
              {"rate": 20, "cpu": 0.9, "limit": "server"}]
    assert scenarios._medians(rounds) == {"rate": 20, "cpu": 0.7, "limit": "server"}


def test_a_figure_only_some_rounds_have_is_their_median() -> None:
    rounds = [{"rate": 1}, {"rate": 2, "quiet_p99_ms": 0.9}, {"rate": 3, "quiet_p99_ms": 1.1}]
    assert scenarios._medians(rounds)["quiet_p99_ms"] == 1.0


def test_rounds_interleave_targets_and_skip_a_missing_peer(monkeypatch: Any) -> None:
    order: list[str] = []
    said: list[str] = []
    monkeypatch.setattr(scenarios, "missing", lambda peer: "not here" if peer == "socketify" else None)

    def one(opts: Any, target: str, say: Any) -> dict[str, Any]:
        order.append(target)
        return {"msgs_per_s": 100 * len(order)}

    opts = SimpleNamespace(rounds=2, targets=["mc", "nats", "socketify"])
    out = scenarios._rounds(opts, said.append, one, "msgs_per_s")
    assert order == ["mc", "nats", "mc", "nats"]
    assert out["targets"] == ["mc", "nats"] and out["skipped"] == {"socketify": "not here"}
    assert out["mc_msgs_per_s_rounds"] == [100, 300] and out["nats_msgs_per_s"] == 300
    assert out["mc_spread_pct"] == 100.0
    assert said.count("socketify: skipped, not here") == 1


def test_a_failing_peer_is_skipped_and_the_others_keep_their_figures(monkeypatch: Any) -> None:
    monkeypatch.setattr(scenarios, "missing", lambda peer: None)
    said: list[str] = []

    def one(opts: Any, target: str, say: Any) -> dict[str, Any]:
        if target == "picows":
            raise RuntimeError("generators not ready")
        return {"kib_per_conn": 1.0}

    opts = SimpleNamespace(rounds=2, targets=["mc", "picows", "nats"])
    out = scenarios._rounds(opts, said.append, one, "kib_per_conn")
    assert out["targets"] == ["mc", "nats"] and out["mc_kib_per_conn"] == 1.0
    assert out["skipped"] == {"picows": "failed: generators not ready"}
    assert said.count("picows: failed, generators not ready") == 1  # not tried again

    def broken_mc(opts: Any, target: str, say: Any) -> dict[str, Any]:
        raise RuntimeError("mc died")

    with pytest.raises(RuntimeError, match="mc died"):
        scenarios._rounds(opts, said.append, broken_mc, "kib_per_conn")


def test_free_ports_are_below_the_ephemeral_range() -> None:
    low, _ = procs.ephemeral_range()
    ports = {procs.free_port() for _ in range(50)}
    assert all(1024 <= p < low for p in ports)


def test_setup_allowance_grows_with_the_connection_count() -> None:
    assert scenarios.setup_budget(19_990) > scenarios.setup_budget(1_000) > scenarios.setup_budget(1)


class FakeWindow:
    def __init__(self, server: float, gens: float, other: float, idle: dict[int, float]) -> None:
        self._s, self._g, self._o, self._idle = server, gens, other, idle

    def server_cpu(self) -> float:
        return self._s

    def gen_cpu(self) -> float:
        return self._g

    def foreign_cpu(self) -> float:
        return self._o

    def idle_cpu(self, on: set[int] | None) -> float:
        return sum(v for c, v in self._idle.items() if on is None or c in on)


def limit(server: float, gens: float, other: float, idle0: float, idle1: float) -> dict[str, Any]:
    group = SimpleNamespace(server_cpus={0}, gen_cpus={1})
    return scenarios._cpu_figures(FakeWindow(server, gens, other, {0: idle0, 1: idle1}),  # type: ignore[arg-type]
                                  group, 2)  # type: ignore[arg-type]


def test_the_limit_is_the_side_that_got_all_the_cpu_it_could() -> None:
    # 70% of CPU 0 while other processes took the rest: the server could get no more
    f = limit(server=70, gens=50, other=30, idle0=0, idle1=50)
    assert f["limited_by"] == "server" and f["server_share_pct"] == 100.0 and f["gen_share_pct"] == 50.0
    assert limit(server=40, gens=98, other=0, idle0=60, idle1=2)["limited_by"] == "generator"
    assert limit(server=20, gens=30, other=0, idle0=80, idle1=70)["limited_by"].startswith("neither")
    assert limit(server=30, gens=30, other=140, idle0=0, idle1=0)["limited_by"].startswith("other processes")
