"""Failing FHIR servers: the bearer token, paging, retries, deadlines and broken answers.

Real HTTP against a local stub server (tests/helpers/fhir_stub.py) wherever a real socket is the point;
the ``responses`` library only to inject status codes and count retries. Elapsed times are printed
(``pytest -s``) so they can be reported.
"""
from __future__ import annotations

import logging
import re
import time

import pytest
import responses
from urllib3.connection import HTTPConnection
from urllib3.exceptions import NewConnectionError

from cds_service.services import get_services
from tests.helpers.fhir import (
    KEY_TYPES,
    assert_magnesium_card,
    bundle,
    card,
    full_prefetch,
    hook_request,
    magnesium,
    operation_outcome,
    outcome_text,
    patient,
    rules_of,
)
from tests.helpers.fhir_stub import FhirStub, Reply, closed_port_url, fhir_stub, paging_forever  # noqa: F401

URL = "/cds-services/magnesium-patient-view"
TOKEN = "secret-ehr-token-b9c1d2"
LOW_MG = magnesium("mg-low", 1.3, when="2026-11-22T06:00:00Z")
EHR = "https://ehr.example.org/fhir"
DEADLINE = 1.0
MARGIN = 1.0  # generous ceiling over the deadline


def _timed_post(client, body):
    t0 = time.monotonic()
    resp = client.post(URL, json=body)
    return resp, time.monotonic() - t0


def _report(label: str, seconds: float) -> None:
    print(f"\n[timing] {label}: {seconds * 1000:.0f} ms")


@pytest.fixture
def no_token_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    assert TOKEN not in caplog.text


# ---------------------------------------------------------------------------- the bearer token over real HTTP
def test_token_reaches_the_fhir_server_on_every_query(client, fhir_stub, no_token_in_logs):
    fhir_stub.resources[:] = [patient(), LOW_MG]
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)
    calls = fhir_stub.calls()
    assert sorted(c.resource_type for c in calls) == sorted(KEY_TYPES.values())
    for c in calls:
        assert c.headers.get("authorization") == f"Bearer {TOKEN}", c.path
        assert "fhir+json" in c.headers.get("accept", "")
    assert TOKEN not in resp.get_data(as_text=True)


def test_without_fhir_authorization_no_authorization_header_is_sent(client, fhir_stub):
    fhir_stub.resources[:] = [patient(), LOW_MG]
    assert client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url)).status_code == 200
    assert fhir_stub.calls() and all("authorization" not in c.headers for c in fhir_stub.calls())


@pytest.mark.parametrize("elsewhere", ["other-port", "other-host-name"])
def test_next_link_to_another_origin_is_not_followed_and_never_gets_the_token(client, fhir_stub, elsewhere,
                                                                             no_token_in_logs):
    with FhirStub() as other:
        if elsewhere == "other-port":
            foreign = f"{other.base_url}/Observation?page=2"
        else:  # same port, different host name: a different origin all the same
            foreign = f"http://localhost:{fhir_stub.port}/fhir/Observation?page=2"
        foreign_low = magnesium("mg-foreign", 0.6, when="2026-11-24T06:00:00Z")
        other.resources[:] = [foreign_low]
        fhir_stub.resources[:] = [patient()]
        fhir_stub.on("Observation", lambda req: Reply(body=bundle(magnesium("mg-home", 2.0), next_url=foreign))
                     if "page" not in req.query else Reply(body=bundle(foreign_low)))
        resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
        assert resp.status_code == 200
        assert other.calls() == []
        assert [c.query.get("page") for c in fhir_stub.calls("Observation")] == [None]
        assert not any(c.headers.get("host", "").startswith("localhost") for c in fhir_stub.calls())
        body = resp.get_json()
        assert "hypomagnesemia" not in rules_of(body)  # the foreign page's 0.6 mg/dL was never read
        assert "observations" in card(body, "data-gaps")["detail"]
        assert "the next-page link points to another server" in card(body, "data-gaps")["detail"]


def test_same_origin_next_links_are_followed_with_the_token(app_factory, fhir_stub):
    client = app_factory(fetch_page_limit=5).test_client()
    fhir_stub.resources[:] = [patient()]

    def pages(req):
        page = int(req.query.get("_page", ["1"])[0])
        if page == 1:  # relative next link, resolved against the current URL
            return Reply(body=bundle(magnesium("mg-old", 2.0, when="2026-06-01T06:00:00Z"),
                                     next_url="Observation?patient=p1&_page=2"))
        return Reply(body=bundle(LOW_MG))  # the last page: no next link

    fhir_stub.on("Observation", pages)
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)  # the low value is on page 2
    obs_calls = fhir_stub.calls("Observation")
    assert len(obs_calls) == 2
    assert all(c.headers["authorization"] == f"Bearer {TOKEN}" for c in obs_calls)


