"""How `cds-service serve` runs under gunicorn: worker model, threads, and bounds on slow clients.

The default worker (``buffered``) is gunicorn's threaded worker with two changes, chosen by measurement
(README "Serving", bench/REPORT.md "Peer comparison"):

- **A request is read whole before a thread takes it.** The worker's event loop reads each connection
  without blocking until its headers and its whole body (``Content-Length``, or a chunked body's last
  chunk) are in memory, then hands it to a thread. A slow or stalled client costs a buffer, never a
  thread; the headers must arrive within ``request_header_timeout_seconds`` and the body within
  ``request_body_timeout_seconds`` after them, else 408 and the connection is closed.
- **Only a worker with an idle thread accepts.** Connections are taken by whichever worker can run
  them now (as gunicorn's sync workers do), so load spreads across workers instead of piling onto the
  one that accepted first. A kept-alive connection waits in the event loop between calls (no thread)
  and its next request is buffered the same way.
"""
from __future__ import annotations

import errno
import re
import selectors
import socket
import time
from contextlib import suppress
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from .media import FHIR_JSON

HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)[ \t]*(?=\r\n)", re.IGNORECASE)
CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked", re.IGNORECASE)
MAX_HEADER_BYTES = 64 * 1024  # more than this without the end of the headers: let gunicorn answer (431/400)
RECV_BYTES = 256 * 1024
TIMEOUT_RESPONSE = (f"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: {FHIR_JSON}\r\n"
                    "Content-Length: 150\r\n\r\n").encode("latin-1")
_TIMEOUT_BODY = (b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"timeout",'
                 b'"diagnostics":"the request did not arrive in time"}]}')
TIMEOUT_RESPONSE = TIMEOUT_RESPONSE.replace(b"150", str(len(_TIMEOUT_BODY)).encode()) + _TIMEOUT_BODY

# set by gunicorn_options() in the master before the workers fork
HEADER_TIMEOUT = 5.0
BODY_TIMEOUT = 10.0
MAX_BODY = 5 * 1024 * 1024


def request_complete(buf: bytes | bytearray) -> tuple[bool, bool]:
    """(complete, headers done) for the bytes received so far of one HTTP/1.x request."""
    end = buf.find(HEADER_END)
    if end < 0:
        return len(buf) > MAX_HEADER_BYTES, False
    head = b"\r\n" + bytes(buf[:end + 2])
    m = CONTENT_LENGTH.search(head)
    if CHUNKED.search(head):
        return buf.endswith(b"0\r\n\r\n") or len(buf) - end > MAX_BODY + 1024 * 1024, True
    if m is None:
        return True, True
    length = int(m.group(1))
    if length > MAX_BODY:  # the app answers 413 without reading it
        return True, True
    return len(buf) >= end + 4 + length, True


class BufferedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker that buffers each request in the event loop (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.buffering: dict[Any, TConn] = {}
        self.active = 0  # requests handed to threads and not finished

    def run(self) -> None:
        self._last_sweep = time.monotonic()
        super().run()

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and self.active < self.cfg.threads)

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        self._start_buffering(conn)

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_buffering(conn)

    def _start_buffering(self, conn: TConn) -> None:
        conn.sock.setblocking(False)
        conn.cds_buf = bytearray()
        conn.cds_deadline = time.monotonic() + HEADER_TIMEOUT
        conn.cds_headers_done = False
        self.buffering[conn.sock] = conn
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_buffer_readable, conn))

    def _on_buffer_readable(self, conn: TConn, client: Any) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # closed by the client before a whole request came
            self._drop(conn)
            return
        conn.cds_buf += data
        complete, headers_done = request_complete(conn.cds_buf)
        if headers_done and not conn.cds_headers_done:
            conn.cds_headers_done = True
            conn.cds_deadline = time.monotonic() + BODY_TIMEOUT
        if complete:
            self.poller.unregister(conn.sock)
            del self.buffering[conn.sock]
            conn.data_ready = True
            self.enqueue_req(conn)

    def _drop(self, conn: TConn, answer: bytes = b"") -> None:
        with suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        self.buffering.pop(conn.sock, None)
        if answer:
            with suppress(OSError):
                conn.sock.send(answer)
        self.nr_conns -= 1
        conn.close()

    def enqueue_req(self, conn: TConn) -> None:
        self.active += 1
        if self.active >= self.cfg.threads:
            self.set_accept_enabled(False)
        super().enqueue_req(conn)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        self.active -= 1
        super().finish_request(conn, fs)

    def handle(self, conn: TConn) -> Any:
        buf = getattr(conn, "cds_buf", None)
        if buf:
            conn.cds_buf = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(bytes(buf))
        return super().handle(conn)

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        now = time.monotonic()
        for conn in [c for c in self.buffering.values() if force or c.cds_deadline <= now]:
            self._drop(conn, b"" if force else TIMEOUT_RESPONSE)


def gunicorn_options(settings: Any) -> dict[str, Any]:
    """gunicorn settings for `cds-service serve` (and the benchmark's bare endpoint, so both run alike)."""
    global HEADER_TIMEOUT, BODY_TIMEOUT, MAX_BODY
    HEADER_TIMEOUT = settings.request_header_timeout_seconds
    BODY_TIMEOUT = settings.request_body_timeout_seconds
    MAX_BODY = settings.max_body_bytes
    opts: dict[str, Any] = {"workers": settings.workers, "timeout": 30, "graceful_timeout": 10}
    if settings.worker_class == "buffered":
        opts.update(worker_class="cds_service.workers.BufferedThreadWorker", threads=settings.worker_threads,
                    keepalive=settings.worker_keepalive_seconds)
    elif settings.worker_class == "gthread":
        opts.update(worker_class="gthread", threads=settings.worker_threads, keepalive=settings.worker_keepalive_seconds or 2)
    else:  # sync: one request at a time per worker; no keep-alive; needs a buffering proxy against slow clients
        opts.update(worker_class="sync")
    return opts
