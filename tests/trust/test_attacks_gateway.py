"""Attacks through fhirServer: shared state, huge answers, paths outside the base, dot-segment ids and
internal addresses. Real HTTP (the FHIR stub, TCP canaries) and, for memory, `cds-service serve`."""
from __future__ import annotations

import json
import logging
import time

import pytest
import requests

from tests.helpers.fhir import KEY_TYPES, assert_magnesium_card, bundle, card, full_prefetch, hook_request, magnesium, outcome_text, patient
from tests.helpers.fhir_stub import FhirStub, Reply, fhir_stub  # noqa: F401
from tests.trust.attackkit import Canary, ScriptedServer, Served, closed_port, cpu_seconds, memory_kib, stall_then_watch, timing, unframed

URL = "/cds-services/magnesium-patient-view"
LOW_MG = magnesium("mg-low", 1.3, when="2026-11-22T06:00:00Z")
DEADLINE = 2.0  # the default CDS_FETCH_DEADLINE_SECONDS
MARGIN = 1.0


# ---------------------------------------------------------------------------- no state shared between callers
def test_a_cookie_set_for_one_caller_is_never_sent_for_another(client, fhir_stub):
    fhir_stub.resources[:] = [patient("p1"), patient("p2"), LOW_MG]
    fhir_stub.on("Patient", lambda req: Reply(body=fhir_stub.default_reply(req).body,
                                             headers={"Set-Cookie": "session=caller-a; Path=/"}))
    assert client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token="a", pid="p1")).status_code == 200
    assert any(c.path == "Patient/p1" for c in fhir_stub.calls())
    first = len(fhir_stub.calls())
    assert client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token="b", pid="p2")).status_code == 200
    later = fhir_stub.calls()[first:]
    assert later and all("cookie" not in c.headers for c in later), [c.headers.get("cookie") for c in later]


# ---------------------------------------------------------------------------- huge answers, real process
def _big_bundle(mib: int, next_url: str | None = None) -> bytes:
    one = magnesium("mg-00000", 2.0, when="2026-01-01T00:00:00Z")
    size = len(json.dumps({"fullUrl": "urn:uuid:x", "resource": one}))
    entries = [{"fullUrl": f"urn:uuid:obs-{i}", "resource": {**one, "id": f"mg-{i}"}}
               for i in range(mib * 2**20 // size)]
    return json.dumps(bundle(raw_entries=entries, next_url=next_url)).encode()


@pytest.fixture(scope="module")
def twenty_mib() -> bytes:
    return _big_bundle(20)


@pytest.mark.processes
@pytest.mark.parametrize(("where", "framing"), [("observations", "Content-Length"), ("every key", "Content-Length"),
                                               ("every key", "no length")])
def test_20_mib_bundles_answered_within_the_deadline_with_bounded_memory(tmp_path, twenty_mib, where, framing):
    """`cds-service serve` (one worker): a 20 MiB answer is refused at the page cap, within the deadline;
    the worker's peak resident memory grows < 100 MB, and no work goes on after the answer."""
    keys = ["Observation"] if where == "observations" else list(KEY_TYPES.values())
    with FhirStub() as stub, ScriptedServer() as unframed_host, \
            Served(tmp_path, CDS_AUTH_MODE="off", CDS_ALLOW_HTTP_FHIR="true") as served:
        stub.resources[:] = [patient(), LOW_MG]
        warm = requests.post(served.base + URL, json=hook_request(fhir_server=stub.base_url, token="t"), timeout=30)
        assert warm.status_code == 200
        pid = served.worker_pid()
        rss_before = memory_kib(pid, "VmRSS")
        if framing == "Content-Length":
            base = stub.base_url
            for rtype in keys:
                stub.on(rtype, Reply(body=twenty_mib))
        else:  # the size is only known by reading: the byte caps must stop the read
            base = unframed_host.url("/fhir")
            for path in ("/fhir/Patient/p1", "/fhir/Observation", "/fhir/MedicationRequest",
                         "/fhir/MedicationStatement", "/fhir/Condition"):
                unframed_host.behaviours[path] = unframed(twenty_mib)
        t0 = time.monotonic()
        resp = requests.post(served.base + URL, json=hook_request(fhir_server=base, token="t"), timeout=60)
        elapsed = time.monotonic() - t0
        cpu_at_answer = cpu_seconds(pid)
        time.sleep(1.5)
        cpu_after = cpu_seconds(pid) - cpu_at_answer
        growth_mb = (memory_kib(pid, "VmHWM") - rss_before) / 1024
    timing(f"20 MiB bundle on {where} ({framing}) -> {resp.status_code}", elapsed)
    print(f"[attack] worker peak RSS growth {growth_mb:.1f} MiB; CPU used after the answer {cpu_after:.3f} s")
    assert resp.status_code == 412
    assert "exceed" in resp.text
    assert elapsed < DEADLINE + MARGIN
    assert growth_mb < 100
    assert cpu_after < 0.3  # nothing kept reading or parsing after the call returned


def test_pages_under_the_page_cap_stop_at_the_call_cap(app_factory, fhir_stub):
    """Pages just under the page cap, linking on forever: reading stops at the per-call byte cap."""
    client = app_factory(fetch_max_page_bytes=300_000, fetch_max_call_bytes=1_000_000, fetch_page_limit=50).test_client()
    fhir_stub.resources[:] = [patient()]
    one = magnesium("mg-x", 2.0, when="2026-01-01T00:00:00Z")
    entries = [{"resource": {**one, "id": f"mg-{i}"}} for i in range(600)]  # ~250 kB per page

    def pages(req):
        n = int(req.query.get("_page", ["1"])[0])
        return Reply(body=bundle(*( [LOW_MG] if n == 1 else []), raw_entries=entries,
                                 next_url=f"{fhir_stub.base_url}/Observation?patient=p1&_page={n + 1}"))

    fhir_stub.on("Observation", pages)
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token="t"))
    assert resp.status_code == 412
    assert "answers for this call exceed" in outcome_text(resp)
    assert len(fhir_stub.calls("Observation")) <= 5  # ~250 kB each: the fourth or fifth page crosses 1 MB