@pytest.mark.parametrize("page_limit", [1, 3])
def test_paging_forever_stops_at_the_page_limit(app_factory, fhir_stub, page_limit):
    client = app_factory(fetch_page_limit=page_limit).test_client()
    fhir_stub.resources[:] = [patient()]
    fhir_stub.on("Observation", paging_forever(
        fhir_stub.base_url, lambda page: [LOW_MG] if page == 1 else [magnesium(f"mg-p{page}", 2.0, when="2026-01-01T00:00:00Z")]))
    resp, elapsed = _timed_post(client, hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    _report(f"paging forever, page limit {page_limit}", elapsed)
    assert resp.status_code == 200
    assert len(fhir_stub.calls("Observation")) == page_limit
    body = resp.get_json()
    assert_magnesium_card(body, gaps=True)
    assert f"only the first {page_limit} page(s) were read (the page limit ({page_limit}) was reached)" in card(body, "data-gaps")["detail"]
    assert elapsed < 2.0 + MARGIN


# ---------------------------------------------------------------------------- retries (fault injection with `responses`)
def _ehr_mock(rm: responses.RequestsMock, faults: dict[str, int]) -> None:
    """Answer every query; the resource types in ``faults`` always answer that HTTP status."""
    for rtype in KEY_TYPES.values():
        pattern = re.compile(re.escape(f"{EHR}/{rtype}") + r"([/?].*)?$")
        if rtype in faults:
            rm.get(pattern, status=faults[rtype], json=operation_outcome(f"injected {faults[rtype]}"))
        elif rtype == "Patient":
            rm.get(pattern, json=patient())
        elif rtype == "Observation":
            rm.get(pattern, json=bundle(LOW_MG))
        else:
            rm.get(pattern, json=bundle())


def _calls_for(rm: responses.RequestsMock, rtype: str) -> int:
    return sum(1 for c in rm.calls if f"/fhir/{rtype}" in c.request.url)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_a_bounded_number_of_times_then_412(app_factory, status):
    client = app_factory(fetch_retries=2).test_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rm:
        _ehr_mock(rm, {"Observation": status})
        resp, elapsed = _timed_post(client, hook_request(fhir_server=EHR, token=TOKEN))
        assert _calls_for(rm, "Observation") == 3  # the first try + 2 retries
        assert _calls_for(rm, "Condition") == 1
    _report(f"observations always {status}", elapsed)
    assert resp.status_code == 412
    assert f"HTTP {status}" in outcome_text(resp)


def test_a_gateway_error_then_success_is_used(app_factory):
    client = app_factory(fetch_retries=2).test_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rm:
        rm.get(re.compile(re.escape(f"{EHR}/Observation") + r"\?.*"), status=503)
        _ehr_mock(rm, {})  # registered after: the second Observation call gets the bundle
        resp = client.post(URL, json=hook_request(fhir_server=EHR, token=TOKEN))
        assert _calls_for(rm, "Observation") == 2
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)


@pytest.mark.parametrize("status", [500, 401, 403, 404])
def test_other_errors_on_required_observations_are_not_retried_and_give_412(app_factory, status):
    client = app_factory(fetch_retries=2).test_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rm:
        _ehr_mock(rm, {"Observation": status})
        resp = client.post(URL, json=hook_request(fhir_server=EHR, token=TOKEN))
        assert _calls_for(rm, "Observation") == 1
    assert resp.status_code == 412
    assert f"HTTP {status}" in outcome_text(resp)
    assert TOKEN not in resp.get_data(as_text=True)


@pytest.mark.parametrize("status", [500, 401, 403, 404, 503])
def test_errors_on_optional_keys_give_cards_and_a_data_gaps_card(app_factory, status):
    client = app_factory(fetch_retries=2).test_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rm:
        _ehr_mock(rm, {"MedicationStatement": status, "Condition": status})
        resp = client.post(URL, json=hook_request(fhir_server=EHR, token=TOKEN))
        assert _calls_for(rm, "Condition") == (3 if status == 503 else 1)
    assert resp.status_code == 200
    body = resp.get_json()
    assert_magnesium_card(body, gaps=True)
    gaps = card(body, "data-gaps")
    assert gaps["indicator"] == "info"
    assert "2 data sources could not be read" in gaps["summary"]
    for key in ("medicationStatements", "conditions"):
        assert f"{key}:" in gaps["detail"] and f"HTTP {status}" in gaps["detail"]


