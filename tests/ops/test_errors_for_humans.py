"""Errors a person can act on, through a real `cds-service serve` and the real CLI: a 404 lists the service ids,
a trailing slash is accepted, a 422 names the draft orders, the audit CLI names its database and does not create
one by accident, audit pages are found by hookInstance, purge says how many rows first."""
from __future__ import annotations

import json
import subprocess
import time

import pytest
import requests

from tests.ops.opskit import CLI, Served, request_file, serve_env

pytestmark = pytest.mark.processes  # cds-service serve and the CLI as processes

SERVICES = "magnesium-order-select, magnesium-order-sign, magnesium-patient-view"
PV = "mg-gitelman-02.patient-view.prefetch.json"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("humans")
    s = Served(tmp, serve_env(tmp, CDS_AUTH_MODE="off", CDS_AUDIT_UI="true", CDS_WORKERS="1"))
    s.database = f"sqlite:///{tmp}/audit.sqlite3"
    yield s
    s.stop()


def audit(*args: str, cwd, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([CLI, "audit", *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd,
                          input=stdin)


def diagnostics(resp: requests.Response) -> str:
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    return resp.json()["issue"][0]["diagnostics"]


def written(served: Served, n: int) -> None:
    deadline = time.monotonic() + 15
    while requests.get(served.url + "/readyz", timeout=5).json()["checks"]["auditWriter"]["written"] < n:
        assert time.monotonic() < deadline, "the audit writer did not catch up"
        time.sleep(0.2)


def test_unknown_service_lists_the_ids(served):
    resp = served.post("/cds-services/magnesium-patient-vew", request_file(PV))
    assert resp.status_code == 404
    assert f"no CDS service with id 'magnesium-patient-vew'; the services here are: {SERVICES}" in diagnostics(resp)
    resp = requests.get(served.url + "/cds-service", timeout=5)
    assert resp.status_code == 404 and "GET /cds-services" in diagnostics(resp)


def test_trailing_slash_is_accepted(served):
    assert requests.get(served.url + "/cds-services/", timeout=5).status_code == 200
    resp = served.post("/cds-services/magnesium-patient-view/", request_file(PV))
    assert resp.status_code == 200 and resp.json()["cards"]


def test_a_selection_not_drafted_names_the_draft_orders(served):
    body = json.loads(request_file("mg-ppi-03.order-select.prefetch.json"))
    drafted = sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in body["context"]["draftOrders"]["entry"])
    body["context"]["selections"] = ["MedicationRequest/typo"]
    resp = served.post("/cds-services/magnesium-order-select", json.dumps(body).encode())
    assert resp.status_code == 422
    text = diagnostics(resp)
    assert "MedicationRequest/typo" in text and f"(the draft orders are: {', '.join(drafted)})" in text


def test_audit_page_by_hook_instance(served):
    body = json.loads(request_file("mg-ppi-03.patient-view.prefetch.json"))
    body["hookInstance"] = "3f1e0c1a-page-by-hook-instance"
    assert served.post("/cds-services/magnesium-patient-view", json.dumps(body).encode()).status_code == 200
    deadline = time.monotonic() + 15
    while (page := requests.get(f"{served.url}/audit/invocations/{body['hookInstance']}", timeout=5)).status_code == 404:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert page.status_code == 200 and body["hookInstance"] in page.text and "mg-ppi-03" in page.text
    missing = requests.get(f"{served.url}/audit/invocations/no-such-hook-instance", timeout=5)
    assert missing.status_code == 404 and "no-such-hook-instance" in diagnostics(missing)


def test_audit_cli_names_its_database_and_never_creates_one_by_accident(served, tmp_path):
    listed = audit("list", cwd=tmp_path)  # another directory: the default SQLite file is not there
    assert listed.returncode == 1
    assert f"no audit database at {tmp_path}/cds-audit.sqlite3 (the default)" in listed.stderr
    assert "--database-url" in listed.stderr and "cds-service audit migrate" in listed.stderr
    assert not list(tmp_path.iterdir())  # nothing created
    assert served.post("/cds-services/magnesium-patient-view", request_file(PV)).status_code == 200
    written(served, 1)
    listed = audit("list", "--database-url", served.database, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.startswith(f"audit database: {served.database} (") and "(--database-url)" in listed.stderr
    assert "magnesium-patient-view" in listed.stdout
    made = audit("migrate", "--database-url", f"sqlite:///{tmp_path}/new.sqlite3", cwd=tmp_path)  # asked for
    assert made.returncode == 0 and (tmp_path / "new.sqlite3").exists()


def test_purge_says_how_many_before_it_deletes(served, tmp_path):
    for _ in range(2):
        assert served.post("/cds-services/magnesium-patient-view", request_file(PV)).status_code == 200
    stats = requests.get(served.url + "/readyz", timeout=5).json()["checks"]["auditWriter"]
    written(served, stats["written"] + stats["queued"])
    listed = audit("export", "--database-url", served.database, cwd=tmp_path)
    rows = [json.loads(ln) for ln in listed.stdout.splitlines()]
    cards = len({c["uuid"] for r in rows for c in r["cards"]})  # one card row per card uuid
    declined = audit("purge", "--older-than", "0", "--database-url", served.database, cwd=tmp_path, stdin="n\n")
    assert declined.returncode == 1  # aborted
    assert f"{len(rows)} invocation(s) with {cards} card(s), and 0 feedback row(s), were received before" in declined.stdout
    assert "Delete them?" in declined.stdout
    again = audit("export", "--database-url", served.database, cwd=tmp_path)
    assert len(again.stdout.splitlines()) == len(rows)  # nothing deleted
    done = audit("purge", "--older-than", "0", "--yes", "--database-url", served.database, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"purged {len(rows)} invocation, {cards} card, 0 feedback" in done.stdout
