"""Real containers for the deployment tests: podman, podman-compose, the repo's image.

Everything here runs the real tools with a timeout and touches only what it
made: the image tag :data:`IMAGE`, and the containers and network of one
compose project whose name is unique to the test run (found by the project
label podman-compose puts on them).

No registry serves images on the machines this project runs on, so
:func:`ensure_podman` runs ``<repo>/../shared/containers/setup.sh`` when
podman or the local base image is missing (it installs podman, runc and
podman-compose and builds ``localhost/mc-base:bookworm`` from Debian's
packages), and the image is built with ``--build-arg BASE=`` that base.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO.parent / "shared" / "containers" / "setup.sh"
BASE_IMAGE = os.environ.get("MC_BASE_IMAGE", "localhost/mc-base:bookworm")
IMAGE = "localhost/mc:deploy-test"
#: the first run installs packages and debootstraps the base image (about 1-6 minutes)
SETUP_TIMEOUT = 900
BUILD_TIMEOUT = 600
COMMAND_TIMEOUT = 120


def run(args: list[str], *, timeout: float = COMMAND_TIMEOUT, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (bounded); its output, stderr included in failures."""
    done = subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{quiet(done.stderr)}"
        )
    return done


def quiet(stderr: str) -> str:
    """stderr without podman 4's complaints that there is no systemd to time healthchecks."""
    noise = ("systemd", "failed to connect to syslog")
    return "\n".join(line for line in stderr.splitlines() if not any(n in line for n in noise))[-3000:]


def podman_runs() -> str | None:
    """None when podman, podman-compose and the base image are ready; else what is missing."""
    if not shutil.which("podman"):
        return "podman is not installed"
    if not shutil.which("podman-compose"):
        return "podman-compose is not installed"
    if run(["podman", "image", "exists", BASE_IMAGE], check=False).returncode != 0:
        return f"there is no {BASE_IMAGE} image"
    probe = run(["podman", "run", "--rm", BASE_IMAGE, "true"], check=False)
    if probe.returncode != 0:
        return f"podman cannot run a container: {quiet(probe.stderr)[-500:]}"
    return None


def ensure_podman() -> None:
    """Make podman usable (the shared setup script), or skip saying why it cannot run here."""
    missing = podman_runs()
    if missing is None:
        return
    if not SETUP.is_file():
        pytest.skip(f"{missing}, and there is no {SETUP} to set podman up")
    done = run(["bash", str(SETUP)], timeout=SETUP_TIMEOUT, check=False)
    if done.returncode != 0:
        pytest.skip(f"{missing}, and {SETUP} failed ({done.returncode}): {quiet(done.stderr)[-500:]}")
    missing = podman_runs()
    if missing is not None:
        pytest.skip(f"after {SETUP}: {missing}")


def free_port() -> int:
    """A free TCP port on the host's loopback (for the master's published port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_image() -> float:
    """Build the repo's Dockerfile on the local base as :data:`IMAGE`; the seconds it took."""
    started = time.monotonic()
    run(["podman", "build", "--format", "docker", "--build-arg", f"BASE={BASE_IMAGE}",
         "-t", IMAGE, str(REPO)], timeout=BUILD_TIMEOUT)
    return time.monotonic() - started


def image_size(image: str = IMAGE) -> int:
    """The image's size in bytes, as ``podman images`` reports it."""
    return int(run(["podman", "image", "inspect", "-f", "{{.Size}}", image]).stdout.strip())


class Project:
    """One compose project of this repo's docker-compose.yml, under a unique name."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = {**os.environ, **env}

    def compose(self, *args: str, timeout: float = COMMAND_TIMEOUT,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["podman-compose", "-f", str(REPO / "docker-compose.yml"), "-p", self.name, *args],
                   timeout=timeout, check=check, env=self.env)

    def containers(self, *, all: bool = True) -> list[dict[str, Any]]:
        """``podman ps`` entries of this project's containers (stopped ones too by default)."""
        label = f"label=io.podman.compose.project={self.name}"
        args = ["podman", "ps", "--format", "json", "--filter", label]
        return json.loads(run([*args, "-a"] if all else args).stdout or "[]")

    def names(self, service: str | None = None, *, all: bool = True) -> list[str]:
        return sorted(
            c["Names"][0] for c in self.containers(all=all)
            if service is None or c["Labels"].get("com.docker.compose.service") == service
        )

    def networks(self) -> list[str]:
        out = run(["podman", "network", "ls", "--format", "{{.Name}}"]).stdout.split()
        return [n for n in out if n.startswith(f"{self.name}_")]

    def remove_leftovers(self) -> None:
        """Force-remove whatever of this project is still there (after a failed test)."""
        names = self.names()
        if names:
            run(["podman", "rm", "-f", "-t", "2", *names], check=False)
        for network in self.networks():
            run(["podman", "network", "rm", "-f", network], check=False)


def inspect(container: str, template: str) -> str:
    return run(["podman", "inspect", "-f", template, container]).stdout.strip()


def healthy(container: str) -> bool:
    """Run the container's healthcheck now; True when it passed.

    Podman 4 schedules healthchecks with systemd timers; where there is no
    systemd (as here) they run only when asked, so the tests ask. Docker's
    engine runs them on its own.
    """
    return run(["podman", "healthcheck", "run", container], check=False, timeout=30).returncode == 0


def ip_address(container: str) -> str:
    return inspect(container, "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}").split()[0]