def test_connection_errors_are_retried(app_factory, fhir_stub, monkeypatch):
    """The first two connection attempts are refused (injected below urllib3's retry); the third gets through."""
    client = app_factory(fetch_retries=2).test_client()
    fhir_stub.resources[:] = [LOW_MG]
    real_new_conn = HTTPConnection._new_conn
    attempts = []

    def flaky_new_conn(self):
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise NewConnectionError(self, "injected: connection refused")
        return real_new_conn(self)

    monkeypatch.setattr(HTTPConnection, "_new_conn", flaky_new_conn)
    prefetch = full_prefetch([])
    del prefetch["observations"]
    resp = client.post(URL, json=hook_request(prefetch=prefetch, fhir_server=fhir_stub.base_url, token=TOKEN))
    assert len(attempts) == 3
    assert len(fhir_stub.calls("Observation")) == 1
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)


# ---------------------------------------------------------------------------- real-socket faults
def test_server_down_gives_412_quickly(app_factory, no_token_in_logs):
    client = app_factory(fetch_deadline_seconds=DEADLINE).test_client()
    resp, elapsed = _timed_post(client, hook_request(fhir_server=closed_port_url(), token=TOKEN))
    _report("server down (connection refused)", elapsed)
    assert resp.status_code == 412
    assert "unreachable" in outcome_text(resp)
    assert elapsed < DEADLINE + MARGIN


