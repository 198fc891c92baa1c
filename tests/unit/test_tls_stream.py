"""mc.worker.tls against real stdlib ``ssl`` clients over loopback TCP.

The server side is the worker's: a non-blocking socket, ``handshake`` under
trio, then ``TLSStream.recv``/``send`` as the reader and the flusher call
them. The clients are ``ssl`` objects driven by hand (memory BIOs over a
blocking socket) so a test controls exactly which bytes arrive when.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator

import pytest
import trio

from mc.bench.certs import CertFiles
from mc.security import server_ssl_context
from mc.worker.config import WorkerConfig
from mc.worker.tls import SEND_CHUNK, TLSStream, handshake


@pytest.fixture
def server_ctx(certs: CertFiles) -> ssl.SSLContext:
    ctx = server_ssl_context(WorkerConfig(tls_cert=str(certs.cert), tls_key=str(certs.key)))
    assert ctx is not None
    return ctx


@pytest.fixture
def tcp() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server side non-blocking, client side blocking with a 5 s timeout), connected over 127.0.0.1."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=5)
    server, _ = listener.accept()
    listener.close()
    server.setblocking(False)
    yield server, client
    server.close()
    client.close()


class Client:
    """A real ssl client over a blocking socket, fed and drained by hand."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def step(self) -> bool:
        """One handshake step: True when done."""
        try:
            self.obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        self.sock.sendall(self.outgoing.read())
        return done

    def encrypt(self, data: bytes) -> bytes:
        self.obj.write(data)
        return self.outgoing.read()

    def read_plain(self, size: int, timeout: float = 5.0) -> bytes:
        """Exactly ``size`` plaintext bytes from the server."""
        got = bytearray()
        deadline = time.monotonic() + timeout
        while len(got) < size:
            try:
                chunk = self.obj.read(size - len(got))
            except ssl.SSLWantReadError:
                chunk = None
            if chunk == b"":
                raise EOFError("close_notify")
            if chunk:
                got += chunk
                continue
            assert time.monotonic() < deadline, f"got {len(got)} of {size} bytes"
            data = self.sock.recv(65536)
            assert data, "server closed"
            self.incoming.write(data)
        return bytes(got)


