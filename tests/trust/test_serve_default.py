"""`cds-service serve` (gunicorn) requires client authentication unless CDS_AUTH_MODE says otherwise."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers.processes import wait_until_healthy
from tests.trust.trustkit import ISS, Signer, bearer, jwks, write_issuers

pytestmark = pytest.mark.processes  # cds-service serve under gunicorn

CLI = str(Path(sys.executable).with_name("cds-service"))


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update({"CDS_DATABASE_URL": f"sqlite:///{tmp_path}/serve.sqlite3", "CDS_WORKERS": "1", **extra})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_without_issuers_refuses_to_start(tmp_path):
    proc = subprocess.run([CLI, "serve", "--port", str(_free_port())], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "CDS_AUTH_MODE=required needs CDS_TRUSTED_ISSUERS_FILE" in proc.stderr


def test_serve_defaults_to_required(tmp_path):
    signer = Signer("ES384", kid="serve")
    issuers = write_issuers(tmp_path / "issuers.yaml", [{"iss": ISS, "jwks": jwks(signer)}])
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([CLI, "serve", "--port", str(port)], env=_env(tmp_path, CDS_TRUSTED_ISSUERS_FILE=issuers),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_healthy(base, proc, 60)
        anonymous = requests.get(f"{base}/cds-services", timeout=5)
        assert anonymous.status_code == 401 and "Bearer" in anonymous.headers["WWW-Authenticate"]
        signed = requests.get(f"{base}/cds-services", headers=bearer(signer.token(f"{base}/cds-services")), timeout=5)
        assert signed.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