@pytest.mark.slow
def test_slow_observations_beyond_the_deadline_give_412_within_the_deadline(app_factory, fhir_stub, no_token_in_logs):
    client = app_factory(fetch_deadline_seconds=DEADLINE).test_client()
    fhir_stub.resources[:] = [patient(), LOW_MG]
    fhir_stub.on("Observation", Reply(body=bundle(LOW_MG), delay=DEADLINE + 3.0))
    resp, elapsed = _timed_post(client, hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    _report(f"observations slow, deadline {DEADLINE:.1f} s -> {resp.status_code}", elapsed)
    assert resp.status_code == 412
    assert "observations" in outcome_text(resp)
    assert DEADLINE * 0.5 < elapsed < DEADLINE + MARGIN


@pytest.mark.slow
def test_slow_medications_give_cards_and_a_data_gaps_card_within_the_deadline(app_factory, fhir_stub):
    client = app_factory(fetch_deadline_seconds=DEADLINE).test_client()
    fhir_stub.resources[:] = [patient(), LOW_MG]
    for rtype in ("MedicationRequest", "MedicationStatement"):
        fhir_stub.on(rtype, Reply(body=bundle(), delay=DEADLINE + 3.0))
    resp, elapsed = _timed_post(client, hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    _report(f"medications slow, deadline {DEADLINE:.1f} s -> {resp.status_code}", elapsed)
    assert resp.status_code == 200
    body = resp.get_json()
    assert_magnesium_card(body, gaps=True)
    detail = card(body, "data-gaps")["detail"]
    assert "medicationRequests:" in detail and "medicationStatements:" in detail
    assert "conditions:" not in detail
    assert elapsed < DEADLINE + MARGIN


@pytest.mark.slow
def test_a_server_trickling_its_answer_cannot_stretch_the_deadline(app_factory, fhir_stub):
    """Per-read socket timeouts never fire when bytes keep coming; the one request deadline still must."""
    client = app_factory(fetch_deadline_seconds=DEADLINE).test_client()
    fhir_stub.resources[:] = [patient(), LOW_MG]
    fhir_stub.on("Condition", Reply(body=bundle(), trickle=0.4))  # ~70 bytes in 5 pieces: about 2 s
    resp, elapsed = _timed_post(client, hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    _report(f"conditions trickling, deadline {DEADLINE:.1f} s -> {resp.status_code}", elapsed)
    assert resp.status_code == 200
    body = resp.get_json()
    assert_magnesium_card(body, gaps=True)
    assert "conditions:" in card(body, "data-gaps")["detail"]
    assert elapsed < DEADLINE + MARGIN


@pytest.mark.slow
def test_an_endless_trickle_is_cut_off_at_the_deadline(app_factory, fhir_stub):
    """A server that sends forever must not keep a fetch thread (and its connection) busy after the deadline."""
    client = app_factory(fetch_deadline_seconds=DEADLINE).test_client()
    fhir_stub.resources[:] = [patient(), LOW_MG]
    padding = [{"resource": {"resourceType": "Basic", "id": f"pad-{i}"}} for i in range(400)]
    fhir_stub.on("Condition", Reply(body=bundle(raw_entries=padding), trickle=0.02))  # ~20 kB: ~25 s
    started = time.monotonic()
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert "conditions:" in card(resp.get_json(), "data-gaps")["detail"]
    waited_until = time.monotonic() + DEADLINE + MARGIN
    while not fhir_stub.disconnects and time.monotonic() < waited_until:
        time.sleep(0.05)
    assert fhir_stub.disconnects, "the service kept reading the endless answer after its deadline"
    released = fhir_stub.disconnects[0] - started
    _report("endless trickle: connection released after", released)
    assert released < DEADLINE + MARGIN


@pytest.mark.slow
def test_default_deadline_holds_with_a_server_that_never_answers(app_factory, fhir_stub):
    client = app_factory().test_client()
    deadline = get_services(client.application).settings.fetch_deadline_seconds
    assert deadline <= 2.0
    for rtype in KEY_TYPES.values():
        fhir_stub.on(rtype, Reply(body=bundle(), delay=deadline + 5.0))
    resp, elapsed = _timed_post(client, hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    _report(f"every key hangs, default deadline {deadline:.1f} s -> {resp.status_code}", elapsed)
    assert resp.status_code == 412
    assert elapsed < deadline + MARGIN


@pytest.mark.parametrize(("key", "rtype"), [("observations", "Observation"), ("conditions", "Condition")])
def test_non_json_body_is_reported(client, fhir_stub, key, rtype):
    fhir_stub.resources[:] = [patient(), LOW_MG]
    fhir_stub.on(rtype, Reply(body="<html><body>Please log in</body></html>", content_type="text/html"))
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    _assert_reported(resp, key, "not JSON")


@pytest.mark.parametrize(("key", "rtype"), [("observations", "Observation"), ("conditions", "Condition")])
def test_operation_outcome_body_is_reported(client, fhir_stub, key, rtype):
    fhir_stub.resources[:] = [patient(), LOW_MG]
    fhir_stub.on(rtype, Reply(body=operation_outcome("search index is rebuilding")))
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    _assert_reported(resp, key, "search index is rebuilding")


@pytest.mark.parametrize(("key", "rtype"), [("observations", "Observation"), ("conditions", "Condition")])
def test_json_that_is_not_a_resource_is_reported(client, fhir_stub, key, rtype):
    fhir_stub.resources[:] = [patient(), LOW_MG]
    fhir_stub.on(rtype, Reply(body=[{"resourceType": "Bundle"}]))
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    _assert_reported(resp, key, "not a FHIR resource")


def test_an_oversized_answer_is_reported_not_read(app_factory, fhir_stub):
    client = app_factory(fetch_max_page_bytes=4096).test_client()
    fhir_stub.resources[:] = [patient(), LOW_MG]
    padding = [{"resource": {"resourceType": "Basic", "id": f"pad-{i}"}} for i in range(200)]
    fhir_stub.on("Condition", Reply(body=bundle(raw_entries=padding)))
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    _assert_reported(resp, "conditions", "exceeds")


def test_redirect_is_not_followed(client, fhir_stub):
    with FhirStub() as other:
        other.resources[:] = [LOW_MG]
        fhir_stub.resources[:] = [patient()]
        fhir_stub.on("Observation", Reply(302, body="", headers={"Location": f"{other.base_url}/Observation"}))
        resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
        assert other.calls() == []
    assert resp.status_code == 412
    assert "HTTP 302" in outcome_text(resp)


def _assert_reported(resp, key: str, reason: str) -> None:
    if key == "observations":  # required: the policy is 412
        assert resp.status_code == 412
        text = outcome_text(resp)
        assert "observations" in text and reason in text
    else:  # optional: cards from what was read plus the data-gaps card
        assert resp.status_code == 200
        body = resp.get_json()
        assert_magnesium_card(body, gaps=True)
        detail = card(body, "data-gaps")["detail"]
        assert f"{key}:" in detail and reason in detail


# ---------------------------------------------------------------------------- parallelism
def test_slow_keys_are_fetched_in_parallel(app_factory, fhir_stub):
    client = app_factory(fetch_deadline_seconds=2.0).test_client()
    fhir_stub.resources[:] = [patient(), LOW_MG]
    slow = ("Observation", "MedicationRequest", "Condition")
    for rtype in slow:
        fhir_stub.on(rtype, lambda req: Reply(body=fhir_stub.default_reply(req).body, delay=0.3))
    prefetch = full_prefetch([])
    for key, rtype in KEY_TYPES.items():
        if rtype in slow:
            del prefetch[key]
    resp, elapsed = _timed_post(client, hook_request(prefetch=prefetch, fhir_server=fhir_stub.base_url, token=TOKEN))
    _report("three keys of 300 ms each", elapsed)
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)  # all three arrived: no data-gaps card
    assert sorted(c.resource_type for c in fhir_stub.calls()) == sorted(slow)
    assert elapsed < 0.8
