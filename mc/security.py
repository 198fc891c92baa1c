"""The settings every process shares for security (PROTOCOL.md "Security"), written once.

``WorkerConfig`` and ``MasterConfig`` both inherit these fields, so a flag,
its ``MC_*`` variable and its TOML key mean the same on every process.
Secure by default where it costs nothing: on loopback everything is open so
``mc up`` works at once; on any other address a process refuses to start
without a ``cluster_key`` unless ``insecure`` says the operator means it.
"""

from __future__ import annotations

import hmac
import ipaddress

import attrs

from mc.settings import ProcessSettings, no_control_chars, non_negative, readable_file, setting


@attrs.frozen(slots=True)
class SecuritySettings(ProcessSettings):
    jwt_secret: str = setting("", "HS256 secret: apps must present a JWT signed with it", secret=True)
    jwt_public_key: str = setting("", "PEM file (RS256/ES256): apps must present a JWT it verifies",
                                  validator=readable_file)
    api_keys: tuple[str, ...] = setting((), "keys consumers and the HTTP API require (Bearer KEY)",
                                        secret=True)
    cluster_key: str = setting("", "shared key of the control link (workers <-> master)", secret=True)
    handshake_rate: float = setting(0.0, "handshakes per remote IP per second, burst 2x (0: off); 429",
                                    validator=non_negative)
    insecure: bool = setting(False, "allow a non-loopback address without a cluster key")
    allowed_origins: tuple[str, ...] = setting(
        (), "origins whose pages may use the API and connect (a list; * = any); set: another Origin is 403",
        validator=no_control_chars)

    def exposure_problem(self, host: str) -> str | None:
        """Why this process must not start on ``host`` as configured, or None."""
        if self.cluster_key or self.insecure or _loopback(host):
            return None
        return (f"refusing to listen on {host} without a cluster key: set --cluster-key "
                f"(MC_CLUSTER_KEY), or pass --insecure if the network is trusted")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer(header: str | None) -> str | None:
    """The key in ``Authorization: Bearer KEY``, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def key_matches(given: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time membership: no timing hint of how much of a key matched."""
    if given is None:
        return False
    raw = given.encode()
    return any(hmac.compare_digest(raw, k.encode()) for k in keys)
