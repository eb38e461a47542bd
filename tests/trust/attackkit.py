"""Real parts for the attack suite: a scripted HTTP server (JWKS faults, canaries), the Flask app over real
HTTP in a thread, and `cds-service serve` as a real process (with its worker's memory and CPU readable)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.helpers.processes import free_port as closed_port  # noqa: F401 (a port nothing listens on)
from tests.helpers.processes import serve_wsgi as live  # noqa: F401

CLI = str(Path(sys.executable).with_name("cds-service"))


def timing(label: str, seconds: float) -> None:
    """Printed (``pytest -s``) so that the closing note can report the measured times."""
    print(f"\n[attack] {label}: {seconds * 1000:.0f} ms")


# ---------------------------------------------------------------------------- a scripted HTTP server
Behaviour = Callable[[BaseHTTPRequestHandler], None]


class ScriptedServer:
    """HTTP/1.0 server on 127.0.0.1: each path answers with a behaviour (a function writing raw bytes);
    records every hit (path, time.monotonic(), headers). ``release`` ends every hanging behaviour."""

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.hits: list[tuple[str, float, dict[str, str]]] = []
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.hits.append((self.path, time.monotonic(), {k.lower(): v for k, v in self.headers.items()}))
                behaviour = owner.behaviours.get(self.path.split("?")[0])
                try:
                    if behaviour is None:
                        send(self, 404, b"{}")
                    else:
                        behaviour(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.hits if p.split("?")[0] == path)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def send(h: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json") -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def truncated(body: bytes) -> Behaviour:
    """Declares the whole length, sends half, closes the connection."""
    def behaviour(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        h.close_connection = True
    return behaviour


def trickle(body: bytes, every: float, for_at_most: float) -> Behaviour:
    """Sends one byte every ``every`` seconds (for at most ``for_at_most`` seconds, then closes)."""
    def behaviour(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        until = time.monotonic() + for_at_most
        for i in range(len(body)):
            if time.monotonic() > until:
                break
            h.wfile.write(body[i:i + 1])
            h.wfile.flush()
            time.sleep(every)
        h.close_connection = True
    return behaviour


def hang(server: ScriptedServer, at_most: float = 30.0) -> Behaviour:
    """Reads the request, then never answers (until the server is closed)."""
    def behaviour(h: BaseHTTPRequestHandler) -> None:
        server.release.wait(at_most)
        h.close_connection = True
    return behaviour


def ok(body: bytes) -> Behaviour:
    return lambda h: send(h, 200, body)


def unframed(body: bytes, content_type: str = "application/fhir+json") -> Behaviour:
    """No Content-Length: the body ends when the connection closes (HTTP/1.0), so its size is not known upfront."""
    def behaviour(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.end_headers()
        h.wfile.write(body)
        h.close_connection = True
    return behaviour


def stall_then_watch(after: float, closed_at: list[float]) -> Behaviour:
    """Headers and a few bytes after ``after`` seconds, then nothing; records when the client closes."""
    def behaviour(h: BaseHTTPRequestHandler) -> None:
        time.sleep(after)
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+json")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        h.wfile.write(b'{"resourceType": "Bundle", ')
        h.wfile.flush()
        h.connection.settimeout(0.05)
        until = time.monotonic() + 10
        while time.monotonic() < until:
            try:
                if h.connection.recv(1) == b"":
                    closed_at.append(time.monotonic())
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_at.append(time.monotonic())
                break
        h.close_connection = True
    return behaviour


# ---------------------------------------------------------------------------- TCP canary
class Canary:
    """A TCP port that only records who connected (and never answers)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            self._conns.append(conn)
            conn.close()  # an open port that hangs up at once

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


# ---------------------------------------------------------------------------- the app over real HTTP
# ---------------------------------------------------------------------------- `cds-service serve`
class Served:
    """`cds-service serve` with one worker, as a real process group."""

    def __init__(self, tmp_path: Path, **env: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
        full.update({"CDS_DATABASE_URL": f"sqlite:///{tmp_path}/served-{self.port}.sqlite3", "CDS_WORKERS": "1",
                     "CDS_PORT": str(self.port), "CDS_LOG_LEVEL": "WARNING", **env})
        with open(tmp_path / f"served-{self.port}.log", "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([CLI, "serve"], env=full, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"cds-service serve did not come up: {(tmp_path / f'served-{self.port}.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def worker_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def memory_kib(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (resident peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
