"""``mc bench million``: ``mc up`` holding a million idle app connections on one machine.

The run (issue 15): ``mc up --workers N`` (N = conns / PER_WORKER, rounded
up: a process may hold 20,000 fds), then generator processes
(mc.bench.holdgen, PER_GEN connections each) connecting straight to the
workers, round-robin (every worker grows at the same pace, so the master's
rebalance never sheds any), each from its own block of 127.0.0.0/8 source
addresses. A connection counts once its ``welcome`` arrived, which is after
the master recorded its presence. Then it holds them ``--seconds``,
measures memory by role, checks presence on the master (a sample of clients
through ``GET /v1/clients/{client}``), posts one broadcast ``POST /v1/notify``
(``to`` = ``{}``) and times its delivery to every connection, as the
generators saw it (their CLOCK_MONOTONIC arrival histograms).

Memory by role: RSS of the master, the workers, ``mc up`` itself and the
generators, each as the growth from before the connections (a generator's
"before" is its own RSS before its first connect); the kernel's from
/proc/meminfo (Slab, SUnreclaim, PageTables), /proc/net/sockstat (TCP
buffer pages) and the netfilter conntrack table (one entry per loopback
connection when conntrack is loaded). The kernel figures are machine-wide:
other processes' churn is in them, which at this scale is small.

Bounds: the setup phase gets SETUP_BASE + conns / MIN_RATE seconds (or
``--setup-seconds``; what is open then is held and measured, and the result
says ``complete: false``), the notify NOTIFY_WAIT; every process is started through a Group and stopped by
PID in a ``finally`` (also on Ctrl-C). Preflight refuses a run the machine
cannot hold (conntrack table, memory, fd limits) with the fix in the message.
"""

from __future__ import annotations

import math
import os
import random
import resource
import sys
import time
from typing import Any

import httpx
import psutil

from .procs import Child, Group, cpu_seconds, wait_port
from .results import table
from .scenarios import _busy, _split

PER_WORKER = 19_600  # connections per worker: under max_connections (19,990), room for probes
PER_GEN = 19_000  # connections per generator: its limit is 20,000 fds
SETUP_BASE = 60.0
MIN_RATE = 500.0  # connections/s the setup bound assumes at the least
NOTIFY_WAIT = 120.0
PLAN_KIB = 16  # machine memory a connection may take (both ends, all roles), for the preflight
STARTUP_PER_WORKER = 1.0  # seconds added to the startup bound per worker (imports share 2 cores)
PRESENCE_SAMPLE = 200
MAX_IN_FLIGHT = 1024  # handshakes in flight over all generators (each gets its share, at least 8)
#: generators run at this niceness, the cluster at 0: the generators are the load,
#: and every connect waits for the master (presence before welcome) and every
#: worker's lease on its heartbeats; with ~100 busy processes on 2 cores a fair
#: share would leave the master ~2% of the CPU
NICE = 10
#: and the master, the one process every connect waits for (its presence), ahead of
#: the workers: at a fair share it got ~1/50 of the machine once 52 workers were busy
#: with keep-alive, and the connect rate fell with it; negative needs CAP_SYS_NICE
#: (else the master stays at 0)
MASTER_NICE = -5
#: the master's lease for this run: it judges a worker's silence by when it reads
#: the heartbeats, and with the machine this loaded it reads them seconds late; at
#: 5 s it purged live workers, whose full re-registrations loaded it further
LEASE = 30.0
WORKER_BASE_MIB = 60  # RSS of a worker before its first connection, for the preflight
MEM_FLOOR = 1536 << 20  # MemAvailable under which the run stops, before the OOM killer picks anyone
SAY_EVERY = 5.0

