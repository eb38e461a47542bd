"""Bounds and answers: feedback items, header limits (real `cds-service serve`), refused calls in the audit,
what /readyz tells a stranger."""
from __future__ import annotations

import socket
import time

import pytest
import requests
from sqlalchemy import select

from cds_service.audit.schema import InvocationRow
from cds_service.services import get_services
from tests.trust.attackkit import Served, timing
from tests.trust.trustkit import BASE, ISS, bearer, jwks, write_issuers

SERVICE = "magnesium-patient-view"


def _feedback_items(n: int) -> dict:
    return {"feedback": [{"card": f"00000000-0000-0000-0000-{i:012d}", "outcome": "accepted",
                          "outcomeTimestamp": "2026-11-25T12:05:00Z"} for i in range(n)]}


# ---------------------------------------------------------------------------- feedback
def test_feedback_with_20000_items_is_refused_at_once(client):
    t0 = time.monotonic()
    resp = client.post(f"/cds-services/{SERVICE}/feedback", json=_feedback_items(20_000))
    elapsed = time.monotonic() - t0
    timing(f"feedback with 20,000 items -> {resp.status_code}", elapsed)
    assert resp.status_code == 413
    assert resp.mimetype == "application/fhir+json"
    assert "the limit is 100" in resp.get_json()["issue"][0]["diagnostics"]
    assert elapsed < 1.0  # refused before any item is stored (was 24-33 s)


def test_feedback_at_the_limit_is_stored_and_the_limit_is_a_setting(app_factory):
    client = app_factory(feedback_max_items=3).test_client()
    assert client.post(f"/cds-services/{SERVICE}/feedback", json=_feedback_items(3)).status_code == 200
    assert client.post(f"/cds-services/{SERVICE}/feedback", json=_feedback_items(4)).status_code == 413


# ---------------------------------------------------------------------------- header limits, real server
def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.processes
def test_oversized_headers_and_request_lines_get_operation_outcomes(tmp_path):
    import json

    with Served(tmp_path, CDS_AUTH_MODE="off") as served:
        port = served.port
        big_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        many_headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"
        long_line = b"GET /healthz?" + b"q" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        answers = {name: _raw(port, req) for name, req in
                   (("one huge header", big_header), ("200 headers", many_headers), ("10 kB request line", long_line))}
        assert requests.get(f"{served.base}/healthz", timeout=5).status_code == 200  # the worker is fine
    for name, (status, headers, body) in answers.items():
        print(f"\n[attack] {name} -> {status} {headers.get('content-type')}")
        assert status == (414 if "line" in name else 431), name
        assert headers["content-type"] == "application/fhir+json", name
        outcome = json.loads(body)
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "error"
        assert b"aaaa" not in body and b"qqqq" not in body  # nothing the client sent is echoed


# ---------------------------------------------------------------------------- refused calls in the audit
def test_a_refused_call_is_a_compact_audit_row(app_factory, tmp_path, es384):
    issuers = write_issuers(tmp_path / "issuers.yaml", [{"iss": ISS, "jwks": jwks(es384)}])
    app = app_factory(auth_mode="required", trusted_issuers_file=issuers)
    body = {"hook": "patient-view", "hookInstance": "attacker-chosen", "context": {"patientId": "p-secret",
            "userId": "Practitioner/x"}, "prefetch": {"pad": "x" * 100_000}}
    long_id = "s" * 5000
    client = app.test_client()
    assert client.post(f"/cds-services/{SERVICE}", json=body, headers=bearer("not-a-jwt")).status_code == 401
    assert client.post(f"/cds-services/{long_id}", json=body).status_code == 401
    store = get_services(app).store
    assert store.flush()
    with store.sessions() as s:
        rows = list(s.execute(select(InvocationRow).order_by(InvocationRow.id)).scalars())
    assert [(r.status, r.error_code) for r in rows] == [(401, "unauthorized")] * 2
    for r in rows:
        assert (r.hook, r.hook_instance, r.patient_id, r.user_id, r.fhir_server, r.client) == (None,) * 6
        assert r.error is None and r.record_snapshot is None and r.cards == [] and r.prefetch == {}
        assert len(r.service_id) <= 64
    assert rows[0].service_id == SERVICE


# ---------------------------------------------------------------------------- /readyz
def test_readyz_shows_only_the_status_to_strangers(app_factory, tmp_path, es384):
    issuers = write_issuers(tmp_path / "issuers.yaml", [{"iss": ISS, "jwks": jwks(es384)}])
    app = app_factory(auth_mode="required", trusted_issuers_file=issuers)
    store = get_services(app).store
    store._note_error("OperationalError: could not connect to server at db.internal:5432")
    client = app.test_client()
    anonymous = client.get("/readyz")
    assert anonymous.status_code == 200 and anonymous.get_json() == {"status": "ready"}
    forged = client.get("/readyz", headers=bearer("x.y.z"))
    assert forged.get_json() == {"status": "ready"}
    known = client.get("/readyz", headers=bearer(es384.token(f"{BASE}/readyz")))
    checks = known.get_json()["checks"]
    assert "db.internal" in checks["auditWriter"]["lastError"]
