"""``mc bench notify``: the master's ``POST /v1/notify`` and its batch form, end to end.

A real master (the server under test: its own process on CPU 0) and real
workers, with ``--apps`` app connections online (mc.bench.gen ``idle``), so
every notify is looked up, routed over a control link and delivered to an
app. The workers and every generator share the other CPUs; their CPU is
reported, and counted on the generators' side when saying who was the limit.
HTTP load comes from mc.bench.httpgen (raw keep-alive sockets):

1. closed loop, ``--conns`` connections, one request in flight each: the
   highest rate, and its latency under load;
2. open loop at half that rate: p50/p99 (the target: p99 <= 50 ms);
3. the batch form, ``--batch`` notifies per request, closed loop over
   ``--batch-conns`` connections: notifications/s.

Each phase measures a window after a warm-up, as the other scenarios do.
With ``--rounds N`` the three phases run N times on the same cluster and
each figure is the median of its rounds (the closed loop's per-round values
and their spread are in the JSON): on a shared machine one run moves by 10%
and more.
"""

from __future__ import annotations

import http.client
import sys
import time
from typing import Any

import orjson

from mc.counts import summed

from .procs import Child, Group, free_port, wait_port
from .results import merge_hists, percentiles
from .scenarios import STARTUP, Say, Window, _cpu_figures, _medians, _split, setup_budget, spread_pct

TARGET_REQ_PER_S = 5_000
TARGET_P99_MS = 50.0
#: seconds for the workers to register and their apps to be online
REGISTER_TIMEOUT = 20.0


