"""Where the SDK sends its credential (mc.client.trust) and which certificates it trusts."""

from __future__ import annotations

import ssl

import pytest

from mc.client.errors import McError
from mc.client.options import Options
from mc.client.transport import tls_error
from mc.client.trust import Trust, UntrustedRedirect, origin

MASTER = "http://m.example:7100"


def test_origin_folds_http_into_ws_and_fills_default_ports() -> None:
    assert origin("http://M.example:7100/v1/app?x=1") == ("ws", "m.example", 7100)
    assert origin("ws://m.example") == ("ws", "m.example", 80)
    assert origin("https://m.example/") == origin("wss://m.example:443") == ("wss", "m.example", 443)


def test_a_master_names_hosts_a_worker_does_not() -> None:
    trust = Trust.of([MASTER])
    assert trust.allows("ws://m.example:7100/v1/app")
    named = trust.redirected("ws://m.example:7100/v1/app", "ws://w1:7101/v1/app")
    assert named.allows("ws://w1:7101/v1/app")
    named.check("ws://m.example:7100/v1/app", "ws://w1:7101/v1/app")
    # the worker sends us on: that host was not named by the master
    onward = named.redirected("ws://w1:7101/v1/app", "ws://evil:9/v1/app")
    assert not onward.allows("ws://evil:9/v1/app")
    with pytest.raises(UntrustedRedirect) as refused:
        onward.check("ws://w1:7101/v1/app", "ws://evil:9/v1/app")
    assert refused.value.temporary and "ws://w1:7101 redirected to ws://evil:9" in refused.value.reason
    # back to the master is fine, and so is a worker from the master's list
    onward.check("ws://w1:7101/v1/app", "ws://m.example:7100/v1/app")
    assert Trust.of([MASTER], named=["ws://w2:7102"]).allows("ws://w2:7102/v1/consumer")


@pytest.mark.parametrize("other", [
    "wss://w1:7101/v1/app",    # another scheme (TLS or not is part of the origin)
    "ws://w1:7102/v1/app",     # another port
    "ws://w1.evil:7101/v1/app",
])
def test_same_looking_hosts_are_other_origins(other: str) -> None:
    named = Trust.of([MASTER], named=["ws://w1:7101"])
    assert not named.allows(other)


def test_certificates_are_verified_unless_a_context_is_given() -> None:
    default = Options().verify()
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    mine = ssl.create_default_context()
    assert Options(ssl_context=mine).verify() is mine


def test_tls_errors_are_named_and_a_bad_certificate_is_final() -> None:
    bad = ssl.SSLCertVerificationError(1, "certificate verify failed")
    bad.verify_message = "self-signed certificate"
    wrapped = OSError("broken")
    wrapped.__cause__ = bad
    found = tls_error(wrapped, "h:1")
    assert isinstance(found, McError) and not found.temporary
    assert "certificate of h:1 is not trusted (self-signed certificate)" in found.reason
    other = tls_error(ssl.SSLError(1, "wrong version number"), "h:1")
    assert other is not None and other.temporary
    assert tls_error(OSError("refused"), "h:1") is None
