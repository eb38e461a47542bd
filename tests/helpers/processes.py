"""Real processes for the durability tests: `cds-service serve` (gunicorn), its workers, a cuttable TCP proxy."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("cds-service"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_wsgi(wsgi_app: Any) -> Iterator[str]:
    """Run a WSGI app on 127.0.0.1 (free port, threaded werkzeug) for the duration; yields its base URL."""
    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


def wait_until_healthy(base_url: str, proc: subprocess.Popen, wait: float = 60.0, describe=lambda: "") -> None:
    """Poll ``base_url``/healthz until it answers 200: one helper for every test that starts a server. Any request
    failure counts as "not up yet" (refused while gunicorn binds, or a read timeout before a worker is ready on a
    loaded machine); a process that exits, or the deadline, fails the test with ``describe()`` (e.g. its log)."""
    deadline = time.monotonic() + wait
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited ({proc.returncode}): {describe()}")
        try:
            if requests.get(base_url + "/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"server did not come up within {wait:g} s: {describe()}")
        time.sleep(0.2)


class Served:
    """`cds-service serve` on a free port, with its own environment; stopped (SIGTERM) on exit."""

    def __init__(self, tmp: Path, database_url: str, workers: int = 2, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"serve-{self.port}.log"
        self.env = {**os.environ, "CDS_AUTH_MODE": "off", "CDS_DATABASE_URL": database_url,
                    "CDS_WORKERS": str(workers), "CDS_PORT": str(self.port), "CDS_HOST": "127.0.0.1",
                    "CDS_AUDIT_SPOOL_DIR": str(tmp / "spool"), **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 60.0) -> Served:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([CLI, "serve"], env=self.env, cwd=REPO, stdout=log, stderr=log)
        wait_until_healthy(self.url, self.proc, wait, self.log)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def workers(self) -> list[int]:
        """pids of the gunicorn workers (children of the master)."""
        assert self.proc is not None
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid:
                    out.append(int(entry.name))
        return sorted(out)

    def wait_for_workers(self, n: int, exclude: set[int] = frozenset(), wait: float = 60.0) -> list[int]:  # type: ignore[assignment]
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            pids = [p for p in self.workers() if p not in exclude]
            if len(pids) >= n:
                return pids
            time.sleep(0.2)
        raise AssertionError(f"workers did not come back: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM, wait: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        return self.proc.wait(wait)

    def __enter__(self) -> Served:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _reset(s: socket.socket) -> None:
    """Reset a proxied connection: linger 0 (an RST, not a graceful close), and shutdown() first, because
    close() alone does not wake the thread blocked in recv() on it (Linux keeps such a socket open, silently:
    its peer would wait forever for an answer, a black hole rather than an outage)."""
    with suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        s.close()


class CuttableProxy:
    """A TCP proxy to a database (or any server) that can be cut (an outage) and restored, on one port."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up = False

    def start(self) -> CuttableProxy:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener, self.up = ls, True
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        return self

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not ls:  # cut while this connection was being set up: it never opens
                    _reset(client)
                    _reset(upstream)
                    continue
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """The database goes away: no new connections, open ones reset."""
        self.up = False
        if self._listener is not None:
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            _reset(s)

    def restore(self) -> None:
        if not self.up:
            self.start()

    def stop(self) -> None:
        self.cut()