@pytest.mark.slow
def test_a_read_in_flight_is_cut_at_the_deadline(app_factory):
    """The FHIR server sends the headers and a few bytes shortly before the deadline, then stalls: the read
    blocked in recv() is cancelled at the deadline (socket shut down), not when its socket timeout expires."""
    client = app_factory(fetch_deadline_seconds=1.0, fetch_call_timeout_seconds=1.0).test_client()
    with ScriptedServer() as host:
        closed_at: list[float] = []
        host.behaviours["/fhir/Condition"] = stall_then_watch(after=0.7, closed_at=closed_at)
        prefetch = full_prefetch([LOW_MG])
        del prefetch["conditions"]
        t0 = time.monotonic()
        resp = client.post(URL, json=hook_request(prefetch=prefetch, fhir_server=host.url("/fhir"), token="t"))
        answered = time.monotonic() - t0
        until = time.monotonic() + 3.0
        while not closed_at and time.monotonic() < until:
            time.sleep(0.02)
    assert resp.status_code == 200 and "conditions:" in card(resp.get_json(), "data-gaps")["detail"]
    assert closed_at, "the service never let go of the connection"
    timing("stalled page: answered", answered)
    timing("stalled page: connection released after", closed_at[0] - t0)
    assert closed_at[0] - t0 < answered + 0.3


# ---------------------------------------------------------------------------- paths and ids
def test_next_link_outside_the_base_path_is_not_followed(client, fhir_stub):
    fhir_stub.resources[:] = [patient()]
    outside = f"{fhir_stub.origin}/admin/Observation?page=2"
    fhir_stub.on("Observation", lambda req: Reply(body=bundle(magnesium("mg-home", 2.0), next_url=outside)))
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token="t"))
    assert resp.status_code == 200
    assert not any(c.url.startswith(f"{fhir_stub.origin}/admin") for c in fhir_stub.calls())
    assert [c.path for c in fhir_stub.requests if "admin" in c.url] == []
    assert "outside the fhirServer base" in card(resp.get_json(), "data-gaps")["detail"]


@pytest.mark.parametrize("dots", [".", ".."])
def test_dot_segment_patient_ids_are_refused_before_any_url_is_built(client, fhir_stub, dots):
    fhir_stub.resources[:] = [patient()]
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token="t", pid=dots))
    assert resp.status_code == 400
    assert "dot segment" in outcome_text(resp)
    assert fhir_stub.calls() == []


