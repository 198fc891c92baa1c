"""Benchmark results: percentiles, the result table, the JSON files and the plot."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .gen import BUCKET_US

SCENARIOS = ("fanout", "relay", "connections", "connections-up", "master")


def results_dir(override: str | None = None) -> Path:
    """benchmarks/results of the source tree (or of the working directory)."""
    if override:
        return Path(override)
    tree = Path(__file__).resolve().parents[2] / "benchmarks"
    base = tree if tree.is_dir() else Path.cwd() / "benchmarks"
    return base / "results"


def merge_hists(hists: Iterable[dict[str, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        for k, v in h.items():
            out[int(k)] = out.get(int(k), 0) + v
    return out


def percentiles(hist: dict[int, int], ps: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """Percentiles in milliseconds (upper edge of the 10 us bucket)."""
    total = sum(hist.values())
    out: dict[str, float] = {}
    if not total:
        return {_pkey(p): 0.0 for p in ps}
    keys = sorted(hist)
    for p in ps:
        want = total * p / 100
        seen = 0
        for k in keys:
            seen += hist[k]
            if seen >= want:
                out[_pkey(p)] = round((k + 1) * BUCKET_US / 1000, 3)
                break
    return out


def _pkey(p: float) -> str:
    return "p" + (str(p).replace(".", "") if p != int(p) else str(int(p)))


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What every result is recorded with: CPU, cores, kernel, Python, load."""
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def machine_line(m: dict[str, Any] | None) -> str:
    """The table's footer: the machine; each target's "other processes CPU %" is in its column."""
    if not m:
        return ""
    return (f"\nmachine: {m.get('cpu')}, {m.get('cpus')} CPUs, kernel {m.get('kernel')}, "
            f"Python {m.get('python')}, load average {m.get('loadavg_1m')}")


def save(result: dict[str, Any], override: str | None = None) -> Path:
    d = results_dir(override)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{result['scenario']}.json"
    doc = dict(result, saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
               machine=result.get("machine") or machine(), loadavg_1m=round(os.getloadavg()[0], 2))
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_all(override: str | None = None) -> dict[str, dict[str, Any]]:
    d = results_dir(override)
    out = {}
    for name in SCENARIOS:
        p = d / f"{name}.json"
        if p.exists():
            try:
                out[name] = json.loads(p.read_text())
            except ValueError:
                pass
    return out


