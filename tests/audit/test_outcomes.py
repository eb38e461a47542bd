"""One audit row for every outcome of a hook call: 200, 400, 401, 404, 412, 413, 415, upstream fault, 500."""
from __future__ import annotations

import json
from pathlib import Path

from cds_service.services import get_services
from tests.audit.helpers import ISSUER, PATIENT_VIEW, client_jwt, failing_fhir_server, patient_view_body, rows, serve, trusted_issuers_file

URL = f"/cds-services/{PATIENT_VIEW}"


def test_200_row_has_everything_needed_to_replay_and_no_token(app_factory, tmp_path):
    db = tmp_path / "outcomes.sqlite3"
    app = app_factory(database_url=f"sqlite:///{db}")
    secret = "SECRET-ACCESS-TOKEN-4711"
    jwt_like = "eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"
    body = patient_view_body("hi-200", mg=1.6, fhirServer="http://127.0.0.1:9/fhir",
                             fhirAuthorization={"access_token": secret, "token_type": "Bearer", "expires_in": 300,
                                                "scope": "patient/*.read", "subject": "cds-service"})
    resp = app.test_client().post(URL, json=body, headers={"Authorization": f"Bearer {jwt_like}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    cards = resp.get_json()["cards"]
    [row] = rows(app)
    assert (row.status, row.service_id, row.hook, row.hook_instance) == (200, PATIENT_VIEW, "patient-view", "hi-200")
    assert (row.patient_id, row.user_id, row.encounter_id) == ("p1", "Practitioner/dr-1", "enc-1")
    assert row.fhir_server == "http://127.0.0.1:9/fhir"
    assert row.knowledge_version == get_services(app).knowledge.version
    assert row.latency_ms > 0
    assert "hypomagnesemia" in row.rules_evaluated and "hypomagnesemia" in row.rules_fired
    assert row.cards == cards
    [fact] = row.facts["hypomagnesemia"]
    assert (fact["value"], fact["unit"], fact["effective"][:10]) == (1.6, "mg/dL", "2026-11-20")
    assert fact["source"] == {"resourceType": "Observation", "id": "mg-hi-200", "versionId": "1"}
    assert row.record_snapshot["labs"]["magnesium"][0]["value"] == 1.6
    assert row.evaluated_at is not None
    # never a token or a JWT, anywhere in the database file
    get_services(app).store.close()
    raw = b"".join(p.read_bytes() for p in Path(tmp_path).rglob("*") if p.is_file() and "outcomes.sqlite3" in str(p))  # + spool
    assert secret.encode() not in raw and jwt_like.encode() not in raw
    assert b"hi-200" in raw  # the search above does read the stored rows


def test_400_invalid_request_is_recorded_with_its_code(app):
    body = patient_view_body("hi-400")
    del body["context"]["userId"]
    resp = app.test_client().post(URL, json=body)
    assert resp.status_code == 400
    [row] = rows(app)
    assert (row.status, row.error_code, row.hook_instance, row.patient_id) == (400, "invalid-request", "hi-400", "p1")
    assert "userId" in row.error
    assert row.cards == [] and row.record_snapshot is None


def test_404_unknown_service_recorded_with_the_id_as_given(app):
    resp = app.test_client().post("/cds-services/no-such-service", json=patient_view_body("hi-404"))
    assert resp.status_code == 404
    [row] = rows(app)
    assert (row.status, row.error_code, row.service_id, row.hook_instance) == (404, "unknown-service", "no-such-service", "hi-404")


def test_404_with_an_overlong_service_id_is_still_recorded(app):
    sid = "x" * 400
    assert app.test_client().post(f"/cds-services/{sid}", json=patient_view_body("hi-long")).status_code == 404
    [row] = rows(app)
    assert row.status == 404 and row.service_id == sid[:200]


def test_412_required_prefetch_missing_and_nothing_to_fetch_from(app):
    body = patient_view_body("hi-412")
    del body["prefetch"]["observations"]
    resp = app.test_client().post(URL, json=body)
    assert resp.status_code == 412
    [row] = rows(app)
    assert (row.status, row.error_code, row.hook_instance) == (412, "prefetch-unavailable", "hi-412")


def test_413_body_too_large(app_factory):
    app = app_factory(max_body_bytes=2000)
    raw = json.dumps(patient_view_body("hi-413", padding="x" * 5000))
    resp = app.test_client().post(URL, data=raw, content_type="application/json")
    assert resp.status_code == 413
    [row] = rows(app)
    assert (row.status, row.error_code, row.service_id) == (413, "payload-too-large", PATIENT_VIEW)


def test_415_wrong_content_type(app):
    resp = app.test_client().post(URL, data=json.dumps(patient_view_body("hi-415")), content_type="text/plain")
    assert resp.status_code == 415
    [row] = rows(app)
    assert (row.status, row.error_code) == (415, "unsupported-media-type")


def test_upstream_fault_required_data_gives_412_row_with_fetch_status(app):
    with serve(failing_fhir_server(503)) as base:
        body = patient_view_body("hi-fault", fhirServer=f"{base}/fhir")
        del body["prefetch"]["observations"]
        resp = app.test_client().post(URL, json=body)
    assert resp.status_code == 412
    [row] = rows(app)
    assert (row.status, row.error_code) == (412, "prefetch-unavailable")
    assert row.prefetch["observations"] == "unavailable"
    assert "observations" in row.fetch_ms


def test_upstream_fault_on_optional_data_gives_200_row_with_gaps(app):
    with serve(failing_fhir_server(503)) as base:
        body = patient_view_body("hi-gap", fhirServer=f"{base}/fhir")
        del body["prefetch"]["conditions"]
        resp = app.test_client().post(URL, json=body)
    assert resp.status_code == 200
    [row] = rows(app)
    assert row.status == 200 and row.prefetch["conditions"] == "unavailable"
    assert any(g["key"] == "conditions" for g in row.gaps)
    assert "data-gaps" in row.rules_fired


class _BrokenGateway:
    def call_budget(self):
        return None

    def fetch_many(self, *args, **kwargs):
        raise RuntimeError("bug in the gateway")


def test_500_internal_fault_is_recorded_without_the_message(app_factory):
    app = app_factory(gateway=_BrokenGateway())
    body = patient_view_body("hi-500", fhirServer="http://127.0.0.1:9/fhir")
    del body["prefetch"]["observations"]
    resp = app.test_client().post(URL, json=body)
    assert resp.status_code == 500
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    [row] = rows(app)
    assert (row.status, row.error_code, row.error, row.hook_instance) == (500, "internal-error", "RuntimeError", "hi-500")


def test_401_before_the_view_ran_is_recorded(app_factory, tmp_path):
    app = app_factory(auth_mode="required", trusted_issuers_file=trusted_issuers_file(tmp_path))
    resp = app.test_client().post(URL, json=patient_view_body("hi-401"))
    assert resp.status_code == 401
    [row] = rows(app)
    assert (row.status, row.error_code, row.service_id) == (401, "unauthorized", PATIENT_VIEW)


def test_the_verified_client_is_recorded_but_never_its_token(app_factory, tmp_path):
    db = tmp_path / "client.sqlite3"
    app = app_factory(database_url=f"sqlite:///{db}", auth_mode="required",
                      trusted_issuers_file=trusted_issuers_file(tmp_path))
    token = client_jwt(f"http://localhost{URL}")
    resp = app.test_client().post(URL, json=patient_view_body("hi-jwt"), headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    [row] = rows(app)
    assert (row.status, row.client) == (200, f"{ISSUER} sub=ehr-client-7")
    get_services(app).store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "client.sqlite3" in str(p))  # + spool
    assert token.encode() not in raw and token.split(".")[2].encode() not in raw and b"hi-jwt" in raw
