"""The four benchmarks: fanout, relay, connections, master.

Each runs the server under test as its own process (``python -m mc.cli
worker`` / ``master`` / ``up``; for fanout, relay and connections also the
asyncio ``websockets`` baseline, ``python -m mc.bench.baseline``, and the
``--peers`` of mc.bench.peers, in the same run), drives it with generator
processes (mc.bench.gen; mc.bench.natsgen for NATS), measures a window after
a warm-up and returns one flat dict of figures, ``<target>_<figure>``.
With ``--rounds N`` the targets run in turn N times (mc, baseline, peer 1,
..., mc, baseline, ...) and each figure is the median of its rounds, so a
burst of noise on a shared machine hits every target alike. Rates come from
the generators' own counters (what arrived at the clients), CPU from psutil.
"""

from __future__ import annotations

import functools
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .peers import PEERS, missing, nats_server
from .procs import Child, Group, cpus, free_port, wait_port
from .results import merge_hists, percentiles

STARTUP = 20.0
QUIET_CPU = 15.0  # other processes' CPU % under which a second counts as quiet
SETUP_BASE = 20.0  # s for a generator's setup whatever its size (start, imports, handshakes)
SETUP_PER_CONN = 0.005  # s more per connection: 19,990 connections get 120 s
SETUP_STALL = 20.0  # s with no new connection after the base allowance: setup failed
SATURATED = 0.6  # share of the CPU a side could get under which it is not "the limit"

Say = Callable[[str], None]
One = Callable[[Any, str, Say], dict[str, Any]]


def setup_budget(conns: int) -> float:
    """Seconds a generator of ``conns`` connections is given to set them up (before stalls count)."""
    return SETUP_BASE + SETUP_PER_CONN * conns


def key(target: str) -> str:
    """The result-key prefix of a target: ``picows-coalesced`` -> ``picows_coalesced``."""
    return target.replace("-", "_")


def _start_server(group: Group, target: str, port: int, extra: list[str] | None = None) -> Child:
    if target in ("mc", "tls"):  # tls: the same worker serving wss (``--tls``)
        child = group.server(f"{target} worker", [
            "-m", "mc.cli", "worker", "--port", str(port), "--id", "bench", "--log-level", "WARNING",
            *_tls(target)[0], *(extra or [])])
    elif target == "nats":
        monitor = free_port()  # nats-server's HTTP monitoring port answers /healthz
        child = group.command("nats-server", [nats_server() or "nats-server", "-a", "127.0.0.1",
                                              "-p", str(port), "-m", str(monitor)],
                              env={"GOMAXPROCS": "1"})
        wait_port(monitor, child, STARTUP)
        return child
    elif target == "socketify":
        child = group.server(target, ["-m", "mc.bench.peers.socketify_server", "--port", str(port)])
    elif target in ("picows", "picows-coalesced"):
        child = group.server(target, ["-m", "mc.bench.peers.picows_server", "--port", str(port),
                                      *(["--coalesce"] if target == "picows-coalesced" else [])])
    else:
        child = group.server("baseline", ["-m", "mc.bench.baseline", "--port", str(port)])
    wait_port(port, child, STARTUP, tls=_certs()[0].client_context() if target == "tls" else None)
    return child


@functools.cache
def _certs() -> tuple[Any, tempfile.TemporaryDirectory[str]]:
    """One throwaway CA + certificate per run (the directory goes when the process exits)."""
    from .certs import make_certs

    directory = tempfile.TemporaryDirectory(prefix="mc-bench-tls-")
    return make_certs(Path(directory.name)), directory


def _tls(target: str) -> tuple[list[str], list[str]]:
    """The worker's and the generators' TLS flags for ``target`` (none unless "tls")."""
    if target != "tls":
        return [], []
    certs = _certs()[0]
    return [f"--tls-cert={certs.cert}", f"--tls-key={certs.key}"], ["--tls", str(certs.ca)]


def _gen_module(target: str) -> str:
    return "mc.bench.natsgen" if target == "nats" else "mc.bench.gen"


