#!/opt/mc/bin/python
"""The container healthcheck: ``GET /healthz`` on this container's own port answers 200.

The port is ``MC_PORT``; without it, 7100 (a master) and then 7101 (a
worker). Exits 0 when healthy, 1 otherwise (Docker's and Podman's convention).
Python rather than curl: the image has no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.request

TIMEOUT = 2.0


def healthy(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT) as answer:
            return answer.status == 200
    except OSError:
        return False


def main() -> int:
    configured = os.environ.get("MC_PORT", "").strip()
    ports = [configured] if configured else ["7100", "7101"]
    return 0 if any(healthy(port) for port in ports) else 1


if __name__ == "__main__":
    sys.exit(main())