Say = Any  # Callable[[str], None], as in mc.bench.scenarios


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            parts = value.split()
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def sockstat_tcp_pages() -> int:
    """Pages the kernel holds in TCP socket buffers (/proc/net/sockstat ``mem``)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    return 0


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


CONNTRACK_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
CONNTRACK_COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"


def preflight(conns: int, workers: int) -> None:
    """RuntimeError naming the fix when the machine cannot hold ``conns`` connections."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < PER_GEN + 100:
        raise RuntimeError(f"the fd limit is {hard}; a generator needs {PER_GEN + 100} (ulimit -n)")
    limit, count = _read_int(CONNTRACK_MAX), _read_int(CONNTRACK_COUNT)
    if limit is not None and count is not None and count + conns * 1.05 > limit:
        want = int(math.ceil((count + conns * 1.1) / 1000) * 1000)
        raise RuntimeError(
            f"the conntrack table holds {limit:,} entries ({count:,} used) and every loopback "
            f"connection takes one: sysctl -w net.netfilter.nf_conntrack_max={want}")
    file_max = _read_int("/proc/sys/fs/file-max")
    if file_max is not None and file_max < 2 * conns + 10_000:
        raise RuntimeError(f"fs.file-max is {file_max:,}; {2 * conns:,} sockets need more "
                           "(sysctl -w fs.file-max=...)")
    avail = meminfo().get("MemAvailable", 0)
    need = conns * PLAN_KIB * 1024 + workers * (WORKER_BASE_MIB << 20) + MEM_FLOOR
    if avail < need:
        raise RuntimeError(f"{avail / 2**30:.1f} GiB available; {conns:,} connections on {workers} workers "
                           f"plan for {need / 2**30:.1f} GiB ({PLAN_KIB} KiB each, {WORKER_BASE_MIB} MiB "
                           f"a worker, {MEM_FLOOR >> 20} MiB spare)")


class Roles:
    """The cluster's processes by role, and their RSS."""

    def __init__(self, up: Child) -> None:
        self.up = psutil.Process(up.pid)
        kids = self.up.children()
        up.descendants = kids
        self.master = [k for k in kids if "master" in k.cmdline()]
        self.workers = [k for k in kids if "worker" in k.cmdline()]

    def rss(self) -> dict[str, int]:
        def total(ps: list[psutil.Process]) -> int:
            n = 0
            for p in ps:
                try:
                    n += p.memory_info().rss
                except psutil.Error:
                    pass
            return n

        return {"master": total(self.master), "workers": total(self.workers), "supervisor": total([self.up])}

    def cpu(self, gens: list[Child]) -> dict[str, float]:
        """CPU seconds (user + system) so far of the master, the workers and ``gens``."""
        return {"master": cpu_seconds(self.master), "workers": cpu_seconds(self.workers),
                "generators": cpu_seconds([psutil.Process(g.pid) for g in gens if g.alive()])}


def _kernel() -> dict[str, int]:
    m = meminfo()
    return {"slab": m.get("Slab", 0), "sunreclaim": m.get("SUnreclaim", 0),
            "pagetables": m.get("PageTables", 0),
            "tcp_buffers": sockstat_tcp_pages() * os.sysconf("SC_PAGE_SIZE"),
            "used": m.get("MemTotal", 0) - m.get("MemAvailable", 0),
            "conntrack": _read_int(CONNTRACK_COUNT) or 0}


def _last(g: Child) -> dict[str, Any]:
    """The generator's latest line (its counters are cumulative)."""
    return g.latest() or {}


def _first(g: Child, event: str) -> dict[str, Any] | None:
    for msg in list(g.lines):  # appended by the reader thread; a copy to iterate
        if msg.get("event") == event:
            return msg
    return None


def _pick_port(workers: int) -> int:
    """The master's port: it and the next ``workers`` free, below the ephemeral range."""
    for _ in range(50):
        port = random.randrange(20_000, 32_000 - workers)
        if not any(_busy(port + i) for i in range(workers + 1)):
            return port
    raise RuntimeError("no run of free ports for mc up")


