"""TLS over the worker's own non-blocking socket loop (stdlib ``ssl`` memory BIOs).

The worker reads and writes raw sockets itself (``wait_readable``, ``recv``,
``send``; mc/worker/server.py and flusher.py), so TLS cannot be a trio stream
there. :class:`TLSStream` is instead a stand-in for the socket: the same calls
the shell makes (``fileno``, ``recv``, ``send``, ``close``, ``getpeername``,
``setsockopt``), with the encryption done through ``SSLContext.wrap_bio``.
Two rules keep it correct under a poller that watches only the kernel socket:

* ``recv`` returns *all* the plaintext the ciphertext read so far decrypts
  to (it reads the SSL object until it wants more), so nothing waits inside
  the SSL object that ``wait_readable`` would not announce; the one
  exception is ``early``: plaintext that arrived with the client's last
  handshake message, which the caller must ``recv`` before it first waits;
* ``send`` reports the plaintext it took; ciphertext the kernel would not
  take waits in ``backlog`` (at most one ``SEND_CHUNK`` of plaintext's worth,
  plus record overhead), written first by the next ``send`` or by
  ``flush_backlog``. A writer that sees ``backlog`` keeps waiting for
  writability as if frames were queued.

Plain connections never see this module: the server wraps a socket only
when TLS is configured, so TLS-off costs nothing per connection.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

import trio

log = logging.getLogger("mc.worker.tls")

#: ciphertext read from the kernel per recv
RECV_SIZE = 65536
#: plaintext encrypted per step of ``send``; bounds ``backlog`` (~SEND_CHUNK + record overhead)
SEND_CHUNK = 65536
_PLAIN_HTTP_BODY = b"this port speaks TLS: use https:// or wss://"
PLAIN_HTTP_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (len(_PLAIN_HTTP_BODY), _PLAIN_HTTP_BODY))


class TLSStream:
    """One TLS connection as a non-blocking socket look-alike (see the module docstring)."""

    __slots__ = ("sock", "_ssl", "_in", "_out", "backlog", "early", "_eof")

    def __init__(self, sock: socket.socket, obj: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self.sock = sock
        self._ssl = obj
        self._in = incoming
        self._out = outgoing
        #: ciphertext encrypted but not yet taken by the kernel (b"": none)
        self.backlog = b""
        #: plaintext that came with the end of the handshake (a client may send its
        #: request with its Finished): the first recv returns it without reading
        self.early = b""
        self._eof = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def getpeername(self) -> Any:
        return self.sock.getpeername()

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)

    def recv(self, size: int = RECV_SIZE) -> bytes:
        """All plaintext available now; BlockingIOError if none yet; b"" at EOF or close_notify.

        ``size`` bounds the ciphertext read from the kernel, not the plaintext
        returned. A TLS protocol error (garbage, a bad record) raises
        ``ssl.SSLError``, an OSError, as a reset socket would.
        """
        if self.early:
            early, self.early = self.early, b""
            return early
        if self._eof:
            return b""
        data = self.sock.recv(size)  # BlockingIOError / OSError: as the socket says
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        plain = self._decrypt()
        if self._out.pending:  # e.g. a TLS 1.3 key update answer
            self._queue(self._out.read())
            self.flush_backlog()
        if plain:
            return plain
        if self._eof or not data:
            self._eof = True
            return b""
        raise BlockingIOError

    def _decrypt(self) -> bytes:
        """Every byte of plaintext the ciphertext fed so far holds (sets ``_eof`` at the end)."""
        chunks = []
        while True:
            try:
                chunk = self._ssl.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof = True
                break
            if not chunk:
                self._eof = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes | memoryview) -> int:
        """Encrypt and write; the count of plaintext bytes taken (the rest is the caller's).

        The backlog goes first: while it cannot be written nothing new is
        taken (BlockingIOError). Then plaintext is encrypted a chunk at a time
        until the kernel stops taking ciphertext; what it did not take of the
        last chunk stays in ``backlog``.
        """
        if self.backlog and not self.flush_backlog():
            raise BlockingIOError
        if not data:  # a writer draining only the backlog
            return 0
        if len(data) <= SEND_CHUNK:  # the usual case (a fan-out batch): one write, one send
            self._ssl.write(data)
            ciphertext = self._out.read()
            try:
                sent = self.sock.send(ciphertext)
            except BlockingIOError:
                sent = 0
            if sent < len(ciphertext):
                self.backlog = ciphertext[sent:]
            return len(data)
        view = memoryview(data)
        taken = 0
        while taken < len(view) and not self.backlog:
            chunk = view[taken:taken + SEND_CHUNK]
            self._ssl.write(chunk)  # a memory BIO takes everything
            taken += len(chunk)
            self._queue(self._out.read())
            self.flush_backlog()
        return taken

    def flush_backlog(self) -> bool:
        """Write what the backlog holds; True once it is empty.

        OSError as the socket says; the backlog is dropped then (a dead socket
        has no pending output, so no writer waits on it).
        """
        backlog = self.backlog
        if not backlog:
            return True
        try:
            sent = self.sock.send(backlog)
        except BlockingIOError:
            return False
        except OSError:
            self.backlog = b""
            raise
        self.backlog = backlog[sent:]
        return not self.backlog

    def _queue(self, ciphertext: bytes) -> None:
        self.backlog = self.backlog + ciphertext if self.backlog else ciphertext

    def close(self) -> None:
        """Say close_notify if the kernel takes it at once, then close the socket."""
        if self.sock.fileno() != -1:
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                pass
            try:
                self._queue(self._out.read())
                self.flush_backlog()
            except OSError:
                pass
        self.backlog = b""  # nothing is pending on a closed socket
        self.sock.close()


async def handshake(sock: socket.socket, ctx: ssl.SSLContext, timeout: float) -> TLSStream | None:
    """The server side of the TLS handshake on ``sock``, within ``timeout`` seconds.

    None if the client fails it (not TLS, e.g. plain HTTP; an untrusted or
    mismatched certificate on its side; a timeout; a close): one log line,
    no traceback; the caller closes the socket.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=True)
    stream = TLSStream(sock, obj, incoming, outgoing)
    problem = "timed out"
    with trio.move_on_after(timeout):
        try:
            while True:
                try:
                    obj.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                if outgoing.pending:
                    stream._queue(outgoing.read())
                while not stream.flush_backlog():
                    await trio.lowlevel.wait_writable(sock)
                if done:
                    stream.early = stream._decrypt()
                    return stream
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    problem = "closed by the client"
                    break
                incoming.write(data)
        except ssl.SSLError as exc:
            problem = exc.reason or type(exc).__name__
            # plain HTTP gets a plain answer it can show; a TLS client gets the alert
            answer = PLAIN_HTTP_ANSWER if problem == "HTTP_REQUEST" else outgoing.read()
            try:
                sock.send(answer)
            except OSError:
                pass
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
    log.info("TLS handshake with %s failed: %s", _peer(sock), problem)
    return None


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "?"
