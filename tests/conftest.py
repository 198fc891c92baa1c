"""Shared fixtures: real worker processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import Phase, settings

from mc.bench.certs import CertFiles, make_certs
from tests.procs import Proc, running, worker_proc

# tools/mutate.py runs with --hypothesis-profile=mutate: a failing example is
# enough to kill a mutant, so it is not shrunk (shrinking a stateful test's
# failure took 100+ s per mutant); no example database in the throwaway copy.
settings.register_profile(
    "mutate", phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target], database=None
)


@pytest.fixture(scope="module")
def worker() -> Iterator[Proc]:
    """One standalone worker per test module (heartbeat 1 s so keepalive is testable)."""
    with running(worker_proc("--heartbeat", "1", "--chat-linger", "1")) as (w,):
        yield w


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost (tests/certs.py)."""
    return make_certs(tmp_path_factory.mktemp("certs"))
