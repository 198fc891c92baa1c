"""``mc bench``: measure a worker (and the master) against the targets.

    mc bench fanout        1,000 subscribers, 100-byte publishes; mc vs asyncio websockets.broadcast()
    mc bench relay         500 chat sessions x 2: closed-loop throughput, then p50/p99 at 4,000 msg/s
    mc bench connections   19,990 idle app connections on one worker: RSS per connection
                           (--up N --conns 100000: through ``mc up`` with N workers)
    mc bench master        claims + lookups per second through the master's /v1/control link
    mc bench notify        POST /v1/notify per second (one master core), p99 at half rate, batch notifies/s
    mc bench million       ``mc up`` holding --conns (1,000,000) idle app connections: memory by
                           role, time to open, a broadcast notify's delivery time (mc.bench.million)
    mc bench report        benchmarks/results/report.png from the latest results

fanout, relay and connections take ``--peers picows,picows-coalesced,socketify,nats``
(the ``peers`` extra) and ``--rounds N``: every target in turn, N times, medians,
and mc's ratio to each.

Servers and generators are separate processes, all on 127.0.0.1; with two or
more CPUs the server gets CPU 0 and the generators the rest (sched_setaffinity,
like ``taskset``; ``--no-pin`` to disable). Every process is stopped by PID
(SIGTERM, then SIGKILL) when the run ends, also on Ctrl-C. Results are saved
under benchmarks/results/<scenario>.json; ``--json`` prints them as the last line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

import attrs

from mc.worker.config import WorkerConfig

TARGETS = ("mc", "baseline")
ROUNDS_WITH_PEERS = 3  # --rounds when --peers is given and --rounds is not


def peer_list(text: str) -> list[str]:
    """``--peers a,b``: known peer names, in the order given, each once."""
    from mc.bench.peers import PEERS

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer {', '.join(unknown)} (known: {', '.join(PEERS)})")
    return list(dict.fromkeys(names))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (fanout, relay, connections, master, report)")
    scenarios = p.add_subparsers(dest="scenario", required=True)

    def peers(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--peers", type=peer_list, default=[], metavar="P,Q",
                        help="also measure these peers: picows, picows-coalesced, socketify, nats")
        sp.add_argument("--rounds", type=int, default=None,
                        help=f"rounds of every target in turn; figures are medians "
                             f"(default 1, {ROUNDS_WITH_PEERS} with --peers)")

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
    peers(f)
    f.add_argument("--subscribers", type=int, default=1000)
    f.add_argument("--payload", type=int, default=100, help="bytes of data per message")
    f.add_argument("--receivers", type=int, default=1, help="receiver processes")
    f.add_argument("--batch", type=int, default=16, help="publishes per write")
    f.add_argument("--window", type=int, default=512, help="publishes ahead of the slowest subscriber")

    r = scenarios.add_parser("relay", help="chat sessions of two members")
    common(r, 5.0)
    peers(r)
    for sp in (f, r):
        sp.add_argument("--tls", action="store_true",
                        help="also measure mc over TLS (target 'tls'): its cost as mc / tls ratios")
    r.add_argument("--sessions", type=int, default=500)
    r.add_argument("--payload", type=int, default=100)
    r.add_argument("--window", type=int, default=64,
                   help="messages in flight per connection (load phase): every server at its limit")
    r.add_argument("--rate", type=float, default=4000.0, help="messages/s of the latency phase")
    r.add_argument("--generators", type=int, default=1, help="generator processes")
    r.add_argument("--noise-seconds", type=float, default=1.5,
                   help="length of the machine wake-up delay probe (0: skip)")

    c = scenarios.add_parser("connections", help="idle app connections and worker RSS")
    common(c, 2.0)
    peers(c)
    c.add_argument("--conns", type=int, default=19_990)
    c.add_argument("--up", type=int, default=0, metavar="N",
                   help="run `mc up --workers N` and spread --conns over its workers (mc only)")

    m = scenarios.add_parser("master", help="claims + lookups through /v1/control")
    common(m, 5.0)
    m.add_argument("--links", type=int, default=1, help="fake workers (control links)")
    m.add_argument("--window", type=int, default=256, help="requests in flight per link")
    m.add_argument("--codec", choices=["msgpack", "json"], default="msgpack",
                   help="the control link's codec (workers speak msgpack)")

    from mc.bench.notify import add_arguments as notify_arguments

    n = scenarios.add_parser("notify", help="POST /v1/notify and its batch form, real master + workers")
    common(n, 5.0)
    notify_arguments(n)

    mil = scenarios.add_parser("million", help="mc up holding a million idle app connections")
    common(mil, 5.0)
    mil.add_argument("--conns", type=int, default=1_000_000)
    mil.add_argument("--up", type=int, default=0, metavar="N",
                     help="workers (default: --conns / 19,600, rounded up)")
    mil.add_argument("--setup-seconds", type=float, default=0.0,
                     help="bound of the connecting phase (default: 60 + conns / 500); "
                          "what is open then is held and measured")
    mil.add_argument("--heartbeat", type=float, default=attrs.fields(WorkerConfig).heartbeat.default,
                     help="the workers' ping interval, seconds (default: %(default)s)")

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

    tls = ["tls"] if getattr(args, "tls", False) else []
    args.targets = [*((args.only,) if args.only else TARGETS), *tls, *getattr(args, "peers", [])]
    if getattr(args, "rounds", None) is None:
        args.rounds = ROUNDS_WITH_PEERS if getattr(args, "peers", None) or tls else 1
    if args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2

    def say(line: str) -> None:
        print(line, flush=True)

    from mc.bench import million, notify

    fn = {"notify": notify.notify, "million": million.million}.get(args.scenario) or getattr(
        scenarios, args.scenario)
    stop_on_signals()
    try:
        out = fn(args, say)
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    out["machine"] = results.machine()
    path = results.save(out, args.results)
    print()
    print(render(out))
    print(f"\nsaved {path}")
    if args.json:
        print(json.dumps(out, sort_keys=True))
    return 0


def stop_on_signals() -> None:
    """SIGTERM and SIGINT end a run as Ctrl-C does: every started process stopped by its PID.

    Installed explicitly: a run started in the background of a script has
    SIGINT ignored, and Python's default SIGTERM ends it without its
    ``finally``, leaving a cluster and its generators behind.
    """
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, interrupt)


def render(out: dict[str, Any]) -> str:
    """The result table: one row per figure, one column per target (mc first), then mc's ratios."""
    from mc.bench.results import machine_line, table
    from mc.bench.scenarios import key

    s = out["scenario"]
    if s == "million":
        from mc.bench.million import render as render_million

        return render_million(out)
    if s == "master":
        return _render_master(out) + machine_line(out.get("machine"))
    if s == "notify":
        from mc.bench.notify import rows as notify_rows

        header = ("figure", "mc", "target", "met")
        return f"mc bench {s}\n" + table(notify_rows(out), header) + machine_line(out.get("machine"))
    cols = [key(t) for t in out.get("targets", TARGETS)]
    rows: list[tuple[Any, ...]] = []

    def row(label: str, field: str, target: Any = None, met: str | None = None) -> None:
        rows.append((label, *[out.get(f"{c}_{field}") for c in cols], target, out.get(met) if met else None))

    def ratio(label: str, field: str) -> None:
        rows.append((label, *["" if c == "mc" else _times(out.get(f"mc_vs_{c}_{field}")) for c in cols],
                     None, None))

    if s == "fanout":
        row("delivered msg/s", "msgs_per_s", out["target_msgs_per_s"], "met_rate")
        row("  per server CPU-second", "msgs_per_cpu_s")
        ratio("mc / this, msg/s", "msgs_per_s")
        ratio("mc / this, per server CPU-second", "msgs_per_cpu_s")
        rows.append(("ratio mc / baseline", out.get("ratio"), *[None] * (len(cols) - 1),
                     out["target_ratio"], out.get("met_ratio")))
        row("publishes/s", "publishes_per_s")
        row("frame bytes", "frame_bytes")
        _cpu_rows(row)
        row("connections closed", "closed")
    elif s == "relay":
        row("relayed msg/s (closed loop)", "msgs_per_s", out["target_msgs_per_s"], "met_rate")
        row("  per server CPU-second", "msgs_per_cpu_s")
        ratio("  mc / this, msg/s", "msgs_per_s")
        ratio("  mc / this, per server CPU-second", "msgs_per_cpu_s")
        row("  p50 ms under load", "load_p50_ms")
        row("  p99 ms under load", "load_p99_ms")
        _cpu_rows(row, "load_other_cpu_pct")
        row(f"msg/s achieved (open loop {out['rate']:,.0f}/s)", "rate_achieved")
        row("  p50 ms", "p50_ms")
        row("  p90 ms", "p90_ms")
        row("  p99 ms", "p99_ms", out["target_p99_ms"], "met_p99")
        row("  p99.9 ms", "p999_ms")
        row("  quiet seconds (other CPU < 15%)", "quiet_seconds")
        row("  p50 ms in quiet seconds", "quiet_p50_ms")
        row("  p99 ms in quiet seconds", "quiet_p99_ms", out["target_p99_ms"], "met_p99_quiet")
        row("  server CPU %", "latency_server_cpu_pct")
        row("  other processes CPU %", "other_cpu_pct")
        rows.append(("machine wake-up delay p99 / p99.9 ms (1 ms sleep)",
                     f"{out.get('noise_p99_ms')} / {out.get('noise_p999_ms')}", *[None] * (len(cols) + 1)))
        row("connections closed", "closed")
        row("messages sent, never received", "missing")
    elif s in ("connections", "connections-up"):
        if out.get("up_workers"):
            rows.append(("mc up workers", out["up_workers"], *[None] * (len(cols) + 1)))
        row("connections opened", "connections")
        row("open after hold", "open_after_hold", None, "met_held")
        row("RSS before (MiB)", "rss_idle_mib")
        row("RSS with connections (MiB)", "rss_mib")
        row("KiB per idle connection" + (" (workers)" if out.get("up_workers") else ""),
            "kib_per_conn", out["target_kib_per_conn"], "met_kib")
        ratio("  this / mc", "kib_per_conn")
        if out.get("up_workers"):
            row("  largest worker RSS (MiB)", "worker_rss_mib_max")
            row("  master RSS (MiB)", "master_rss_mib")
            row("  master KiB per connection (presence)", "master_kib_per_conn")
            row("  whole cluster KiB per connection", "cluster_kib_per_conn")
        row("connections opened/s", "connect_per_s")
    if out.get("rounds", 1) > 1:
        row(f"spread of the {out['rounds']} rounds, %", "spread_pct")
    notes = "".join(f"\n{t}: skipped, {why}" for t, why in out.get("skipped", {}).items())
    header = ("figure", *[t for t in out.get("targets", TARGETS)], "target", "met")
    return f"mc bench {s}\n" + table(rows, header) + notes + machine_line(out.get("machine"))


def _times(v: Any) -> str:
    return f"{v:.2f}x" if isinstance(v, int | float) else ""


def _cpu_rows(row: Any, other: str = "other_cpu_pct") -> None:
    row("server CPU %", "server_cpu_pct")
    row("generators CPU %", "gen_cpu_pct")
    row("server's share of its core %", "server_share_pct")
    row("generators' share of theirs %", "gen_share_pct")
    row("limited by", "limited_by")
    row("other processes CPU %", other)


def _render_master(out: dict[str, Any]) -> str:
    from mc.bench.results import table
    from mc.bench.scenarios import MASTER_SETUPS

    rows: list[tuple[Any, ...]] = []
    s = out["scenario"]
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
