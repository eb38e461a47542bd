"""Slow clients cannot stall `cds-service serve` (issue 12, item 3): 40 connections that trickle their headers
or their body hold no worker thread; a valid call still answers within 2 s, and each slow connection gets a
408 OperationOutcome once its header or body deadline has passed."""
from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.audit.helpers import patient_view_body
from tests.helpers.processes import Served

pytestmark = pytest.mark.processes  # cds-service serve under gunicorn

SLOW = 40
PATH = "/cds-services/magnesium-patient-view"


def _valid_body() -> bytes:
    return json.dumps(patient_view_body("slow-clients-valid", mg=1.1)).encode()


def _open_slow(port: int, kind: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    if kind == "body":  # complete headers, then 1 byte of a declared 100 KB body
        s.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{".encode())
    else:  # half a request line and nothing more
        s.sendall(f"POST {PATH} HT".encode())
    return s


def _read_all(s: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def test_forty_slow_connections_do_not_stall_a_valid_call(tmp_path):
    env = {"CDS_REQUEST_HEADER_TIMEOUT_SECONDS": "3", "CDS_REQUEST_BODY_TIMEOUT_SECONDS": "3"}
    with Served(tmp_path, f"sqlite:///{tmp_path}/audit.sqlite3", workers=2, **env) as served:
        slow = [_open_slow(served.port, "body" if i % 2 else "headers") for i in range(SLOW)]
        time.sleep(0.5)  # every slow connection is accepted and waiting
        t0 = time.monotonic()
        resp = requests.post(served.url + PATH, data=_valid_body(), headers={"Content-Type": "application/json"}, timeout=30)
        elapsed = time.monotonic() - t0
        assert resp.status_code == 200 and resp.json()["cards"]
        assert elapsed < 2.0, f"a valid call waited {elapsed:.1f} s behind {SLOW} slow connections"
        answers = [_read_all(s) for s in slow]  # the deadlines close them
        for s in slow:
            s.close()
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:3]
        outcome = json.loads(answers[0].split(b"\r\n\r\n", 1)[1])
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "timeout"
        assert requests.get(served.url + "/healthz", timeout=5).status_code == 200