# ------------------------------------------------------------------ table


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if v else "0"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    cells = [header] + [tuple(fmt(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, r in enumerate(cells):
        cols = enumerate(zip(r, widths, strict=True))
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in cols))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------- plot

#: legend labels of the systems a result may hold (a peer missing here is shown by its name)
LABELS = {"mc": "mc (1 worker, 1 core)", "baseline": "asyncio websockets",
          "picows": "picows + uvloop", "picows-coalesced": "picows, coalesced writes",
          "socketify": "socketify (uWS pub/sub)", "nats": "nats-server, GOMAXPROCS=1"}
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#7f7f7f", "#e377c2")


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _systems(results: Iterable[dict[str, Any]]) -> list[str]:
    """mc, the baseline and the peers the results hold, in the order they were run."""
    out: list[str] = []
    for r in results:
        for t in r.get("targets", ["mc", "baseline"]):
            if t not in out:
                out.append(t)
    return out



def plot(override: str | None = None) -> Path:
    """benchmarks/results/report.png from the latest result of each scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = load_all(override)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    mc_color, target_color = _color(0), "#d62728"

    # 1. messages/s per scenario, one bar per system side by side (log scale)
    ax = axes[0][0]
    groups = [(k, label.format(subscribers=res[k].get("subscribers"), sessions=res[k].get("sessions")))
              for k, label in (("fanout", "fan-out\n({subscribers} subscribers)"),
                               ("relay", "chat relay\n({sessions} sessions x 2)")) if k in res]
    systems = _systems(res[k] for k, _ in groups)
    if "master" in res:
        groups.append(("master", "master /v1/control\nclaims+lookups"))
    width = 0.8 / max(1, len(systems))
    for j, system in enumerate(systems):
        xs, vals = [], []
        for i, (k, _) in enumerate(groups):
            field = "ops_per_s" if k == "master" else "msgs_per_s"
            v = res[k].get(f"{system.replace('-', '_')}_{field}")
            if v:
                xs.append(i - 0.4 + width * (j + 0.5))
                vals.append(v)
        ax.bar(xs, vals, width, label=LABELS.get(system, system), color=_color(j))
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, v, f"{v / 1000:,.0f}k", ha="center", va="bottom", fontsize=6)
    for i, (k, _) in enumerate(groups):
        t = res[k].get("target_ops_per_s" if k == "master" else "target_msgs_per_s")
        if t:
            ax.hlines(t, i - 0.45, i + 0.45, colors=target_color, linestyles="dashed",
                      label="target" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xticks(list(range(len(groups))))
    ax.set_xticklabels([label for _, label in groups], fontsize=8)
    ax.set_ylabel("messages / s")
    ax.set_title("Throughput per server process")
    ax.legend(fontsize=6)

    # 2. relay latency percentiles at the fixed rate
    ax = axes[0][1]
    if "relay" in res:
        r = res["relay"]
        ps = ["p50", "p90", "p99", "p999"]
        systems = _systems([r])
        width = 0.8 / max(1, len(systems))
        for j, system in enumerate(systems):
            vals = [r.get(f"{system.replace('-', '_')}_{p}_ms", 0) for p in ps]
            ax.bar([i - 0.4 + width * (j + 0.5) for i in range(len(ps))], vals, width,
                   label=LABELS.get(system, system), color=_color(j))
        if r.get("target_p99_ms"):
            ax.axhline(r["target_p99_ms"], color=target_color, linestyle="dashed", label="p99 target")
        ax.set_xticks(list(range(len(ps))))
        ax.set_xticklabels(["p50", "p90", "p99", "p99.9"])
        ax.set_ylabel("ms")
        ax.set_title(f"Chat relay latency at {r.get('rate', 0):,.0f} msg/s")
        ax.legend(fontsize=6)

    # 3. memory per idle connection
    ax = axes[1][0]
    names, vals, colors = [], [], []
    if "connections" in res:
        r = res["connections"]
        names.append(f"mc worker\n{r.get('mc_connections', 0):,} conns")
        vals.append(r.get("mc_kib_per_conn", 0))
        colors.append(mc_color)
    if "connections-up" in res:
        r = res["connections-up"]
        names.append(f"mc up, {r.get('up_workers')} workers\n{r.get('mc_connections', 0):,} conns")
        vals.append(r.get("mc_kib_per_conn", 0))
        colors.append(mc_color)
    if "connections" in res:
        r = res["connections"]
        for j, system in enumerate(_systems([r])):
            k = system.replace("-", "_")
            if system != "mc" and r.get(f"{k}_kib_per_conn"):
                names.append(f"{system}\n{r.get(f'{k}_connections', 0):,} conns")
                vals.append(r[f"{k}_kib_per_conn"])
                colors.append(_color(j))
    if names:
        ax.bar(names, vals, color=colors)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.2f} KiB", ha="center", va="bottom", fontsize=8)
        target = res.get("connections", {}).get("target_kib_per_conn", 2.0)
        ax.axhline(target, color=target_color, linestyle="dashed", label=f"target ({target:g} KiB)")
        ax.legend(fontsize=7)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylabel("KiB of worker RSS per idle connection")
        ax.set_title("Memory per idle app connection")

    # 4. master latency percentiles (pipelined, loaded)
    ax = axes[1][1]
    if "master" in res:
        r = res["master"]
        ps = ["p50", "p90", "p99", "p999"]
        vals = [r.get(f"mc_{p}_ms", 0) for p in ps]
        pos = list(range(len(ps)))
        ax.bar(pos, vals, 0.5, color=mc_color, label="mc master (Hypercorn, batched control link)")
        ax.set_xticks(pos)
        ax.set_xticklabels(["p50", "p90", "p99", "p99.9"])
        ax.legend(fontsize=7)
        ax.set_ylabel("ms (request to reply, pipelined)")
        ax.set_title(f"Master control link: {r.get('mc_ops_per_s', 0):,.0f} claims+lookups/s "
                     f"(window {r.get('window')})")
    fig.suptitle("mc benchmarks (mc bench): latest results", fontsize=12)
    fig.tight_layout()
    out = results_dir(override) / "report.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
