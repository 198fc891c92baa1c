"""A TLS-terminating proxy in front of a real mc process, for the SDK's TLS tests.

The SDK's side of TLS (verification, a private CA through ``ssl_context=``)
needs a server that speaks TLS with a certificate the test made; a proxy
that unwraps TLS and pipes the bytes to a plain mc worker gives exactly that
while the servers' own TLS is built elsewhere. Every connection lives in the
caller's nursery and ends with it.
"""

from __future__ import annotations

import ssl
from functools import partial

import trio

from tests.procs import free_port

#: bytes read at once per direction
CHUNK = 65536


async def _pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
    try:
        while data := await source.receive_some(CHUNK):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
        pass


async def _relay(context: ssl.SSLContext, backend: int, client: trio.SocketStream) -> None:
    tls = trio.SSLStream(client, context, server_side=True)
    try:
        await tls.do_handshake()
    except (trio.BrokenResourceError, ssl.SSLError):  # e.g. a client that does not trust the CA
        await client.aclose()
        return
    plain = await trio.open_tcp_stream("127.0.0.1", backend)
    async with tls, plain, trio.open_nursery() as nursery:
        nursery.start_soon(_pipe, tls, plain)
        await _pipe(plain, tls)
        nursery.cancel_scope.cancel()


async def tls_proxy(context: ssl.SSLContext, backend: int, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve TLS on a free loopback port (``started`` with it), piping to ``backend``."""
    port = free_port()
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started(port)
    await trio.serve_listeners(partial(_relay, context, backend), listeners)