class Window:
    """CPU and progress sampled at the start and end of the measurement window."""

    def __init__(self, server: Child, gens: list[Child]) -> None:
        self.server = server
        self.gens = gens
        self.t0 = time.monotonic()
        self.s0 = server.cpu_seconds()
        self.g0 = sum(g.cpu_seconds() for g in gens)
        self.m0 = _machine_busy()
        self.i0 = _idle_per_cpu()
        self.t1 = self.t0
        self.s1 = self.s0
        self.g1 = self.g0
        self.m1 = self.m0
        self.i1 = self.i0

    def close(self) -> None:
        self.t1 = time.monotonic()
        self.s1 = self.server.cpu_seconds()
        self.g1 = sum(g.cpu_seconds() for g in self.gens)
        self.m1 = _machine_busy()
        self.i1 = _idle_per_cpu()

    def idle_cpu(self, on: set[int] | None) -> float:
        """CPU % left idle meanwhile on the CPUs ``on`` (all CPUs if None)."""
        n = len(self.i1)
        total = sum(self.i1[c] - self.i0[c] for c in (on if on is not None else range(n)) if c < n)
        return max(0.0, 100 * total / max(1e-9, self.t1 - self.t0))

    def foreign_cpu(self) -> float:
        """CPU % used meanwhile by processes this benchmark did not start (noise)."""
        mine = (self.s1 - self.s0) + (self.g1 - self.g0)
        return max(0.0, 100 * ((self.m1 - self.m0) - mine) / max(1e-9, self.t1 - self.t0))

    def server_cpu(self) -> float:
        return 100 * (self.s1 - self.s0) / max(1e-9, self.t1 - self.t0)

    def gen_cpu(self) -> float:
        return 100 * (self.g1 - self.g0) / max(1e-9, self.t1 - self.t0)

    def rate(self, field: str, gens: list[Child] | None = None) -> float:
        """Sum over generators of d(field)/dt between the window's ends."""
        total = 0.0
        for g in gens or self.gens:
            a, b = g.at(self.t0), g.at(self.t1)
            if a is None or b is None or b["t"] <= a["t"]:
                continue
            total += (b[field] - a[field]) / (b["t"] - a["t"])
        return total


def _measure(server: Child, gens: list[Child], warmup: float, seconds: float,
             show: Callable[[Window], str], say: Say) -> Window:
    time.sleep(warmup)
    w = Window(server, gens)
    end = w.t0 + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(1.0, end - now))
        for g in [server, *gens]:
            if not g.alive() and g.popen.returncode not in (0, None):
                raise RuntimeError(f"{g.name} died: {g.tail()}")
        probe = Window(server, gens)
        probe.t0, probe.s0, probe.g0, probe.i0 = w.t0, w.s0, w.g0, w.i0
        probe.close()
        say(show(probe))
    w.close()
    time.sleep(0.3)  # the generators' next progress lines cover t1
    return w


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _idle_per_cpu() -> list[float]:
    """Idle CPU seconds of each CPU so far."""
    import psutil

    return [t.idle + getattr(t, "iowait", 0.0) for t in psutil.cpu_times(percpu=True)]


def _cpu_figures(w: Window, group: Group, n_gens: int) -> dict[str, Any]:
    """CPU %, each side's share of the CPU it could get, and who limited the figure.

    A side could get what it used plus what its CPUs left idle meanwhile
    (pinned: CPU 0 for the server, the others for the generators; unpinned:
    every CPU, at most one core for the single-threaded server and one per
    generator process). What other processes took is neither side's, so a
    server at 70% of CPU 0 while others took the remaining 30% has a share
    of 100%: it got all it could. The side with the larger share was the
    limit; "both" when the two are within 10% of each other (or "other
    processes" when those used more CPU than the benchmark); "neither" when
    both stayed under ``SATURATED`` (latency, flow control or the window
    bound the rate).
    """
    def share(used: float, on: set[int] | None, cores: int) -> float:
        return used / max(1e-9, min(100.0 * cores, used + w.idle_cpu(on)))

    if group.server_cpus and group.gen_cpus:
        server = share(w.server_cpu(), group.server_cpus, len(group.server_cpus))
        gens = share(w.gen_cpu(), group.gen_cpus, len(group.gen_cpus))
    else:
        server = share(w.server_cpu(), None, 1)
        gens = share(w.gen_cpu(), None, max(1, n_gens))
    if max(server, gens) < SATURATED:
        limit = "neither (latency/flow bound)"
    elif abs(server - gens) <= 0.1 * max(server, gens):
        # no idle CPU on either side: when others used more than the benchmark, they were the limit
        busy = w.foreign_cpu() > w.server_cpu() + w.gen_cpu()
        limit = "other processes" if busy else "both"
    else:
        limit = "server" if server > gens else "generator"
    return {"server_cpu_pct": round(w.server_cpu(), 1), "gen_cpu_pct": round(w.gen_cpu(), 1),
            "other_cpu_pct": round(w.foreign_cpu(), 1), "server_share_pct": round(100 * server, 1),
            "gen_share_pct": round(100 * gens, 1), "limited_by": limit}