async def connect(tcp: tuple[socket.socket, socket.socket], server_ctx: ssl.SSLContext,
                  certs: CertFiles) -> tuple[TLSStream, Client]:
    server, raw = tcp
    client = Client(raw, certs.client_context())
    result: list[TLSStream | None] = []

    async def serve() -> None:
        result.append(await handshake(server, server_ctx, 5.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)

        def client_side() -> None:
            while not client.step():
                client.incoming.write(raw.recv(65536))

        await trio.to_thread.run_sync(client_side)
    stream = result[0]
    assert stream is not None
    return stream, client


async def recv_until(stream: TLSStream, size: int) -> bytes:
    got = b""
    with trio.fail_after(5):
        while len(got) < size:
            await trio.lowlevel.wait_readable(stream)
            try:
                data = stream.recv(65536)
            except BlockingIOError:
                continue
            assert data, "EOF"
            got += data
    return got


async def test_echo_both_ways(tcp, server_ctx, certs) -> None:
    stream, client = await connect(tcp, server_ctx, certs)
    client.sock.sendall(client.encrypt(b"hello"))
    assert await recv_until(stream, 5) == b"hello"
    assert stream.send(b"world") == 5
    assert not stream.backlog
    assert client.read_plain(5) == b"world"
    assert stream.getpeername() == client.sock.getsockname()
    assert stream.send(b"") == 0  # the flusher's drain calls it with an empty queue and a backlog


async def test_partial_record_is_not_plaintext_yet(tcp, server_ctx, certs) -> None:
    stream, client = await connect(tcp, server_ctx, certs)
    cipher = client.encrypt(b"x" * 1000)
    client.sock.sendall(cipher[:-1])
    await trio.sleep(0.05)
    with pytest.raises(BlockingIOError):
        stream.recv(65536)
    client.sock.sendall(cipher[-1:])
    assert await recv_until(stream, 1000) == b"x" * 1000


async def test_recv_returns_every_record_read(tcp, server_ctx, certs) -> None:
    """Several records in one kernel read come out in one recv: nothing is left
    inside the SSL object where wait_readable would not see it."""
    stream, client = await connect(tcp, server_ctx, certs)
    payload = os.urandom(50_000)  # 4 records
    cipher = client.encrypt(payload)
    client.sock.sendall(cipher)
    await trio.sleep(0.1)
    await trio.lowlevel.wait_readable(stream)
    assert stream.recv(len(cipher) + 1000) == payload


async def test_large_write_against_a_full_kernel_buffer(tcp, server_ctx, certs) -> None:
    """The client reads nothing: send takes what the kernel holds, keeps the
    rest of one chunk as backlog, then refuses new data until it drains."""
    stream, client = await connect(tcp, server_ctx, certs)
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    payload = os.urandom(4 << 20)
    taken = stream.send(payload)
    assert 0 < taken < len(payload)
    assert stream.backlog
    blocked = False
    for _ in range(1000):  # the kernel may still take a little between calls
        try:
            taken += stream.send(memoryview(payload)[taken:])
        except BlockingIOError:
            blocked = True
            break
    assert blocked and taken < len(payload)
    assert 0 < len(stream.backlog) < SEND_CHUNK + 4096

    got: list[bytes] = []

    def reader() -> None:
        got.append(client.read_plain(len(payload), timeout=20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, reader)
        with trio.fail_after(20):
            while taken < len(payload) or stream.backlog:
                await trio.lowlevel.wait_writable(stream)
                if taken < len(payload):
                    try:
                        taken += stream.send(memoryview(payload)[taken:])
                    except BlockingIOError:
                        pass
                else:
                    stream.flush_backlog()
    assert got[0] == payload


async def test_close_notify_is_eof(tcp, server_ctx, certs) -> None:
    stream, client = await connect(tcp, server_ctx, certs)
    client.sock.sendall(client.encrypt(b"last"))
    try:
        client.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    client.sock.sendall(client.outgoing.read())
    got = await recv_until(stream, 4)
    assert got == b"last"
    await trio.lowlevel.wait_readable(stream)
    assert stream.recv(65536) == b""
    assert stream.recv(65536) == b""  # and stays so


async def test_data_and_close_notify_in_one_read(tcp, server_ctx, certs) -> None:
    stream, client = await connect(tcp, server_ctx, certs)
    cipher = client.encrypt(b"bye")
    try:
        client.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    client.sock.sendall(cipher + client.outgoing.read())
    await trio.sleep(0.05)
    assert stream.recv(65536) == b"bye"
    assert stream.recv(65536) == b""


async def test_tcp_close_without_close_notify_is_eof(tcp, server_ctx, certs) -> None:
    stream, client = await connect(tcp, server_ctx, certs)
    client.sock.shutdown(socket.SHUT_WR)  # a FIN (close() would reset: the session tickets are unread)
    await trio.lowlevel.wait_readable(stream)
    assert stream.recv(65536) == b""


async def test_garbage_after_the_handshake_is_an_oserror(tcp, server_ctx, certs) -> None:
    stream, client = await connect(tcp, server_ctx, certs)
    client.sock.sendall(b"\x17\x03\x03\x00\x10" + b"\x00" * 16)  # an application record that does not decrypt
    await trio.lowlevel.wait_readable(stream)
    with pytest.raises(OSError):
        stream.recv(65536)


async def test_close_sends_close_notify(tcp, server_ctx, certs) -> None:
    stream, client = await connect(tcp, server_ctx, certs)
    stream.close()
    assert stream.fileno() == -1
    with pytest.raises(EOFError):
        client.read_plain(1)


async def test_plain_http_fails_the_handshake_quickly(tcp, server_ctx, caplog) -> None:
    """Plain HTTP to the TLS port: a readable 400, one log line, no traceback."""
    caplog.set_level(logging.INFO, "mc.worker.tls")
    server, raw = tcp
    raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(2):
        assert await handshake(server, server_ctx, 5.0) is None
    answer = raw.recv(1000)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.endswith(b"use https:// or wss://")
    assert int(answer.split(b"Content-Length: ")[1].split(b"\r")[0]) == len(answer.split(b"\r\n\r\n")[1])
    assert [r.message for r in caplog.records if "TLS handshake" in r.message] == [
        "TLS handshake with 127.0.0.1 failed: HTTP_REQUEST"]
    assert not any(r.exc_info for r in caplog.records)


async def test_garbage_fails_the_handshake(tcp, server_ctx) -> None:
    server, raw = tcp
    raw.sendall(os.urandom(300))
    with trio.fail_after(2):
        assert await handshake(server, server_ctx, 5.0) is None


async def test_silent_client_times_out(tcp, server_ctx, caplog) -> None:
    caplog.set_level(logging.INFO, "mc.worker.tls")
    server, _ = tcp
    start = trio.current_time()
    assert await handshake(server, server_ctx, 0.3) is None
    assert 0.3 <= trio.current_time() - start < 1.5
    assert any("timed out" in r.message for r in caplog.records)


async def test_client_that_does_not_trust_the_certificate(tcp, server_ctx) -> None:
    server, raw = tcp
    client = Client(raw, ssl.create_default_context())  # the system CAs only

    def client_side() -> None:
        with pytest.raises(ssl.SSLCertVerificationError):
            while not client.step():
                client.incoming.write(raw.recv(65536))
        client.sock.sendall(client.outgoing.read())  # its alert

    async with trio.open_nursery() as nursery:
        result: list[TLSStream | None] = []

        async def serve() -> None:
            result.append(await handshake(server, server_ctx, 5.0))

        nursery.start_soon(serve)
        await trio.to_thread.run_sync(client_side)
    assert result == [None]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_tls_1_1_is_refused(tcp, server_ctx) -> None:
    server, raw = tcp
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    client = Client(raw, ctx)
    result: list[TLSStream | None] = []

    async def serve() -> None:
        result.append(await handshake(server, server_ctx, 5.0))

    def client_side() -> None:
        with pytest.raises(ssl.SSLError):
            while not client.step():
                data = raw.recv(65536)
                if not data:
                    raise ssl.SSLError("closed")
                client.incoming.write(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.to_thread.run_sync(client_side)
    assert result == [None]


async def fill(stream: TLSStream) -> None:
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    with pytest.raises(BlockingIOError):
        for _ in range(1000):
            stream.send(os.urandom(1 << 20))
    assert stream.backlog


async def test_a_closed_stream_has_no_backlog(tcp, server_ctx, certs) -> None:
    """A writer waits while ``backlog`` is set: a dead socket must not keep it waiting."""
    stream, _ = await connect(tcp, server_ctx, certs)
    await fill(stream)
    stream.close()
    assert stream.backlog == b"" and stream.fileno() == -1


async def test_a_reset_drops_the_backlog(tcp, server_ctx, certs) -> None:
    stream, client = await connect(tcp, server_ctx, certs)
    await fill(stream)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()  # a reset
    with pytest.raises(OSError):
        for _ in range(100):
            await trio.sleep(0.01)
            stream.flush_backlog()
    assert stream.backlog == b""