def test_dot_segment_medication_references_are_not_fetched(client, fhir_stub):
    prefetch = full_prefetch([LOW_MG])
    prefetch["medicationRequests"] = bundle({"resourceType": "MedicationRequest", "id": "mr-1", "status": "active",
                                             "intent": "order", "subject": {"reference": "Patient/p1"},
                                             "medicationReference": {"reference": "Medication/.."}})
    resp = client.post(URL, json=hook_request(prefetch=prefetch, fhir_server=fhir_stub.base_url, token="t"))
    assert resp.status_code == 200
    assert fhir_stub.calls() == []  # before: a GET of the fhirServer base itself


# ---------------------------------------------------------------------------- internal addresses
@pytest.fixture
def production_client(app_factory):
    """https only, no development flag, no allowlist."""
    return app_factory(allow_http_fhir=False).test_client()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_fhir_servers_are_refused_after_name_resolution(production_client, host, caplog):
    caplog.set_level(logging.WARNING)
    canary = Canary()
    try:
        t0 = time.monotonic()
        resp = production_client.post(URL, json=hook_request(fhir_server=f"https://{host}:{canary.port}/fhir", token="t"))
        timing(f"fhirServer https://{host}:<open port> -> {resp.status_code}", time.monotonic() - t0)
        time.sleep(0.2)
        assert canary.connections == 0  # never connected
    finally:
        canary.close()
    assert resp.status_code == 412
    assert "FHIR server unreachable" in outcome_text(resp)
    assert "loopback or private address" in caplog.text  # the detail is in the log only
    assert "loopback" not in outcome_text(resp)


def test_open_and_closed_internal_ports_look_the_same_to_the_caller(production_client):
    canary = Canary()
    try:
        open_resp = production_client.post(URL, json=hook_request(fhir_server=f"https://127.0.0.1:{canary.port}/fhir"))
        closed_resp = production_client.post(URL, json=hook_request(fhir_server=f"https://127.0.0.1:{closed_port()}/fhir"))
    finally:
        canary.close()
    assert open_resp.status_code == closed_resp.status_code == 412
    assert outcome_text(open_resp) == outcome_text(closed_resp)  # "FHIR server unreachable" for both
    assert "FHIR server unreachable" in outcome_text(open_resp)


@pytest.mark.parametrize("address", ["169.254.169.254", "[::ffff:169.254.169.254]", "0.0.0.0", "10.0.0.1"])
def test_metadata_and_private_addresses_are_refused_quickly(production_client, address, caplog):
    caplog.set_level(logging.WARNING)
    t0 = time.monotonic()
    resp = production_client.post(URL, json=hook_request(fhir_server=f"https://{address}/fhir", token="t"))
    elapsed = time.monotonic() - t0
    timing(f"fhirServer https://{address} -> {resp.status_code}", elapsed)
    assert resp.status_code == 412
    assert "FHIR server unreachable" in outcome_text(resp)
    assert "fhirServer host" in caplog.text and "refused" in caplog.text  # the gateway's own refusal, logged
    assert elapsed < 0.5  # refused before connecting, not after a connect timeout


@pytest.mark.slow
def test_the_allowlist_allows_an_internal_fhir_server(app_factory):
    with FhirStub() as stub:
        stub.resources[:] = [patient(), LOW_MG]
        base = f"http://localhost:{stub.port}/fhir"
        client = app_factory(allow_http_fhir=False, fhir_server_allowlist=(base,)).test_client()
        # http is still refused without the development flag; the allowlist decides the address, not the scheme
        resp = client.post(URL, json=hook_request(fhir_server=base, token="t"))
        assert resp.status_code == 412 and "not https" in outcome_text(resp)
    canary = Canary()
    try:
        base = f"https://localhost:{canary.port}/fhir"
        client = app_factory(allow_http_fhir=False, fhir_server_allowlist=(base,)).test_client()
        client.post(URL, json=hook_request(fhir_server=base, token="t"))
        time.sleep(0.2)
        assert canary.connections >= 1  # allowed: it connected (and the TLS handshake failed)
    finally:
        canary.close()


def test_the_development_flag_allows_loopback(client, fhir_stub):
    """The existing suite's setting (CDS_ALLOW_HTTP_FHIR) keeps a local FHIR server usable."""
    fhir_stub.resources[:] = [patient(), LOW_MG]
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token="t"))
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)
