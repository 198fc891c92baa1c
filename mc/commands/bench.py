"""``mc bench``: measure a worker (and the master) against the targets.

    mc bench fanout        1,000 subscribers, 100-byte publishes; mc vs asyncio websockets.broadcast()
    mc bench relay         500 chat sessions x 2: closed-loop throughput, then p50/p99 at 4,000 msg/s
    mc bench connections   19,990 idle app connections on one worker: RSS per connection
                           (--up N --conns 100000: through ``mc up`` with N workers)
    mc bench master        claims + lookups per second through the master's /v1/control link
    mc bench million       ``mc up`` holding --conns (1,000,000) idle app connections: memory by
                           role, time to open, a broadcast notify's delivery time (mc.bench.million)
    mc bench report        benchmarks/results/report.png from the latest results

Servers and generators are separate processes, all on 127.0.0.1; with two or
more CPUs the server gets CPU 0 and the generators the rest (sched_setaffinity,
like ``taskset``; ``--no-pin`` to disable). Every process is stopped by PID
(SIGTERM, then SIGKILL) when the run ends, also on Ctrl-C. Results are saved
under benchmarks/results/<scenario>.json; ``--json`` prints them as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

TARGETS = ("mc", "baseline")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (fanout, relay, connections, master, report)")
    scenarios = p.add_subparsers(dest="scenario", required=True)

    def common(sp: argparse.ArgumentParser, seconds: float) -> None:
        sp.add_argument("--seconds", type=float, default=seconds, help="length of the measured window")
        sp.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
        sp.add_argument("--json", action="store_true", help="print the result as one JSON line last")
        sp.add_argument("--no-pin", action="store_true", help="do not pin server and generators to CPUs")
        sp.add_argument("--results", default=None, help="results directory (default benchmarks/results)")
        sp.add_argument("--only", choices=TARGETS, default=None, help="run only mc or only the baseline")
        sp.set_defaults(run=run)

    f = scenarios.add_parser("fanout", help="one publisher, N subscribers")
    common(f, 5.0)
    f.add_argument("--subscribers", type=int, default=1000)
    f.add_argument("--payload", type=int, default=100, help="bytes of data per message")
    f.add_argument("--receivers", type=int, default=1, help="receiver processes")
    f.add_argument("--batch", type=int, default=16, help="publishes per write")
    f.add_argument("--window", type=int, default=512, help="publishes ahead of the slowest subscriber")

    r = scenarios.add_parser("relay", help="chat sessions of two members")
    common(r, 5.0)
    r.add_argument("--sessions", type=int, default=500)
    r.add_argument("--payload", type=int, default=100)
    r.add_argument("--window", type=int, default=4, help="messages in flight per connection (load phase)")
    r.add_argument("--rate", type=float, default=4000.0, help="messages/s of the latency phase")
    r.add_argument("--generators", type=int, default=1, help="generator processes")
    r.add_argument("--noise-seconds", type=float, default=1.5,
                   help="length of the machine wake-up delay probe (0: skip)")

    c = scenarios.add_parser("connections", help="idle app connections and worker RSS")
    common(c, 2.0)
    c.add_argument("--conns", type=int, default=19_990)
    c.add_argument("--up", type=int, default=0, metavar="N",
                   help="run `mc up --workers N` and spread --conns over its workers (mc only)")

    m = scenarios.add_parser("master", help="claims + lookups through /v1/control")
    common(m, 5.0)
    m.add_argument("--links", type=int, default=1, help="fake workers (control links)")
    m.add_argument("--window", type=int, default=256, help="requests in flight per link")
    m.add_argument("--codec", choices=["msgpack", "json"], default="msgpack",
                   help="the control link's codec (workers speak msgpack)")

    mil = scenarios.add_parser("million", help="mc up holding a million idle app connections")
    common(mil, 5.0)
    mil.add_argument("--conns", type=int, default=1_000_000)
    mil.add_argument("--up", type=int, default=0, metavar="N",
                     help="workers (default: --conns / 19,600, rounded up)")
    mil.add_argument("--setup-seconds", type=float, default=0.0,
                     help="bound of the connecting phase (default: 60 + conns / 500); "
                          "what is open then is held and measured")

    rep = scenarios.add_parser("report", help="plot the latest results to benchmarks/results/report.png")
    rep.add_argument("--results", default=None)
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mc.bench import results

    if args.scenario == "report":
        try:
            path = results.plot(args.results)
        except ImportError as exc:
            print(f"mc bench report needs matplotlib ({exc}): pip install 'mc[bench]'", file=sys.stderr)
            return 1
        print(f"wrote {path}")
        if args.json:
            print(json.dumps({"scenario": "report", "path": str(path)}))
        return 0

    from mc.bench import scenarios

    args.targets = (args.only,) if args.only else TARGETS

    def say(line: str) -> None:
        print(line, flush=True)

    if args.scenario == "million":
        from mc.bench import million

        fn = million.million
    else:
        fn = getattr(scenarios, args.scenario)
    try:
        out = fn(args, say)
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    path = results.save(out, args.results)
    print()
    print(render(out))
    print(f"\nsaved {path}")
    if args.json:
        print(json.dumps(out, sort_keys=True))
    return 0


def render(out: dict[str, Any]) -> str:
    """The result table: one row per figure, mc and baseline side by side."""
    from mc.bench.results import table

    rows: list[tuple[Any, ...]] = []
    s = out["scenario"]
    if s == "million":
        from mc.bench.million import render as render_million

        return render_million(out)

    def row(label: str, key: str, target: Any = None, met: str | None = None) -> None:
        mc, base = out.get(f"mc_{key}"), out.get(f"baseline_{key}")
        ratio = None
        numbers = isinstance(mc, int | float) and isinstance(base, int | float) and not isinstance(mc, bool)
        if numbers and base:
            ratio = f"{mc / base:.2f}x"
        rows.append((label, mc, base, ratio, target, out.get(met) if met else None))

    if s == "fanout":
        row("delivered msg/s", "msgs_per_s", out["target_msgs_per_s"], "met_rate")
        rows.append(
            ("ratio mc / baseline", out.get("ratio"), None, None, out["target_ratio"], out.get("met_ratio"))
        )
        row("publishes/s", "publishes_per_s")
        row("frame bytes", "frame_bytes")
        row("server CPU %", "server_cpu_pct")
        row("generators CPU %", "gen_cpu_pct")
        row("limited by", "limited_by")
        row("other processes CPU %", "other_cpu_pct")
        row("connections closed", "closed")
    elif s == "relay":
        row("relayed msg/s (closed loop)", "msgs_per_s", out["target_msgs_per_s"], "met_rate")
        row("  p50 ms under load", "load_p50_ms")
        row("  p99 ms under load", "load_p99_ms")
        row("  server CPU %", "server_cpu_pct")
        row("  generators CPU %", "gen_cpu_pct")
        row("  limited by", "limited_by")
        row(f"msg/s achieved (open loop {out['rate']:,.0f}/s)", "rate_achieved")
        row("  p50 ms", "p50_ms")
        row("  p90 ms", "p90_ms")
        row("  p99 ms", "p99_ms", out["target_p99_ms"], "met_p99")
        row("  p99.9 ms", "p999_ms")
        row("  quiet seconds (other CPU < 15%) / measured", "quiet_seconds")
        row("  p50 ms in quiet seconds", "quiet_p50_ms")
        row("  p99 ms in quiet seconds", "quiet_p99_ms", out["target_p99_ms"], "met_p99_quiet")
        row("  server CPU %", "latency_server_cpu_pct")
        row("  other processes CPU %", "other_cpu_pct")
        rows.append(("machine wake-up delay p99 / p99.9 ms (1 ms sleep)",
                     f"{out.get('noise_p99_ms')} / {out.get('noise_p999_ms')}", None, None, None, None))
        row("connections closed", "closed")
    elif s in ("connections", "connections-up"):
        if out.get("up_workers"):
            rows.append(("mc up workers", out["up_workers"], None, None, None, None))
        row("connections opened", "connections")
        row("open after hold", "open_after_hold", None, "met_held")
        row("RSS before (MiB)", "rss_idle_mib")
        row("RSS with connections (MiB)", "rss_mib")
        row("KiB per idle connection" + (" (workers)" if out.get("up_workers") else ""),
            "kib_per_conn", out["target_kib_per_conn"], "met_kib")
        if out.get("up_workers"):
            row("  largest worker RSS (MiB)", "worker_rss_mib_max")
            row("  master RSS (MiB)", "master_rss_mib")
            row("  master KiB per connection (presence)", "master_kib_per_conn")
            row("  whole cluster KiB per connection", "cluster_kib_per_conn")
        row("connections opened/s", "connect_per_s")
    elif s == "master":
        from mc.bench.scenarios import MASTER_SETUPS

        setups = [(k, label) for k, label, _, _ in MASTER_SETUPS if out.get(f"{k}_ops_per_s") is not None]

        def mrow(label: str, key: str, target: Any = None, met: str | None = None) -> None:
            rows.append((label, *[out.get(f"{k}_{key}") for k, _ in setups], target,
                         out.get(met) if met else None))

        rows.append(("claims+lookups/s", *[out.get(f"{k}_ops_per_s") for k, _ in setups],
                     out["target_ops_per_s"], out.get("met_redis_rate", out.get("met_rate"))))
        rows.append(("  vs the memory store", *[
            "1.00x" if k == "mc" else f"{out.get(f'{k}_vs_memory', 0):.2f}x" for k, _ in setups], None, None))
        mrow("  of which won claims/s", "claims_per_s")
        mrow("  p50 ms (pipelined)", "p50_ms")
        mrow("  p99 ms (pipelined)", "p99_ms")
        mrow("server CPU % (masters + Redis)", "server_cpu_pct")
        mrow("generators CPU %", "gen_cpu_pct")
        mrow("limited by", "limited_by")
        mrow("other processes CPU %", "other_cpu_pct")
        mrow("errors", "errors")
        rows.append(("bare registry in-process (context)", out.get("registry_ops_per_s"),
                     *[None] * (len(setups) - 1), None, None))
        header = ("figure", *[label for _, label in setups], "target", "met")
        return f"mc bench {s}\n" + table(rows, header)
    return f"mc bench {s}\n" + table(rows, ("figure", "mc", "baseline", "ratio", "target", "met"))
