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
import ssl

import attrs

from mc.settings import ProcessSettings, SettingsError, no_control_chars, non_negative, readable_file, setting


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
    tls_cert: str = setting("", "PEM certificate chain file: serve https/wss (with tls_key)",
                            validator=readable_file)
    tls_key: str = setting("", "PEM private key file of tls_cert (its contents are never shown)",
                           validator=readable_file)

    def __attrs_post_init__(self) -> None:
        """A TLS pair that cannot serve is a start-up error, not a failure at the first client."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("tls_cert and tls_key go together: set both or neither")
        if self.tls_cert:
            server_ssl_context(self)

    def exposure_problem(self, host: str) -> str | None:
        """Why this process must not start on ``host`` as configured, or None."""
        if self.cluster_key or self.insecure or _loopback(host):
            return None
        return (f"refusing to listen on {host} without a cluster key: set --cluster-key "
                f"(MC_CLUSTER_KEY), or pass --insecure if the network is trusted")


def server_ssl_context(settings: SecuritySettings) -> ssl.SSLContext | None:
    """The TLS context master and workers serve with, or None when TLS is off.

    TLS 1.2 or later, the ssl module's server defaults (forward-secret ciphers,
    no compression), no renegotiation. A pair that does not load is a
    SettingsError naming the files, never showing the key's contents.
    """
    if not settings.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except ssl.SSLError as exc:
        detail = f" ({exc.reason})" if exc.reason else ""
        raise SettingsError(f"tls_cert/tls_key: cannot load {settings.tls_cert!r} with {settings.tls_key!r}: "
                            f"not a PEM certificate chain and its matching private key{detail}") from None
    except OSError as exc:
        raise SettingsError(f"tls_cert/tls_key: cannot load {settings.tls_cert!r} with {settings.tls_key!r}: "
                            f"{exc.strerror or type(exc).__name__}") from None
    return ctx


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
