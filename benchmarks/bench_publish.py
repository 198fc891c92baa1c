"""What rate ``mc publish`` reaches against one worker: paced (``--rate``) and unpaced.

Starts a master and one worker on free loopback ports, then runs
``mc publish TOPIC DATA --count N --quiet`` at each asked rate (0: as fast as
the window of 256 unacknowledged publishes allows) and reads its summary
line (sent, acked, delivered, errors, msg/s, p50/p99 ack latency). Every
process is stopped by its PID.

    .venv/bin/python benchmarks/bench_publish.py [--seconds 5] [--rates 20000,0] [--window 256]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx

MC = [sys.executable, "-m", "mc.cli"]
SUMMARY = re.compile(r"sent (\d+), acked (\d+), delivered (\d+), errors (\d+), (\d+) msg/s"
                     r"(?:, ack p50 ([\d.]+) ms p99 ([\d.]+) ms)?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--rates", default="20000,0", help="comma list of --rate values (0: unpaced)")
    parser.add_argument("--window", type=int, default=256, help="mc publish --window")
    parser.add_argument("--unpaced-count", type=int, default=200_000, help="messages of an unpaced run")
    args = parser.parse_args()
    mport, wport = free_port(), free_port()
    master_url = f"http://127.0.0.1:{mport}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([*MC, "master", "--port", str(mport), "--log-level", "warning"],
                                      env=env))
        wait_healthy(master_url, procs[0])
        procs.append(subprocess.Popen([*MC, "worker", "--port", str(wport), "--id", "bench-w1", "--master",
                                       master_url, "--log-level", "warning"], env=env))
        wait_healthy(f"http://127.0.0.1:{wport}", procs[1])
        print(f"{'--rate':>8}  {'sent':>8}  {'acked':>8}  {'errors':>6}  {'msg/s':>8}  {'reached':>7}  "
              f"{'p50 ms':>7}  {'p99 ms':>7}")
        for rate in (float(r) for r in args.rates.split(",")):
            count = int(rate * args.seconds) if rate else args.unpaced_count
            done = subprocess.run([*MC, "publish", "bench.publish", '{"n": 1}', "--count", str(count),
                                   "--rate", str(rate), "--window", str(args.window), "--quiet",
                                   "--master", master_url], capture_output=True, text=True, env=env,
                                  timeout=args.seconds * 4 + 60)
            lines = done.stderr.strip().splitlines()
            found = SUMMARY.search(lines[-1]) if lines else None
            if done.returncode != 0 or found is None:
                print(f"mc publish failed ({done.returncode}): {done.stderr[-1000:]}", file=sys.stderr)
                return 1
            sent, acked, _, errors, per_s = (int(found.group(i)) for i in range(1, 6))
            p50, p99 = found.group(6) or "-", found.group(7) or "-"
            reached = f"{per_s / rate:.1%}" if rate else "-"
            print(f"{rate:>8.0f}  {sent:>8}  {acked:>8}  {errors:>6}  {per_s:>8}  {reached:>7}  "
                  f"{p50:>7}  {p99:>7}", flush=True)
    finally:
        for proc in reversed(procs):
            stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