def _wait_ready(gens: list[Child], conns: int, label: str, say: Say, server: Child | None = None) -> int:
    """Until every generator said ``ready``; returns the connections they opened.

    Each gets ``setup_budget`` of its share of ``conns``; after that the wait
    goes on as long as the generators' open sockets keep growing (a loaded
    machine is slower, not broken) and fails after ``SETUP_STALL`` seconds
    with no growth, or when a generator exits or its own bound passes.
    """
    start = time.monotonic()
    budget = setup_budget(math.ceil(conns / max(1, len(gens))))
    ready: dict[int, int] = {}
    grew_at, fds = start, 0
    next_say = start + 2
    while len(ready) < len(gens):
        now = time.monotonic()
        opened = sum(g.fds() for g in gens)
        if opened > fds:
            grew_at, fds = now, opened
        if now - start > budget and now - grew_at > SETUP_STALL:
            raise RuntimeError(f"{label}: generators not ready after {now - start:.0f}s "
                               f"({len(ready)}/{len(gens)} ready, no new connection for {SETUP_STALL:.0f}s)")
        for i, g in enumerate(gens):
            if i in ready:
                continue
            for msg in list(g.lines):
                if msg.get("event") == "ready":
                    ready[i] = msg.get("conns", 1)
            if i not in ready and not g.alive():
                raise RuntimeError(f"{g.name} failed: {g.tail()}")
        if now >= next_say:
            next_say += 2
            rss = f", server RSS {server.rss() / 2**20:.0f} MiB" if server else ""
            say(f"  {label}: {len(ready)}/{len(gens)} generators ready, ~{opened:,} sockets open{rss}")
        time.sleep(0.1)
    return sum(ready.values())


# ------------------------------------------------------------------ rounds


