"""GET /metrics of a real `cds-service serve` (two gunicorn workers, client authentication required), scraped
after real calls: every count is the tally of what this test sent and got back."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.opskit import Served, free_port, request_file, serve_env
from tests.trust.trustkit import ISS, Signer, bearer, jwks, write_issuers

pytestmark = pytest.mark.processes  # cds-service serve under gunicorn

CALL_FILES = [
    "mg-gitelman-02.patient-view.prefetch.json",
    "mg-ppi-03.patient-view.prefetch.json",
    "mg-ppi-03.order-sign.prefetch.json",
    "mg-ppi-03.order-select.prefetch.json",
    "mg-ckd-04.patient-view.prefetch.json",
    "mg-cisplatin-08.order-sign.prefetch.json",
]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def secure(tmp_path):
    signer = Signer("ES384", kid="metrics")
    issuers = write_issuers(tmp_path / "issuers.yaml", [{"iss": ISS, "jwks": jwks(signer)}])
    served = Served(tmp_path, serve_env(tmp_path, CDS_AUTH_MODE="required", CDS_TRUSTED_ISSUERS_FILE=issuers,
                                        CDS_ALLOW_HTTP_FHIR="true"))
    yield served, signer
    served.stop()


def test_metrics_count_what_happened(secure):
    served, signer = secure
    calls: Counter = Counter()  # (service, status)
    cards: Counter = Counter()  # (rule, indicator)
    prefetch: Counter = Counter()  # (service, key, outcome)
    refusals: Counter = Counter()
    discovery = requests.get(served.url + "/cds-services", timeout=10,
                             headers=bearer(signer.token(served.url + "/cds-services"))).json()
    keys = {s["id"]: list(s["prefetch"]) for s in discovery["services"]}

    def call(service: str, body: bytes, headers: dict[str, str]) -> requests.Response:
        resp = served.post(f"/cds-services/{service}", body, **headers)
        calls[(service if service in keys else "unknown", str(resp.status_code))] += 1
        return resp

    def signed(service: str) -> dict[str, str]:
        return bearer(signer.token(f"{served.url}/cds-services/{service}"))

    for name in CALL_FILES:
        body = json.loads(request_file(name))
        service = "magnesium-" + body["hook"]
        resp = call(service, json.dumps(body).encode(), signed(service))
        assert resp.status_code == 200, resp.text
        for card in resp.json()["cards"]:
            cards[(card["source"]["topic"]["code"], card["indicator"])] += 1
        assert set(body["prefetch"]) == set(keys[service]) and all(v is not None for v in body["prefetch"].values())
        for key in keys[service]:
            prefetch[(service, key, "prefetched")] += 1

    # no prefetch and a FHIR server that refuses connections: every key unavailable, 412; urllib3 retries (logged)
    dead = f"http://127.0.0.1:{free_port()}/fhir"
    body = json.loads(request_file("mg-gitelman-02.patient-view.no-prefetch.json"))
    body["fhirServer"] = dead
    resp = call("magnesium-patient-view", json.dumps(body).encode(), signed("magnesium-patient-view"))
    assert resp.status_code == 412, resp.text
    for key in keys["magnesium-patient-view"]:
        prefetch[("magnesium-patient-view", key, "unavailable")] += 1

    pv = request_file("mg-gitelman-02.patient-view.prefetch.json")
    assert call("magnesium-patient-vew", pv, signed("magnesium-patient-vew")).status_code == 404
    assert call("magnesium-patient-view", pv, {}).status_code == 401
    refusals["missing-token"] += 1
    assert call("magnesium-patient-view", pv, bearer(signer.token("https://elsewhere.example.org/x"))).status_code == 401
    refusals["audience"] += 1
    replayed = signed("magnesium-patient-view")
    first = call("magnesium-patient-view", pv, replayed)
    assert first.status_code == 200
    for card in first.json()["cards"]:
        cards[(card["source"]["topic"]["code"], card["indicator"])] += 1
    for key in keys["magnesium-patient-view"]:
        prefetch[("magnesium-patient-view", key, "prefetched")] += 1
    assert call("magnesium-patient-view", pv, replayed).status_code == 401
    refusals["replay"] += 1
    stranger = Signer("ES384", kid="stranger", iss="https://stranger.example.org")
    assert call("magnesium-patient-view", pv,
                bearer(stranger.token(f"{served.url}/cds-services/magnesium-patient-view"))).status_code == 401
    refusals["untrusted-issuer"] += 1

    anonymous = requests.get(served.url + "/metrics", timeout=10)  # same authentication as the service
    assert anonymous.status_code == 401
    refusals["missing-token"] += 1
    total = sum(calls.values())
    deadline = time.monotonic() + 15
    while True:  # the audit writer is asynchronous: wait until every call is written
        resp = requests.get(served.url + "/metrics", headers=signed_metrics(served, signer), timeout=10)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
        scraped = samples(resp.text)
        if value(scraped, "cds_audit_written_total") >= total or time.monotonic() > deadline:
            break
        time.sleep(0.3)

    for (service, status), n in calls.items():
        assert value(scraped, "cds_hook_calls_total", service=service, status=status) == n, (service, status)
    assert sum(v for (name, _), v in scraped.items() if name == "cds_hook_calls_total") == total
    for service in {s for s, _ in calls}:
        assert value(scraped, "cds_hook_call_duration_seconds_count", service=service) == sum(
            n for (s, _), n in calls.items() if s == service)
    assert cards and all(value(scraped, "cds_cards_total", rule=r, indicator=i) == n for (r, i), n in cards.items())
    assert sum(v for (name, _), v in scraped.items() if name == "cds_cards_total") == sum(cards.values())
    for (service, key, outcome), n in prefetch.items():
        assert value(scraped, "cds_prefetch_keys_total", service=service, key=key, outcome=outcome) == n
    for reason, n in refusals.items():
        assert value(scraped, "cds_auth_refusals_total", reason=reason) == n, reason
    assert value(scraped, "cds_audit_written_total") == total
    assert value(scraped, "cds_audit_write_lag_seconds_count") == total
    assert value(scraped, "cds_audit_write_failures_total") == 0 and value(scraped, "cds_audit_queue_depth") == 0
    pids = {int(ln.split("pid: ")[1]) for ln in served.log().splitlines() if "Booting worker with pid: " in ln}
    assert len(pids) == 2  # both workers' counts are in the sums above (multiprocess mode)

    log = served.log()  # urllib3's retry warnings name the FHIR query: its query string is redacted
    retries = [ln for ln in log.splitlines() if "Retrying" in ln]
    searches = [ln for ln in retries if "/fhir/Patient/" not in ln]  # the Patient read has no query string
    assert searches and all(ln.endswith("?[query redacted]") for ln in searches), searches
    assert not [ln for ln in retries if "patient=" in ln or "code=" in ln or "date=" in ln]


def signed_metrics(served: Served, signer: Signer) -> dict[str, str]:
    return bearer(signer.token(served.url + "/metrics"))


def test_metrics_on_a_port_of_their_own(tmp_path):
    metrics_port = free_port()
    served = Served(tmp_path, serve_env(tmp_path, CDS_AUTH_MODE="off", CDS_METRICS_PORT=str(metrics_port)))
    try:
        assert "metrics port " + str(metrics_port) in served.log()
        assert served.post("/cds-services/magnesium-patient-view",
                           request_file("mg-ppi-03.patient-view.prefetch.json")).status_code == 200
        assert requests.get(served.url + "/metrics", timeout=10).status_code == 404  # not on the service port
        scraped = samples(requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text)
        assert value(scraped, "cds_hook_calls_total", service="magnesium-patient-view", status="200") == 1
    finally:
        served.stop()
