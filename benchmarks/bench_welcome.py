"""What "presence before welcome" costs: handshake-to-welcome latency, with and without it.

A standalone worker sends an app's ``welcome`` at once; a clustered one
waits until the master has recorded the connection (one round trip on the
control link, batched with other traffic). Both are measured in the same
run, alternating rounds, with the same blocking client on 127.0.0.1: N
sequential connections (connect, upgrade, read the welcome), then N held
open at once (how long opening them all takes, as ``mc bench connections``
does).

    .venv/bin/python benchmarks/bench_welcome.py [--conns 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time

from mc.bench.procs import Group, free_port, wait_port
from mc.bench.wsclient import request_bytes


def one(port: int, client: str) -> tuple[float, socket.socket]:
    """Seconds from connect to the end of the welcome frame; the open socket."""
    started = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(request_bytes(f"/v1/app?client={client}", port))
    data = b""
    while True:
        data += sock.recv(65536)
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep and len(rest) >= 2 and len(rest) >= 2 + (rest[1] & 0x7F):
            assert head.startswith(b"HTTP/1.1 101"), head
            assert b'"welcome"' in rest
            return time.perf_counter() - started, sock


def measure(port: int, conns: int, tag: str) -> tuple[list[float], float]:
    lat = []
    for i in range(conns):  # sequential: the latency of one
        seconds, sock = one(port, f"{tag}-s{i}")
        lat.append(seconds)
        sock.close()
    held = []
    started = time.perf_counter()
    for i in range(conns):  # then all of them held open: the time to open them
        held.append(one(port, f"{tag}-h{i}")[1])
    total = time.perf_counter() - started
    for sock in held:
        sock.close()
    return lat, total


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    group = Group(pin=True)
    try:
        mport, cport, sport = free_port(), free_port(), free_port()
        quiet = ["--log-level", "warning"]
        master = group.server("master", ["-m", "mc.cli", "master", "--port", str(mport), *quiet])
        wait_port(mport, master, 15)
        clustered = group.server("clustered", ["-m", "mc.cli", "worker", "--port", str(cport), "--id", "c",
                                               "--master", f"http://127.0.0.1:{mport}", *quiet])
        standalone = group.server("standalone", ["-m", "mc.cli", "worker", "--port", str(sport), *quiet])
        wait_port(cport, clustered, 15)
        wait_port(sport, standalone, 15)
        time.sleep(1.0)  # registered
        results: dict[str, tuple[list[float], list[float]]] = {"standalone": ([], []), "clustered": ([], [])}
        for r in range(args.rounds):
            for name, port in (("standalone", sport), ("clustered", cport)):
                lat, total = measure(port, args.conns, f"{name}{r}")
                results[name][0].extend(lat)
                results[name][1].append(total)
        print(f"handshake to welcome, {args.conns} connections x {args.rounds} rounds, one worker")
        print(f"{'worker':<12} {'p50 ms':>8} {'p99 ms':>8} {'open all s (median)':>20}")
        for name, (lat, totals) in results.items():
            print(f"{name:<12} {pct(lat, 0.5):8.2f} {pct(lat, 0.99):8.2f} {statistics.median(totals):20.2f}")
        s, c = results["standalone"], results["clustered"]
        print(f"presence before welcome adds p50 {pct(c[0], 0.5) - pct(s[0], 0.5):+.2f} ms, "
              f"p99 {pct(c[0], 0.99) - pct(s[0], 0.99):+.2f} ms, "
              f"opening all {statistics.median(c[1]) / statistics.median(s[1]):.2f}x the time")
    finally:
        group.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