def _rounds(opts: Any, say: Say, one: One, main: str) -> dict[str, Any]:
    """Every target once per round, rounds in turn; figures are the medians of the rounds.

    ``main`` names the figure whose per-round values are kept
    (``<target>_<main>_rounds``) and whose spread says how noisy the run was.
    A peer that cannot run here, or fails (it could not hold the connections,
    say), is skipped with one line saying why; mc failing fails the run.
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    rounds = max(1, opts.rounds)
    for r in range(rounds):
        for target in opts.targets:
            why = skipped.get(target) or (missing(target) if target in PEERS else None)
            if why:
                if target not in skipped:
                    say(f"{target}: skipped, {why}")
                skipped[target] = why
                continue
            if rounds > 1:
                say(f"round {r + 1}/{rounds}: {target}")
            try:
                runs.setdefault(target, []).append(one(opts, target, say))
            except RuntimeError as exc:  # one peer failing does not lose the others' figures
                if target == "mc":
                    raise
                say(f"{target}: failed, {exc}")
                skipped[target] = f"failed: {exc}"
                runs.pop(target, None)
    out: dict[str, Any] = {"rounds": rounds, "targets": list(runs), "skipped": skipped}
    for target, rs in runs.items():
        k = key(target)
        out.update({f"{k}_{field}": v for field, v in _medians(rs).items()})
        values = [r[main] for r in rs if isinstance(r.get(main), int | float)]
        out[f"{k}_{main}_rounds"] = values
        spread = spread_pct(values)
        if spread is not None:
            out[f"{k}_spread_pct"] = spread
    return out


def spread_pct(values: list[float]) -> float | None:
    """(max - min) / median of a figure's rounds, in %: how noisy the run was (None for one round)."""
    if len(values) < 2 or not statistics.median(values):
        return None
    return round(100 * (max(values) - min(values)) / statistics.median(values), 1)


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, over the rounds that have it: the median of numbers, else the most frequent."""
    out: dict[str, Any] = {}
    for field in dict.fromkeys(f for r in rounds for f in r):  # a figure some rounds lack counts too
        vs = [r[field] for r in rounds if field in r]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vs):
            m = statistics.median(vs)
            out[field] = round(m) if all(isinstance(v, int) for v in vs) else round(m, 3)
        elif all(isinstance(v, bool | str) for v in vs):
            out[field] = Counter(vs).most_common(1)[0][0]
        else:
            out[field] = vs[len(vs) // 2]
    return out


def _ratios(out: dict[str, Any], figures: tuple[str, ...], inverse: bool = False) -> None:
    """``mc_vs_<target>_<figure>``: mc's figure over each other target's (theirs over mc's if inverse)."""
    for target in out.get("targets", []):
        k = key(target)
        if k == "mc":
            continue
        for f in figures:
            mine, theirs = out.get(f"mc_{f}"), out.get(f"{k}_{f}")
            if isinstance(mine, int | float) and isinstance(theirs, int | float) and mine and theirs:
                out[f"mc_vs_{k}_{f}"] = round(theirs / mine if inverse else mine / theirs, 2)


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ------------------------------------------------------------------ fanout


def fanout(opts: Any, say: Say) -> dict[str, Any]:
    out: dict[str, Any] = {
        "scenario": "fanout", "subscribers": opts.subscribers, "payload_bytes": opts.payload,
        "receivers": opts.receivers, "batch": opts.batch, "window": opts.window,
        "seconds": opts.seconds, "target_msgs_per_s": 1_000_000, "target_ratio": 10.0,
    }
    out.update(_rounds(opts, say, _fanout_one, "msgs_per_s"))
    _ratios(out, ("msgs_per_s", "msgs_per_cpu_s"))
    if "mc_msgs_per_s" in out and out.get("baseline_msgs_per_s"):
        out["ratio"] = round(out["mc_msgs_per_s"] / out["baseline_msgs_per_s"], 2)
        out["met_ratio"] = out["ratio"] >= out["target_ratio"]
    if "mc_msgs_per_s" in out:
        out["met_rate"] = out["mc_msgs_per_s"] >= out["target_msgs_per_s"]
    return out


def _fanout_one(opts: Any, target: str, say: Say) -> dict[str, Any]:
    group = Group(pin=not opts.no_pin)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, flow = tempfile.mkstemp(prefix="mc-bench-flow-", dir=shm)
    module = _gen_module(target)
    try:
        os.write(fd, b"\0" * 8 * opts.receivers)
        os.close(fd)
        port = free_port()
        server = _start_server(group, target, port)
        say(f"fanout {target}: server pid {server.pid} on port {port}; "
            f"connecting {opts.subscribers} subscribers")
        per = _split(opts.subscribers, opts.receivers)
        duration = opts.warmup + opts.seconds + 3
        common = ["--port", str(port), "--payload", str(opts.payload), "--flow", flow,
                  "--flow-slots", str(opts.receivers), "--duration", str(duration),
                  "--timeout", str(2 * setup_budget(max(per))), *_tls(target)[1]]
        recvs = [group.generator(f"recv{i}", ["recv", "--slot", str(i), "--conns", str(n), *common],
                                 module=module) for i, n in enumerate(per)]
        _wait_ready(recvs, opts.subscribers, f"fanout {target}", say)
        pub = group.generator("pub", ["pub", "--batch", str(opts.batch), "--window", str(opts.window),
                                      *common], module=module)
        _wait_ready([pub], 1, f"fanout {target} publisher", say)
        for g in [*recvs, pub]:
            g.go()

        def show(w: Window) -> str:
            return (f"  fanout {target}: {w.rate('frames', recvs):>12,.0f} msg/s delivered  "
                    f"server cpu {w.server_cpu():3.0f}%  generators cpu {w.gen_cpu():3.0f}%")

        w = _measure(server, [*recvs, pub], opts.warmup, opts.seconds, show, say)
        rate = w.rate("frames", recvs)
        last = [r.latest() or {} for r in recvs]
        return {
            "msgs_per_s": round(rate),
            "msgs_per_cpu_s": round(rate / max(1e-9, w.server_cpu() / 100)),
            "publishes_per_s": round(w.rate("published", [pub])),
            "frame_bytes": round(last[0].get("frame_size", 0), 1),
            "closed": sum(x.get("closed", 0) for x in last),
            **_cpu_figures(w, group, len(recvs) + 1),
        }
    finally:
        group.stop_all()
        os.unlink(flow)


# ------------------------------------------------------------------- relay


def relay(opts: Any, say: Say) -> dict[str, Any]:
    out: dict[str, Any] = {
        "scenario": "relay", "sessions": opts.sessions, "payload_bytes": opts.payload,
        "window": opts.window, "rate": opts.rate, "seconds": opts.seconds,
        "generators": opts.generators, "target_msgs_per_s": 30_000, "target_p99_ms": 1.0,
    }
    out.update(_rounds(opts, say, _relay_one, "msgs_per_s"))
    _ratios(out, ("msgs_per_s", "msgs_per_cpu_s"))
    if opts.noise_seconds > 0:
        out.update(noise_floor(opts.no_pin, opts.noise_seconds))
    if "mc_msgs_per_s" in out:
        out["met_rate"] = out["mc_msgs_per_s"] >= out["target_msgs_per_s"]
        out["met_p99"] = 0 < out.get("mc_p99_ms", 0) <= out["target_p99_ms"]
        if "mc_quiet_p99_ms" in out:
            out["met_p99_quiet"] = 0 < out["mc_quiet_p99_ms"] <= out["target_p99_ms"]
    if out.get("baseline_msgs_per_s") and "mc_msgs_per_s" in out:
        out["ratio"] = round(out["mc_msgs_per_s"] / out["baseline_msgs_per_s"], 2)
    return out


def _relay_one(opts: Any, target: str, say: Say) -> dict[str, Any]:
    out: dict[str, Any] = {"closed": 0, "missing": 0}
    group = Group(pin=not opts.no_pin)
    try:
        port = free_port()
        server = _start_server(group, target, port)
        for phase, first in (("load", 0), ("latency", 1_000_000)):
            figures = _relay_phase(opts, target, group, server, port, phase, first, say)
            figures["closed"] += out["closed"]
            figures["missing"] += out["missing"]
            out.update(figures)
    finally:
        group.stop_all()
    return out


def _relay_phase(opts: Any, target: str, group: Group, server: Child, port: int, phase: str, first: int,
                 say: Say) -> dict[str, Any]:
    rate = 0.0 if phase == "load" else opts.rate
    mode = f"closed loop, window {opts.window}" if phase == "load" else f"{rate:,.0f} msg/s"
    say(f"relay {target} ({mode}): {opts.sessions} sessions x 2 on port {port}")
    per = _split(opts.sessions, opts.generators)
    gens = []
    start = first
    for i, n in enumerate(per):
        gens.append(group.generator(f"relay{phase}{i}", [
            "relay", "--port", str(port), "--slot", str(i), "--sessions", str(n),
            "--first", str(start), "--window", str(opts.window),
            "--rate", str(rate / len(per)), "--payload", str(opts.payload),
            "--warmup", str(opts.warmup), "--seconds", str(opts.seconds),
            "--duration", str(opts.warmup + opts.seconds + 1.5),
            "--server-pid", str(server.pid), "--timeout", str(2 * setup_budget(2 * n)), *_tls(target)[1],
        ], module=_gen_module(target)))
        start += n
    _wait_ready(gens, 2 * opts.sessions, f"relay {target} {phase}", say)
    for g in gens:
        g.go()

    def show(w: Window) -> str:
        return (f"  relay {target} {phase}: {w.rate('received', gens):>10,.0f} msg/s  "
                f"server cpu {w.server_cpu():3.0f}%  generators cpu {w.gen_cpu():3.0f}%")

    w = _measure(server, gens, opts.warmup, opts.seconds, show, say)
    for g in gens:
        g.go("stop")
    dones = [g.wait_event("done", opts.warmup + opts.seconds + 20) for g in gens]
    pct = percentiles(merge_hists(d["hist"] for d in dones))
    out: dict[str, Any] = {}
    if phase == "load":
        received = w.rate("received", gens)
        out.update(_cpu_figures(w, group, len(gens)))
        out.update({"msgs_per_s": round(received),
                    "msgs_per_cpu_s": round(received / max(1e-9, w.server_cpu() / 100)),
                    "load_p50_ms": pct["p50"], "load_p99_ms": pct["p99"]})
        out["load_other_cpu_pct"] = out.pop("other_cpu_pct")
    else:
        out["rate_achieved"] = round(w.rate("received", gens))
        out.update({f"{k}_ms": v for k, v in pct.items()})
        # the same, over the seconds when other processes were quiet
        quiet = [sec for sec in dones[0].get("seconds", []) if sec["other_cpu"] < QUIET_CPU]
        out["quiet_seconds"] = len(quiet)
        out["measured_seconds"] = len(dones[0].get("seconds", []))
        if quiet and len(dones) == 1:
            qp = percentiles(merge_hists(sec["hist"] for sec in quiet))
            out["quiet_p50_ms"] = qp["p50"]
            out["quiet_p99_ms"] = qp["p99"]
        out["latency_server_cpu_pct"] = round(w.server_cpu(), 1)
        out["other_cpu_pct"] = round(w.foreign_cpu(), 1)
    out["closed"] = sum(d.get("closed", 0) for d in dones)
    # sent and never counted as received, once the generators waited for the last ones: 0
    out["missing"] = sum(d["missing"] for d in dones)
    for g in gens:  # the next phase starts on a quiet server
        g.stop()
        g.popen.wait(5)
    time.sleep(0.3)
    return out


def noise_floor(no_pin: bool, seconds: float = 1.5) -> dict[str, Any]:
    """How late a process on each CPU wakes from a 1 ms sleep (other load, VM).

    Every relayed message needs a few such wake-ups (generator, worker,
    generator), so this bounds the latency percentiles any server can show
    on this machine at this moment.
    """
    group = Group(pin=False)
    try:
        probes = [group.generator(f"jitter{c}", ["jitter", "--seconds", str(seconds), "--slot", str(c)],
                                  cpus=None if no_pin else {c}) for c in cpus()]
        for p in probes:
            p.go()
        dones = [p.wait_event("done", seconds + 15) for p in probes]
    finally:
        group.stop_all()
    pct = percentiles(merge_hists(d["hist"] for d in dones), (99, 99.9))
    return {"noise_p99_ms": pct["p99"], "noise_p999_ms": pct["p999"]}


# ------------------------------------------------------------- connections


GEN_MAX_CONNS = 16_000  # per generator process: its fd limit is 20,000


def connections(opts: Any, say: Say) -> dict[str, Any]:
    out: dict[str, Any] = {
        "scenario": "connections", "target_kib_per_conn": 2.0, "seconds": opts.seconds,
    }
    if opts.up:
        out.update(_connections_up(opts, say))
        out["scenario"] = "connections-up"
        return out
    out.update(_rounds(opts, say, _connections_one, "kib_per_conn"))
    _ratios(out, ("kib_per_conn",), inverse=True)
    if "mc_kib_per_conn" in out:
        out["met_kib"] = out["mc_kib_per_conn"] <= out["target_kib_per_conn"]
        out["met_held"] = out["mc_open_after_hold"] >= opts.conns
    if out.get("baseline_kib_per_conn") and out.get("mc_kib_per_conn"):
        out["ratio"] = round(out["baseline_kib_per_conn"] / out["mc_kib_per_conn"], 2)
    return out


def _connections_one(opts: Any, target: str, say: Say) -> dict[str, Any]:
    group = Group(pin=not opts.no_pin)
    try:
        port = free_port()
        server = _start_server(group, target, port)
        time.sleep(0.5)
        base_rss = server.rss()
        conns, room = fd_room(server.pid, opts.conns)
        say(f"connections {target}: server pid {server.pid}, RSS {base_rss / 2**20:.1f} MiB idle; "
            f"opening {conns:,} connections{room}")
        t0 = time.monotonic()
        gens = _idle_gens(group, [(port, conns)], opts, _gen_module(target))
        opened = _wait_idle(gens, opts, say, f"connections {target}", server)
        setup_s = time.monotonic() - t0
        time.sleep(opts.seconds)
        still = sum(_open_now(g) for g in gens)
        rss = server.rss()
        per = (rss - base_rss) / max(1, opened)
        say(f"  connections {target}: {opened:,} open, RSS {rss / 2**20:.1f} MiB, "
            f"{per / 1024:.2f} KiB per connection")
        return {
            "connections": opened, "connections_asked": conns, "open_after_hold": still,
            "rss_idle_mib": round(base_rss / 2**20, 1), "rss_mib": round(rss / 2**20, 1),
            "kib_per_conn": round(per / 1024, 2), "connect_per_s": round(opened / max(1e-9, setup_s)),
        }
    finally:
        group.stop_all()


def fd_room(pid: int, conns: int) -> tuple[int, str]:
    """How many of ``conns`` connections the server ``pid`` can accept: its fd limit less the fds it holds.

    Past it ``accept`` fails with EMFILE while the kernel keeps completing
    handshakes into the backlog, so the clients wait forever: 19,990 fit in
    mc's worker (10 fds of its own under a limit of 20,000), not in picows +
    uvloop or socketify (13 each: libuv's io_uring and signal pipes, a
    self-pipe). Returns the count and, when it is less than ``conns``, why.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        limit, own = proc.rlimit(psutil.RLIMIT_NOFILE)[0], proc.num_fds()
    except psutil.Error:
        return conns, ""
    if limit == psutil.RLIM_INFINITY or limit - own >= conns:
        return conns, ""
    room = max(0, limit - own)
    return room, f" (of {conns:,} asked: {own} fds of its own under a limit of {limit:,})"


def _idle_gens(group: Group, plan: list[tuple[int, int]], opts: Any,
               module: str = "mc.bench.gen") -> list[Child]:
    gens = []
    slot = 0
    for port, count in plan:
        for n in _split(count, math.ceil(count / GEN_MAX_CONNS)):
            bound = 2 * setup_budget(n)  # the generator's own bound; _wait_ready fails earlier on a stall
            gens.append(group.generator(f"idle{slot}", [
                "idle", "--port", str(port), "--slot", str(slot), "--conns", str(n),
                "--duration", str(opts.seconds + bound + 30), "--timeout", str(bound),
            ], module=module))
            slot += 1
    return gens


def _wait_idle(gens: list[Child], opts: Any, say: Say, label: str, server: Child | None) -> int:
    opened = _wait_ready(gens, opts.conns, label, say, server)
    for g in gens:
        g.go()
    return opened


def _open_now(g: Child) -> int:
    last = g.latest() or {}
    if "open" in last:
        return last["open"]
    return last.get("conns", 0)


def _connections_up(opts: Any, say: Say) -> dict[str, Any]:
    """``mc up --workers N`` and ``--conns`` app connections spread over its workers."""
    import psutil

    group = Group(pin=False)
    workers = opts.up
    for _ in range(50):  # mc up needs the master's port and the next N free
        # below the ephemeral range, where the generators' own sockets do not land
        port = random.randrange(20_000, 32_000 - workers)
        if not any(_busy(port + i) for i in range(workers + 1)):
            break
    else:
        raise RuntimeError("no run of free ports for mc up")
    out: dict[str, Any] = {"up_workers": workers}
    try:
        # mc up stops its workers, then its master, each with a 5 s grace
        up = group.server("mc up", ["-m", "mc.cli", "up", "--workers", str(workers), "--port", str(port),
                                    "--log-level", "WARNING"], grace=15.0)
        for i in range(workers + 1):
            wait_port(port + i, up, STARTUP + 10)
        kids = psutil.Process(up.pid).children()
        up.descendants = kids
        masters = [k for k in kids if "master" in k.cmdline()]
        workers_ps = [k for k in kids if "worker" in k.cmdline()]
        time.sleep(0.5)
        base = sum(k.memory_info().rss for k in kids)
        base_w = sum(k.memory_info().rss for k in workers_ps)
        base_m = sum(k.memory_info().rss for k in masters)
        say(f"connections mc up: {workers} workers (pid {up.pid}) on ports {port + 1}..{port + workers}; "
            f"opening {opts.conns:,} app connections")
        t0 = time.monotonic()
        gens = _idle_gens(group, [(port + 1 + i, n) for i, n in enumerate(_split(opts.conns, workers))], opts)
        opened = _wait_idle(gens, opts, say, "connections mc up", None)
        setup_s = time.monotonic() - t0
        time.sleep(opts.seconds)
        still = sum(_open_now(g) for g in gens)
        rss = sum(k.memory_info().rss for k in kids)
        rss_w = [k.memory_info().rss for k in workers_ps]
        rss_m = sum(k.memory_info().rss for k in masters)
        out.update({
            "mc_connections": opened, "mc_open_after_hold": still,
            "mc_rss_mib": round(rss / 2**20, 1), "mc_rss_idle_mib": round(base / 2**20, 1),
            # per worker, as the target reads (the master's presence table is separate)
            "mc_kib_per_conn": round((sum(rss_w) - base_w) / max(1, opened) / 1024, 2),
            "mc_worker_rss_mib_max": round(max(rss_w, default=0) / 2**20, 1),
            "mc_master_rss_mib": round(rss_m / 2**20, 1),
            "mc_master_kib_per_conn": round((rss_m - base_m) / max(1, opened) / 1024, 2),
            "mc_cluster_kib_per_conn": round((rss - base) / max(1, opened) / 1024, 2),
            "mc_connect_per_s": round(opened / max(1e-9, setup_s)),
            "met_held": still >= opts.conns,
        })
        out["met_kib"] = out["mc_kib_per_conn"] <= 6.0
        say(f"  mc up: {still:,} open over {workers} workers, RSS {rss / 2**20:.0f} MiB total "
            f"(master {rss_m / 2**20:.0f} MiB)")
    finally:
        group.stop_all()
    return out


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as our servers bind
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# ------------------------------------------------------------------ master


class _Servers:
    """Several server processes measured as one (two masters and their Redis)."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.name = " + ".join(c.name for c in children)
        self.popen = children[0].popen

    def cpu_seconds(self) -> float:
        return sum(c.cpu_seconds() for c in self.children)

    def alive(self) -> bool:
        return all(c.alive() for c in self.children)

    def tail(self) -> str:
        return "; ".join(f"{c.name}: {c.tail()}" for c in self.children if not c.alive())


#: (result key prefix, label, masters, store): the memory store, then Redis with one and two masters
MASTER_SETUPS = [
    ("mc", "mc master (memory store)", 1, "memory"),
    ("redis1", "mc master (Redis store)", 1, "redis"),
    ("redis2", "2 mc masters (one Redis)", 2, "redis"),
]


def master(opts: Any, say: Say) -> dict[str, Any]:
    """Claims + lookups through /v1/control: the memory store, then Redis with one and two masters.

    The fake worker links are spread over the masters (link i to master i mod
    N); with Redis every claim is decided by the one store, so two masters
    share the sessions' names and owners exactly as one does.
    """
    import shutil

    out: dict[str, Any] = {
        "scenario": "master", "links": opts.links, "window": opts.window, "seconds": opts.seconds,
        "codec": opts.codec,
        "target_ops_per_s": 20_000,
    }
    redis_server = shutil.which("redis-server")
    for key, name, n_masters, store in MASTER_SETUPS:
        if store == "redis" and not redis_server:
            say(f"{name}: skipped (no redis-server; apt-get install redis-server)")
            continue
        group = Group(pin=not opts.no_pin)
        try:
            servers: list[Child] = []
            store_args: list[str] = []
            if store == "redis" and redis_server:
                rport = free_port()
                redis = Child("redis-server", [redis_server, "--port", str(rport), "--bind", "127.0.0.1",
                                               "--save", "", "--appendonly", "no"],
                              cpus=group.server_cpus, stdin=False)
                group.children.append(redis)
                servers.append(redis)
                store_args = ["--store", f"redis://127.0.0.1:{rport}/0"]
            ports = []
            for i in range(n_masters):
                port = free_port()
                m = group.server(f"master{i + 1}", ["-m", "mc.cli", "master", "--log-level", "WARNING",
                                                    "--port", str(port), *store_args,
                                                    *(["--master-id", f"m{i + 1}"] if store_args else [])])
                wait_port(port, m, STARTUP)
                servers.append(m)
                ports.append(port)
            server = _Servers(servers)
            links = max(opts.links, n_masters)
            say(f"{name}: {links} fake worker link(s) over {n_masters} master(s), "
                f"window {opts.window} requests each, {opts.codec}")
            gens = [group.generator(f"control{i}", [
                "control", "--port", str(ports[i % n_masters]), "--slot", str(i),
                "--window", str(opts.window),
                "--batch", str(max(1, opts.window // 4)), "--warmup", str(opts.warmup),
                "--seconds", str(opts.seconds), "--duration", str(opts.warmup + opts.seconds + 1.5),
                "--codec", opts.codec,
            ]) for i in range(links)]
            for g in gens:
                g.wait_event("ready", setup_budget(1))
            for g in gens:
                g.go()

            def show(w: Window, name: str = name) -> str:
                return (f"  {name}: {w.rate('replies'):>10,.0f} claims+lookups/s  "
                        f"server cpu {w.server_cpu():3.0f}%  generators cpu {w.gen_cpu():3.0f}%")

            w = _measure(server, gens, opts.warmup, opts.seconds, show, say)  # type: ignore[arg-type]
            for g in gens:
                g.go("stop")
            dones = [g.wait_event("done", opts.warmup + opts.seconds + 20) for g in gens]
            out[f"{key}_ops_per_s"] = round(w.rate("replies"))
            out[f"{key}_claims_per_s"] = round(w.rate("claims"))
            out.update({f"{key}_{f}": v for f, v in _cpu_figures(w, group, links).items()})
            out[f"{key}_errors"] = sum(d.get("errors", 0) for d in dones)
            for k, v in percentiles(merge_hists(d["hist"] for d in dones)).items():
                out[f"{key}_{k}_ms"] = v
        finally:
            group.stop_all()
    out["registry_ops_per_s"] = _registry_rate()
    out["met_rate"] = out["mc_ops_per_s"] >= out["target_ops_per_s"]
    if "redis2_ops_per_s" in out:
        out["met_redis_rate"] = out["redis2_ops_per_s"] >= out["target_ops_per_s"]
        for k in ("redis1", "redis2"):
            out[f"{k}_vs_memory"] = round(out[f"{k}_ops_per_s"] / max(1, out["mc_ops_per_s"]), 2)
    return out


def _registry_rate(seconds: float = 0.5) -> int:
    """Claims + lookups per second on the bare in-process registry (context only)."""
    from mc.master.registry import Registry

    reg = Registry(lease=5.0)
    reg.register("w1", "ws://127.0.0.1:1", capacity=1000, now=0.0)
    n = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        for i in range(n, n + 1000):
            s = f"s{i}"
            reg.claim_session(s, "w1", now=1.0)
            reg.lookup_session(s)
        n += 1000
    return round(2 * n / (time.perf_counter() - start))


def python() -> str:
    return sys.executable
