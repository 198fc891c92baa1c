"""TLS for the load generators' raw non-blocking sockets (``mc bench ... --tls``).

The generators drive plain sockets from one level-triggered epoll and treat
``BlockingIOError`` as "not now". Over TLS the stdlib raises
``SSLWantReadError``/``SSLWantWriteError`` instead, so :class:`BenchSSLSocket`
translates them; everything else is the stdlib's ``SSLSocket`` (one record per
``recv``, the rest stays in the kernel where epoll sees it; a ``send`` that
would block is retried with the same bytes, as ``send_all`` does).
"""

from __future__ import annotations

import select
import socket
import ssl
from typing import Any


class BenchSSLSocket(ssl.SSLSocket):
    """An SSLSocket whose non-blocking calls say "not now" as a plain socket does."""

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        try:
            return super().recv_into(buffer, nbytes, flags)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None


def client_context(cafile: str) -> ssl.SSLContext:
    """Verify the server against ``cafile`` (the bench's throwaway CA), as a real client would."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.sslsocket_class = BenchSSLSocket
    return ctx


def wrap(sock: socket.socket, ctx: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    """``sock`` (connected, non-blocking) as a TLS socket whose handshake ``step`` drives."""
    return ctx.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)


def step(sock: ssl.SSLSocket) -> int:
    """One handshake step: 0 when done, else the epoll event to wait for."""
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return select.EPOLLIN
    except ssl.SSLWantWriteError:
        return select.EPOLLOUT
    return 0
