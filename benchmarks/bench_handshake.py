"""What verifying app tokens costs: handshakes per second with and without JWT, one worker.

Three standalone workers, started the same way but for app auth: none,
HS256 (``--jwt-secret``) and RS256 (``--jwt-public-key``, a 2048-bit key made
here). Raw-socket client processes open app connections in a closed loop
(connect, upgrade with the token in the query, read the ``welcome``, reset
the socket so no TIME_WAIT piles up) against one worker at a time; the
variants alternate within each round, so a noisy machine affects all of
them alike. Reported per variant: handshakes/s, the worker's CPU share,
and handshakes per worker CPU-second (the figure that does not depend on
whether the clients or the worker were the limit), then each JWT variant's
ratio to the plain one. The worker is pinned to CPU 0, the clients to the
other CPUs (mc.bench.procs).

    .venv/bin/python benchmarks/bench_handshake.py [--seconds 3] [--rounds 3] [--clients 2]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mc.bench.procs import Child, Group, free_port, wait_port
from mc.bench.wsclient import Reporter, request_bytes, wait_go

SECRET = "bench-handshake-secret-0123456789abcdef"
#: distinct subjects per client process (tokens are minted once, before the run)
SUBJECTS = 64
#: a handshake that takes longer than this fails the run
HANDSHAKE_TIMEOUT = 5.0
LINGER_RESET = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT on the client's ports


def _welcome_done(data: bytes) -> bool:
    """True once ``data`` holds the 101 head and the whole first (welcome) frame."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep or len(rest) < 2:
        return False
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head.splitlines()[0]!r}")
    size, offset = rest[1] & 0x7F, 2
    if size == 126:
        if len(rest) < 4:
            return False
        size, offset = struct.unpack("!H", rest[2:4])[0], 4
    return len(rest) >= offset + size


def handshake(port: int, path: str) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_TIMEOUT)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request_bytes(path, port))
        data = b""
        while not _welcome_done(data):
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the worker closed during the handshake")
            data += chunk
        if b'"welcome"' not in data:
            raise RuntimeError("the first frame is not a welcome")
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        sock.close()


def run_client(a: argparse.Namespace) -> None:
    """One client process: ``go`` on stdin, then handshakes for ``seconds``; one ``done`` line."""
    tokens = json.loads(Path(a.tokens).read_text()) if a.tokens else []
    out = Reporter("handshake", a.slot)
    out.emit("ready")
    if not wait_go(60):
        return
    n = 0
    started = time.monotonic()
    deadline = started + a.seconds
    while time.monotonic() < deadline:
        i = n % SUBJECTS
        who = f"token={tokens[i]}" if tokens else f"client=c{a.slot}-{i}"
        handshake(a.port, f"/v1/app?{who}&device=d{n}")
        n += 1
    out.emit("done", handshakes=n, seconds=time.monotonic() - started)


def _tokens(directory: Path, name: str, key: str | bytes, algorithm: str, slots: int) -> list[str]:
    """One file of tokens per client process; their paths."""
    exp = int(time.time()) + 3600
    paths = []
    for slot in range(slots):
        minted = [jwt.encode({"sub": f"c{slot}-{i}", "exp": exp}, key, algorithm=algorithm)
                  for i in range(SUBJECTS)]
        path = directory / f"{name}-{slot}.json"
        path.write_text(json.dumps(minted))
        paths.append(str(path))
    return paths


def _round(group: Group, port: int, server: Child, tokens: list[str] | None,
           clients: int, seconds: float) -> tuple[float, float]:
    """(handshakes/s, worker CPU seconds per wall second) for one variant, one round."""
    procs = []
    for slot in range(clients):
        args = [sys.executable, __file__, "client", "--port", str(port), "--slot", str(slot),
                "--seconds", str(seconds), "--tokens", tokens[slot] if tokens else ""]
        child = Child(f"client{slot}", args, cpus=group.gen_cpus, stdin=True)
        group.children.append(child)
        procs.append(child)
    for child in procs:
        child.wait_event("ready", 30)
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    for child in procs:
        child.go()
    done = [child.wait_event("done", seconds + 30) for child in procs]
    cpu, wall = server.cpu_seconds() - cpu0, time.monotonic() - t0
    for child in procs:
        child.stop()
    rate = sum(d["handshakes"] for d in done) / max(d["seconds"] for d in done)
    return rate, cpu / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    client = sub.add_parser("client")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--slot", type=int, default=0)
    client.add_argument("--seconds", type=float, default=3.0)
    client.add_argument("--tokens", default="")
    parser.add_argument("--seconds", type=float, default=3.0, help="per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    args = parser.parse_args()
    if args.mode == "client":
        run_client(args)
        return 0

    group = Group(pin=True)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = directory / "jwt.pem"
        public.write_bytes(rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        variants: dict[str, tuple[list[str], list[str] | None]] = {
            "no auth": ([], None),
            "HS256": (["--jwt-secret", SECRET], _tokens(directory, "hs", SECRET, "HS256", args.clients)),
            "RS256": (["--jwt-public-key", str(public)],
                      _tokens(directory, "rs", rsa_key, "RS256", args.clients)),
        }
        try:
            servers: dict[str, tuple[int, Child]] = {}
            for name, (flags, _) in variants.items():
                port = free_port()
                servers[name] = (port, group.server(name, ["-m", "mc.cli", "worker", "--port", str(port),
                                                           "--log-level", "warning", *flags]))
            for port, server in servers.values():
                wait_port(port, server, 15)
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, (_, tokens) in variants.items():
                    port, server = servers[name]
                    results[name].append(_round(group, port, server, tokens, args.clients, args.seconds))
        finally:
            group.stop_all()

    print(f"app handshakes to welcome, one worker, {args.clients} client processes, "
          f"{args.rounds} rounds x {args.seconds:g} s per variant (medians)")
    print(f"{'variant':<8} {'handshakes/s':>13} {'worker CPU':>11} {'per worker CPU-s':>17} "
          f"{'vs no auth':>11}")
    per_cpu = {name: statistics.median(r / max(c, 1e-9) for r, c in rs) for name, rs in results.items()}
    for name, rs in results.items():
        rate = statistics.median(r for r, _ in rs)
        share = statistics.median(c for _, c in rs)
        ratio = per_cpu[name] / per_cpu["no auth"]
        print(f"{name:<8} {rate:13.0f} {share * 100:10.0f}% {per_cpu[name]:17.0f} {ratio:10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