def _get(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return orjson.loads(conn.getresponse().read())
    finally:
        conn.close()


def _wait_online(port: int, workers: int, apps: int, prefixes: list[str], master: Child) -> None:
    """Until the master lists every worker and the last app of each worker is online."""
    deadline = time.monotonic() + REGISTER_TIMEOUT
    per = _split(apps, workers)
    while time.monotonic() < deadline:
        if not master.alive():
            raise RuntimeError(f"the master exited: {master.tail()}")
        try:
            listed = len(_get(port, "/v1/workers")["workers"])
            online = all(_get(port, f"/v1/clients/{p}{n - 1}")["online"]
                         for p, n in zip(prefixes, per, strict=True))
        except (OSError, ValueError, KeyError):
            listed, online = 0, False
        if listed >= workers and online:
            return
        time.sleep(0.2)
    raise RuntimeError(f"workers or apps not online at the master within {REGISTER_TIMEOUT}s")


def _phase(group: Group, opts: Any, say: Say, master: Child, side: list[Child], label: str,
           prefixes: list[str], counts: list[int], *, conns: int, rate: float, batch: int) -> dict[str, Any]:
    """One load phase: httpgen processes started, measured over a window, stopped."""
    gens = []
    n_gen = max(1, min(opts.generators, conns))
    for i, c in enumerate(_split(conns, n_gen)):
        p = i % len(prefixes)
        child = Child(f"httpgen {label} #{i}", [
            sys.executable, "-m", "mc.bench.httpgen", "--port", str(opts.master_port), "--slot", str(i),
            "--conns", str(c), "--rate", str(rate / n_gen), "--batch", str(batch),
            "--prefix", prefixes[p], "--count", str(counts[p]),
            "--warmup", str(opts.warmup), "--seconds", str(opts.seconds),
            "--duration", str(opts.warmup + opts.seconds + 1.5), "--timeout", str(setup_budget(c)),
        ], cpus=group.gen_cpus, stdin=True)
        group.children.append(child)
        gens.append(child)
    for g in gens:
        g.wait_event("ready", setup_budget(conns))
    for g in gens:
        g.go()
    time.sleep(opts.warmup)
    w = Window(master, gens)
    others = Window(side[0], side[1:])  # the workers and the app generators, on the generators' CPUs
    end = w.t0 + opts.seconds
    while (now := time.monotonic()) < end:
        time.sleep(min(1.0, end - now))
        for proc in [master, *side, *gens]:
            if not proc.alive() and proc.popen.returncode not in (0, None):
                raise RuntimeError(f"{proc.name} died: {proc.tail()}")
        say(f"  {label}: {sum((g.latest() or {}).get('answered', 0) for g in gens):,} answers so far")
    w.close()
    others.close()
    time.sleep(0.3)
    for g in gens:
        g.go("stop")
    dones = [g.wait_event("done", opts.warmup + opts.seconds + 20) for g in gens]
    for g in gens:
        g.popen.wait(5)
    statuses = summed(d["statuses"] for d in dones)
    side_cpu = others.server_cpu() + others.gen_cpu()
    res = {
        "req_per_s": round(w.rate("answered")),
        "items_per_s": round(w.rate("items")),
        "delivered_per_s": round(w.rate("delivered")),
        "server_cpu_pct": round(w.server_cpu(), 1),
        "gen_cpu_pct": round(w.gen_cpu(), 1),
        "workers_apps_cpu_pct": round(side_cpu, 1),
        # the workers and apps share the generators' CPUs: they count as the load side
        "limited_by": _cpu_figures(w, group, len(gens))["limited_by"],
        "other_cpu_pct": round(w.foreign_cpu(), 1),
        "errors": sum(d["errors"] for d in dones),
        "statuses": statuses,
        "missed": sum(d["missed"] for d in dones),
        **{f"{k}_ms": v for k, v in percentiles(merge_hists(d["hist"] for d in dones)).items()},
    }
    say(f"  {label}: {res['req_per_s']:,} req/s, {res['items_per_s']:,} notifies/s, p50 {res['p50_ms']} ms, "
        f"p99 {res['p99_ms']} ms, master cpu {res['server_cpu_pct']:.0f}%, "
        f"generators {res['gen_cpu_pct']:.0f}%, workers+apps {side_cpu:.0f}%, errors {res['errors']}")
    return res


def notify(opts: Any, say: Say) -> dict[str, Any]:
    out: dict[str, Any] = {
        "scenario": "notify", "conns": opts.conns, "apps": opts.apps, "workers": opts.workers,
        "batch": opts.batch, "batch_conns": opts.batch_conns, "seconds": opts.seconds,
        "target_req_per_s": TARGET_REQ_PER_S, "target_p99_ms": TARGET_P99_MS,
    }
    n_rounds = max(1, opts.rounds or 1)
    group = Group(pin=not opts.no_pin)
    try:
        opts.master_port = free_port()
        master = group.server("mc master", ["-m", "mc.cli", "master", "--port", str(opts.master_port),
                                            "--log-level", "WARNING"])
        wait_port(opts.master_port, master, STARTUP)
        side: list[Child] = []
        prefixes, counts = [], []
        for i, n in enumerate(_split(opts.apps, opts.workers)):
            port = free_port()
            worker = Child(f"mc worker {i}", [
                sys.executable, "-m", "mc.cli", "worker", "--port", str(port), "--id", f"bench{i}",
                f"--master=http://127.0.0.1:{opts.master_port}", "--log-level", "WARNING",
            ], cpus=group.gen_cpus, stdin=False)
            group.children.append(worker)
            wait_port(port, worker, STARTUP)
            side.append(worker)
            side.append(group.generator(f"apps{i}", [
                "idle", "--port", str(port), "--slot", "0", "--conns", str(n),
                "--timeout", str(setup_budget(n)),
                # online through every phase of every round (they end by themselves after it)
                "--duration", str(3 * n_rounds * (opts.warmup + opts.seconds + 30)
                                  + setup_budget(n)),
            ]))
            side[-1].wait_event("ready", setup_budget(n))
            side[-1].go()
            prefixes.append(f"i{port}x0x")
            counts.append(n)
        _wait_online(opts.master_port, opts.workers, opts.apps, prefixes, master)
        say(f"notify: master on port {opts.master_port} (pid {master.pid}), {opts.workers} worker(s), "
            f"{opts.apps:,} apps online")
        rounds = []
        for r in range(n_rounds):
            if n_rounds > 1:
                say(f"round {r + 1}/{n_rounds}")
            load = _phase(group, opts, say, master, side, "closed loop", prefixes, counts,
                          conns=opts.conns, rate=0.0, batch=0)
            rate = load["req_per_s"] / 2
            half = _phase(group, opts, say, master, side, f"open loop {rate:,.0f}/s", prefixes, counts,
                          conns=opts.conns, rate=rate, batch=0)
            batch = _phase(group, opts, say, master, side, f"batch of {opts.batch}", prefixes, counts,
                           conns=opts.batch_conns, rate=0.0, batch=opts.batch) if opts.batch else {}
            rounds.append(_figures(load, half, batch, rate))
    finally:
        group.stop_all()
    out.update(_medians(rounds))
    out["rounds"] = n_rounds
    for field in ("mc_errors", "mc_latency_errors", "mc_batch_errors"):  # any round's errors show
        if field in out:
            out[field] = sum(one.get(field, 0) for one in rounds)
    for field in ("mc_statuses", "mc_batch_statuses"):
        if field in out:
            out[field] = summed(one.get(field, {}) for one in rounds)
    for field in ("mc_req_per_s", "mc_req_per_cpu_s"):
        out[f"{field}_rounds"] = [r[field] for r in rounds]
    spread = spread_pct(out["mc_req_per_s_rounds"])
    if spread is not None:
        out["mc_spread_pct"] = spread
    out["met_rate"] = out["mc_req_per_s"] >= TARGET_REQ_PER_S
    out["met_p99"] = 0 < (out.get("mc_p99_ms") or 0) <= TARGET_P99_MS
    return out


def _figures(load: dict[str, Any], half: dict[str, Any], batch: dict[str, Any], rate: float,
             ) -> dict[str, Any]:
    """One round's figures: the closed loop, the open loop at half its rate, the batch form."""
    out: dict[str, Any] = {}
    for key in ("req_per_s", "server_cpu_pct", "gen_cpu_pct", "workers_apps_cpu_pct", "limited_by",
                "other_cpu_pct", "errors", "statuses", "delivered_per_s"):
        out[f"mc_{key}"] = load[key]
    # what the master would answer on a full core of its own: the figure a shared machine moves least
    out["mc_req_per_cpu_s"] = round(100 * load["req_per_s"] / max(load["server_cpu_pct"], 1.0))
    out["mc_load_p50_ms"], out["mc_load_p99_ms"] = load["p50_ms"], load["p99_ms"]
    out["mc_rate"] = round(rate)
    out["mc_rate_achieved"] = half["req_per_s"]
    for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms"):
        out[f"mc_{k}"] = half.get(k)
    out["mc_latency_server_cpu_pct"] = half["server_cpu_pct"]
    out["mc_latency_errors"] = half["errors"] + half["missed"]
    if batch:
        out["mc_batch_notifies_per_s"] = batch["items_per_s"]
        out["mc_batch_req_per_s"] = batch["req_per_s"]
        out["mc_batch_delivered_per_s"] = batch["delivered_per_s"]
        out["mc_batch_server_cpu_pct"] = batch["server_cpu_pct"]
        out["mc_batch_errors"] = batch["errors"]
        out["mc_batch_statuses"] = batch["statuses"]
    return out


def rows(out: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The result table's rows: figure, mc, target, met."""
    def row(label: str, key: str, target: Any = None, met: str | None = None) -> tuple[Any, ...]:
        return (label, out.get(f"mc_{key}"), target, out.get(met) if met else None)

    return [
        row("notify requests/s (closed loop)", "req_per_s", out["target_req_per_s"], "met_rate"),
        row("  per master CPU-second", "req_per_cpu_s"),
        row("  spread of the rounds %", "spread_pct"),
        row("  p50 ms under load", "load_p50_ms"),
        row("  p99 ms under load", "load_p99_ms"),
        row("  master CPU %", "server_cpu_pct"),
        row("  generators CPU %", "gen_cpu_pct"),
        row("  workers + apps CPU %", "workers_apps_cpu_pct"),
        row("  limited by", "limited_by"),
        row("  errors", "errors"),
        row(f"requests/s achieved (open loop {out.get('mc_rate', 0):,}/s)", "rate_achieved"),
        row("  p50 ms", "p50_ms"),
        row("  p99 ms", "p99_ms", out["target_p99_ms"], "met_p99"),
        row("  p99.9 ms", "p999_ms"),
        row("  master CPU %", "latency_server_cpu_pct"),
        row(f"batch notifies/s ({out['batch']} per request)", "batch_notifies_per_s"),
        row("  batch requests/s", "batch_req_per_s"),
        row("  master CPU %", "batch_server_cpu_pct"),
        row("  errors", "batch_errors"),
        row("other processes CPU %", "other_cpu_pct"),
    ]


def add_arguments(p: Any) -> None:
    p.add_argument("--conns", type=int, default=200, help="concurrent keep-alive HTTP clients")
    p.add_argument("--apps", type=int, default=1000, help="app connections online (notify targets)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch", type=int, default=100, help="notifies per batch request (0: skip that phase)")
    p.add_argument("--batch-conns", type=int, default=8, help="concurrent clients of the batch phase")
    p.add_argument("--generators", type=int, default=1, help="httpgen processes")
    p.add_argument("--rounds", type=int, default=1, help="run the three phases this many times (medians)")