def _wait_registered(http: httpx.Client, workers: int, up: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not up.alive():
            raise RuntimeError(f"mc up exited: {up.tail()}")
        try:
            listed = http.get("/v1/workers").json()["workers"]
            if sum(w["state"] == "up" for w in listed) >= workers:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the master did not list {workers} workers within {timeout:.0f}s")


def million(opts: Any, say: Say) -> dict[str, Any]:
    conns = opts.conns
    workers = opts.up or math.ceil(conns / PER_WORKER)
    if conns < 1 or conns > workers * PER_WORKER:
        raise RuntimeError(f"--conns must be 1..{workers * PER_WORKER:,} for {workers} workers "
                           f"(at most {PER_WORKER:,} each)")
    preflight(conns, workers)
    n_gens = math.ceil(conns / PER_GEN)
    setup = opts.setup_seconds or SETUP_BASE + conns / MIN_RATE
    out: dict[str, Any] = {"scenario": "million", "conns": conns, "workers": workers, "generators": n_gens,
                           "seconds": opts.seconds, "cpus": os.cpu_count(), "heartbeat": opts.heartbeat}
    group = Group(pin=False)
    try:
        port = _pick_port(workers)
        t_start = time.monotonic()
        up = group.server("mc up", ["-m", "mc.cli", "up", "--workers", str(workers), "--port", str(port),
                                    f"--lease={LEASE}", f"--heartbeat={opts.heartbeat}",
                                    "--log-level", "WARNING"], grace=30.0)
        startup = 20.0 + STARTUP_PER_WORKER * workers
        say(f"million: mc up with {workers} workers (pid {up.pid}), ports {port}..{port + workers}")
        for i in range(workers + 1):
            wait_port(port + i, up, max(1.0, t_start + startup - time.monotonic()))
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=NOTIFY_WAIT)
        _wait_registered(http, workers, up, max(5.0, t_start + startup - time.monotonic()))
        out["startup_s"] = round(time.monotonic() - t_start, 1)
        roles = Roles(up)
        out["master_nice"] = _renice(roles.master, MASTER_NICE)
        time.sleep(1.0)
        rss0, k0 = roles.rss(), _kernel()
        say(f"  up in {out['startup_s']} s: master {rss0['master'] / 2**20:.0f} MiB, workers "
            f"{rss0['workers'] / 2**20:.0f} MiB in all; opening {conns:,} connections "
            f"from {n_gens} generators (bound {setup:.0f} s)")
        ports = ",".join(str(port + 1 + i) for i in range(workers))
        cpu0 = roles.cpu([])
        t0 = time.monotonic()
        gens = []
        concurrency = str(max(8, MAX_IN_FLIGHT // n_gens))
        for slot, n in enumerate(_split(conns, n_gens)):
            g = Child(f"hold{slot}", [sys.executable, "-m", "mc.bench.holdgen", "--ports", ports,
                                      "--conns", str(n), "--slot", str(slot), "--timeout", str(setup),
                                      "--concurrency", concurrency,
                                      "--duration", str(setup + opts.seconds + NOTIFY_WAIT + 120)],
                      cpus=None, stdin=True)
            group.children.append(g)
            gens.append(g)
            os.setpriority(os.PRIO_PROCESS, g.pid, NICE)
        _wait_ready(gens, up, t0 + setup + 30, say, conns)
        readies = [_first(g, "ready") or {} for g in gens]
        open_s = max(r["t"] for r in readies) - t0
        out["open_s"] = round(open_s, 1)
        out["setup_bound_s"] = round(setup)
        out["complete"] = all(r.get("complete", True) for r in readies)
        out["connect_per_s"] = round(sum(r.get("opened", 0) for r in readies) / open_s)
        cpu1, t1 = roles.cpu(gens), time.monotonic()
        time.sleep(opts.seconds)
        cpu2, t2 = roles.cpu(gens), time.monotonic()
        rss1, k1 = roles.rss(), _kernel()
        held = sum(_last(g).get("opened", 0) for g in gens)
        out.update(_cpu(cpu0, cpu1, cpu2, t2 - t1, held))
        out.update(_memory(rss0, rss1, k0, k1, gens, held))
        out["held"] = held
        out["presence_local"] = sum(_last(g).get("local", 0) for g in gens)
        out["failed"] = sum(_last(g).get("failed", 0) for g in gens)
        out["presence_sampled"], out["presence_online"] = _presence(http, gens)
        say(f"  holding {held:,}: RSS workers {rss1['workers'] / 2**30:.2f} GiB, master "
            f"{rss1['master'] / 2**20:.0f} MiB; kernel slab +{(k1['slab'] - k0['slab']) / 2**30:.2f} GiB; "
            f"presence {out['presence_online']}/{out['presence_sampled']} sampled clients online")
        out.update(_broadcast(http, gens, held, say))
        out["met_held"] = held >= conns
        out["met_delivered"] = out.get("notify_received") == held
        # what the cluster complained about (mc up runs at WARNING): lease misses, refusals
        out["cluster_warnings"] = [line.strip() for line in up.stderr
                                   if " WARNING " in line or " ERROR " in line]
    finally:
        group.stop_all()
    return out


def _cpu(cpu0: dict[str, float], cpu1: dict[str, float], cpu2: dict[str, float], hold_s: float,
         held: int) -> dict[str, Any]:
    """CPU by role: milliseconds per connection opened (from the first connect to the
    last ready, generators' start-up included) and, while holding, CPU seconds per
    second per 100,000 idle connections (keep-alive, reports; a window of at least one
    heartbeat sees every connection's ping once)."""
    per = max(1, held)
    return {
        "connect_cpu_ms_per_conn": {r: round((cpu1[r] - cpu0[r]) * 1000 / per, 3) for r in cpu1},
        "hold_cpu_per_100k": {r: round((cpu2[r] - cpu1[r]) / max(hold_s, 1e-9) * 1e5 / per, 4)
                              for r in cpu2},
    }


def _renice(procs: list[psutil.Process], nice: int) -> int:
    """Set ``procs``' niceness; returns the one they have (unchanged when not permitted)."""
    for p in procs:
        try:
            p.nice(nice)
        except psutil.Error:
            pass
    return procs[0].nice() if procs else 0


def _wait_ready(gens: list[Child], up: Child, deadline: float, say: Say, conns: int) -> None:
    next_say = time.monotonic() + SAY_EVERY
    t0 = time.monotonic()
    while True:
        if all(_first(g, "ready") for g in gens):
            return
        for g in [up, *gens]:
            if not g.alive():
                raise RuntimeError(f"{g.name} exited: {g.tail()}")
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError("generators not ready within the setup bound")
        avail = meminfo().get("MemAvailable", 0)
        opened = sum(_last(g).get("opened", 0) for g in gens)
        if avail < MEM_FLOOR:
            raise RuntimeError(f"stopped: {avail / 2**30:.2f} GiB available, under the "
                               f"{MEM_FLOOR / 2**30:.1f} GiB floor, at {opened:,} connections")
        if now >= next_say:
            next_say += SAY_EVERY
            errors: dict[str, int] = {}
            for g in gens:
                for k, v in _last(g).get("errors", {}).items():
                    errors[k] = errors.get(k, 0) + v
            say(f"  {now - t0:5.0f} s: {opened:>9,}/{conns:,} welcomed ({opened / (now - t0):,.0f}/s), "
                f"{avail / 2**30:.1f} GiB available" + (f", errors {errors}" if errors else ""))
        time.sleep(0.2)


def _memory(rss0: dict[str, int], rss1: dict[str, int], k0: dict[str, int], k1: dict[str, int],
            gens: list[Child], held: int) -> dict[str, Any]:
    per = max(1, held)
    gen_before = sum((_first(g, "started") or {}).get("rss", 0) for g in gens)
    gen_now = sum(psutil.Process(g.pid).memory_info().rss for g in gens if g.alive())
    out: dict[str, Any] = {}
    for role in ("workers", "master", "supervisor"):
        out[f"{role}_rss_mib"] = round(rss1[role] / 2**20, 1)
        out[f"{role}_kib_per_conn"] = round((rss1[role] - rss0[role]) / per / 1024, 3)
    out["generators_rss_mib"] = round(gen_now / 2**20, 1)
    out["generators_kib_per_conn"] = round((gen_now - gen_before) / per / 1024, 3)
    for key in ("slab", "sunreclaim", "pagetables", "tcp_buffers"):
        out[f"kernel_{key}_kib_per_conn"] = round((k1[key] - k0[key]) / per / 1024, 3)
    out["kernel_slab_gib"] = round(k1["slab"] / 2**30, 2)
    out["conntrack_entries"] = k1["conntrack"] - k0["conntrack"]
    rss_total = sum(rss1.values()) + gen_now
    out["rss_total_gib"] = round(rss_total / 2**30, 2)
    kernel = (k1["slab"] - k0["slab"]) + (k1["pagetables"] - k0["pagetables"])
    out["total_kib_per_conn"] = round(
        (rss_total - sum(rss0.values()) - gen_before + kernel) / per / 1024, 2)
    out["machine_used_gib"] = round(k1["used"] / 2**30, 2)
    out["machine_used_kib_per_conn"] = round((k1["used"] - k0["used"]) / per / 1024, 2)
    return out


def _presence(http: httpx.Client, gens: list[Child]) -> tuple[int, int]:
    """(sampled, online): random clients of the generators, looked up on the master."""
    rng = random.Random(15)
    sampled = online = 0
    for _ in range(PRESENCE_SAMPLE):
        slot = rng.randrange(len(gens))
        n = (_first(gens[slot], "ready") or {}).get("opened", 0)
        if not n:
            continue
        sampled += 1
        try:
            answer = http.get(f"/v1/clients/h{slot}c{rng.randrange(n)}", timeout=10.0).json()
            online += bool(answer.get("online"))
        except (httpx.HTTPError, ValueError):
            pass
    return sampled, online


def _broadcast(http: httpx.Client, gens: list[Child], held: int, say: Say) -> dict[str, Any]:
    """One ``POST /v1/notify`` to all apps; when it reached 50%, 99% and all of them."""
    before = sum(_last(g).get("notified", 0) for g in gens)
    t0 = time.monotonic()
    status: int | str
    try:
        r = http.post("/v1/notify", json={"to": {}, "data": "m", "id": f"million-{os.getpid()}-{t0}"})
        delivered = r.json().get("delivered") if r.status_code == 200 else None
        status = r.status_code
    except (httpx.HTTPError, ValueError) as exc:
        delivered, status = None, str(exc)
    ack_s = time.monotonic() - t0
    deadline = t0 + NOTIFY_WAIT
    while time.monotonic() < deadline:
        if sum(_last(g).get("notified", 0) for g in gens) - before >= held:
            break
        time.sleep(0.2)
    for g in gens:
        g.go("stop")
    arrivals: dict[int, int] = {}
    for g in gens:
        done = g.wait_event("done", 30.0)
        for k, v in done.get("arrivals", {}).items():
            arrivals[int(k)] = arrivals.get(int(k), 0) + v
    got = sum(arrivals.values())
    out: dict[str, Any] = {"notify_status": status, "notify_delivered": delivered,
                           "notify_ack_s": round(ack_s, 3), "notify_received": got}
    base = int(t0 * 1000)
    seen = 0
    marks = {"notify_p50_s": 0.5, "notify_p99_s": 0.99, "notify_all_s": 1.0}
    for ms in sorted(arrivals):
        seen += arrivals[ms]
        for key, frac in marks.items():
            if key not in out and seen >= frac * got:
                out[key] = round((ms + 1 - base) / 1000, 3)
    say(f"  broadcast: HTTP {status} in {ack_s:.2f} s, delivered {delivered}, "
        f"{got:,} frames arrived, the last after {out.get('notify_all_s')} s")
    return out


def render(out: dict[str, Any]) -> str:
    """The result table of ``mc bench million``."""
    rows = [
        ("workers / generators", f"{out['workers']} / {out['generators']}"),
        ("workers' heartbeat s (a ping per connection each)", out.get("heartbeat")),
        ("mc up startup s (all workers registered)", out.get("startup_s")),
        ("niceness: master / workers / generators", f"{out.get('master_nice')} / 0 / {NICE}"),
        ("connections held (welcomed) / asked", f"{out.get('held', 0):,} / {out['conns']:,}"),
        ("  welcomed with presence local / failed", f"{out.get('presence_local')} / {out.get('failed')}"),
        ("  presence on the master (sampled clients online)",
         f"{out.get('presence_online')} / {out.get('presence_sampled')}"),
        ("time to open them all s (setup bound)", f"{out.get('open_s')} ({out.get('setup_bound_s')})"),
        ("  all opened within the bound", out.get("complete")),
        ("connections opened/s", out.get("connect_per_s")),
        ("  CPU ms per connection opened: master / workers / generators",
         " / ".join(str(v) for v in out.get("connect_cpu_ms_per_conn", {}).values())),
        ("holding: CPU s/s per 100k connections: master / workers / generators",
         " / ".join(str(v) for v in out.get("hold_cpu_per_100k", {}).values())),
        ("RSS total GiB (cluster + generators)", out.get("rss_total_gib")),
        ("KiB per connection: workers", out.get("workers_kib_per_conn")),
        ("  master (presence)", out.get("master_kib_per_conn")),
        ("  generators", out.get("generators_kib_per_conn")),
        ("  kernel slab (both sockets, conntrack)", out.get("kernel_slab_kib_per_conn")),
        ("  of which unreclaimable", out.get("kernel_sunreclaim_kib_per_conn")),
        ("  kernel page tables", out.get("kernel_pagetables_kib_per_conn")),
        ("  kernel TCP buffers (sockstat mem)", out.get("kernel_tcp_buffers_kib_per_conn")),
        ("  all of the above", out.get("total_kib_per_conn")),
        ("  machine (MemTotal - MemAvailable)", out.get("machine_used_kib_per_conn")),
        ("conntrack entries added", out.get("conntrack_entries")),
        ("cluster warnings (of mc up's last 50 log lines)", len(out.get("cluster_warnings", []))),
        ("broadcast notify: HTTP answer s", out.get("notify_ack_s")),
        ("  delivered (ack) / frames received",
         f"{out.get('notify_delivered')} / {out.get('notify_received')}"),
        ("  received by 50% / 99% / all s",
         f"{out.get('notify_p50_s')} / {out.get('notify_p99_s')} / {out.get('notify_all_s')}"),
    ]
    return "mc bench million\n" + table([(k, v) for k, v in rows], ("figure", "value"))
