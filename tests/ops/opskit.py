"""Run `cds-service serve` as a real process for the operations tests: its stderr in a file, its ready line awaited."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

CLI = str(Path(sys.executable).with_name("cds-service"))
REPO = Path(__file__).resolve().parents[2]
REQUESTS = REPO / "fixtures" / "requests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment without any CDS_* of the caller, a private SQLite store, HOME in tmp (gunicorn's control socket)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS_"))}
    env.update({"CDS_DATABASE_URL": f"sqlite:///{tmp}/audit.sqlite3", "CDS_WORKERS": "2", "HOME": str(tmp), **extra})
    return env


class Served:
    """``cds-service serve`` on a free port until ``stop()``; ``log()`` is everything it wrote."""

    def __init__(self, tmp: Path, env: dict[str, str], port: int | None = None, ready_within: float = 60.0):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"serve-{self.port}.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([CLI, "serve", "--port", str(self.port)], env=env, cwd=tmp,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_within
        while "ready: " not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"no ready line within {ready_within} s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, body: bytes, **headers: str) -> requests.Response:
        return requests.post(self.url + path, data=body, headers={"Content-Type": "application/json", **headers},
                             timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def run_serve(tmp: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "serve", *args], env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout)


def request_file(name: str) -> bytes:
    return (REQUESTS / name).read_bytes()
