"""Prefetch completion: what the EHR sent is used, what it did not send (or sent unusable) is fetched over HTTP."""
from __future__ import annotations

import pytest

from tests.helpers.fhir import (
    KEY_TYPES,
    PATIENT_ID,
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
from tests.helpers.fhir_stub import FhirStub, fhir_stub  # noqa: F401  (fixture)

URL = "/cds-services/magnesium-patient-view"
TOKEN = "stub-access-token-7f3a"
LOW_MG = magnesium("mg-low", 1.3, when="2026-11-22T06:00:00Z")


def _stub_with_record(stub: FhirStub) -> FhirStub:
    stub.resources[:] = [patient(), LOW_MG]
    return stub


def _fetched_types(stub: FhirStub) -> list[str]:
    return sorted(r.resource_type for r in stub.calls())


def test_complete_prefetch_fetches_nothing(client, fhir_stub):
    _stub_with_record(fhir_stub)
    resp = client.post(URL, json=hook_request(prefetch=full_prefetch([LOW_MG]), fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)
    assert fhir_stub.calls() == []


def test_partial_prefetch_fetches_only_the_missing_keys(client, fhir_stub):
    _stub_with_record(fhir_stub)
    prefetch = full_prefetch([LOW_MG])
    del prefetch["medicationStatements"], prefetch["conditions"]
    resp = client.post(URL, json=hook_request(prefetch=prefetch, fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)
    assert _fetched_types(fhir_stub) == ["Condition", "MedicationStatement"]
    for call in fhir_stub.calls():
        assert call.query["patient"] == [PATIENT_ID]


def test_missing_observations_are_fetched_and_used(client, fhir_stub):
    _stub_with_record(fhir_stub)
    prefetch = full_prefetch([])  # nothing abnormal in what the EHR sent ...
    del prefetch["observations"]  # ... because it did not send the observations
    resp = client.post(URL, json=hook_request(prefetch=prefetch, fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert "1.30" in card(resp.get_json(), "hypomagnesemia")["summary"]
    [call] = fhir_stub.calls("Observation")
    assert call.query["_sort"] == ["-date"]
    assert "http://loinc.org|19123-9" in call.query["code"][0].split(",")
    assert call.query["date"][0].startswith("ge")


def test_null_prefetch_values_are_fetched(client, fhir_stub):
    _stub_with_record(fhir_stub)
    prefetch = {key: None for key in KEY_TYPES}
    resp = client.post(URL, json=hook_request(prefetch=prefetch, fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)
    assert _fetched_types(fhir_stub) == sorted(KEY_TYPES.values())


def test_operation_outcome_prefetch_values_are_fetched(client, fhir_stub):
    _stub_with_record(fhir_stub)
    prefetch = full_prefetch([])
    prefetch["observations"] = operation_outcome("EHR timed out building the prefetch")
    prefetch["patient"] = operation_outcome("EHR timed out building the prefetch")
    resp = client.post(URL, json=hook_request(prefetch=prefetch, fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)
    assert _fetched_types(fhir_stub) == ["Observation", "Patient"]
    assert fhir_stub.calls("Patient")[0].path == f"Patient/{PATIENT_ID}"


def test_absent_prefetch_fetches_every_key(client, fhir_stub):
    _stub_with_record(fhir_stub)
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)
    assert _fetched_types(fhir_stub) == sorted(KEY_TYPES.values())


def test_operation_outcome_prefetch_without_fhir_server_is_412_with_the_reason(client):
    prefetch = full_prefetch([])
    prefetch["observations"] = operation_outcome()
    resp = client.post(URL, json=hook_request(prefetch=prefetch))
    assert resp.status_code == 412
    assert "OperationOutcome" in outcome_text(resp) and "observations" in outcome_text(resp)


# ---------------------------------------------------------------------------- wrong types
@pytest.mark.parametrize("wrong", ["Observation?patient=p1", ["a", "list"], 17, patient()],
                         ids=["string", "list", "number", "patient-not-bundle"])
def test_wrongly_typed_observations_are_fetched_instead(client, fhir_stub, wrong):
    _stub_with_record(fhir_stub)
    prefetch = full_prefetch([])
    prefetch["observations"] = wrong
    resp = client.post(URL, json=hook_request(prefetch=prefetch, fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert_magnesium_card(resp.get_json(), gaps=False)
    assert _fetched_types(fhir_stub) == ["Observation"]


def test_bundle_where_a_patient_is_expected_is_fetched_instead(client, fhir_stub):
    _stub_with_record(fhir_stub)
    prefetch = full_prefetch([LOW_MG])
    prefetch["patient"] = bundle(patient())
    resp = client.post(URL, json=hook_request(prefetch=prefetch, fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert [c.path for c in fhir_stub.calls()] == [f"Patient/{PATIENT_ID}"]


def test_wrongly_typed_required_key_without_fhir_server_is_412_naming_it(client):
    prefetch = full_prefetch([LOW_MG])
    prefetch["observations"] = patient()
    resp = client.post(URL, json=hook_request(prefetch=prefetch))
    assert resp.status_code == 412
    text = outcome_text(resp)
    assert "observations" in text and "expected Bundle" in text


def test_wrongly_typed_optional_key_without_fhir_server_is_reported_in_the_data_gaps_card(client):
    prefetch = full_prefetch([LOW_MG])
    prefetch["conditions"] = "Condition?patient=p1"
    resp = client.post(URL, json=hook_request(prefetch=prefetch))
    assert resp.status_code == 200
    body = resp.get_json()
    assert_magnesium_card(body, gaps=True)
    gaps = card(body, "data-gaps")
    assert gaps["indicator"] == "info"
    assert "conditions" in gaps["detail"] and "str" in gaps["detail"]


# ---------------------------------------------------------------------------- content of bundles
def test_resource_for_another_patient_is_ignored_and_reported(client):
    other = magnesium("mg-other-patient", 0.9, pid="p2")
    mine = magnesium("mg-mine", 2.0)
    resp = client.post(URL, json=hook_request(prefetch=full_prefetch([other, mine])))
    assert resp.status_code == 200
    body = resp.get_json()
    assert rules_of(body) == ["data-gaps"]  # the other patient's 0.9 mg/dL must not raise a card here
    detail = card(body, "data-gaps")["detail"]
    assert "Observation/mg-other-patient" in detail and "another patient" in detail
    assert "mg-mine" not in detail


def test_other_patient_resource_in_a_fetched_bundle_is_ignored_too(client, fhir_stub):
    fhir_stub.resources[:] = [patient(), magnesium("mg-other-patient", 0.9, pid="p2"), magnesium("mg-mine", 2.0)]
    resp = client.post(URL, json=hook_request(fhir_server=fhir_stub.base_url, token=TOKEN))
    assert resp.status_code == 200
    assert rules_of(resp.get_json()) == ["data-gaps"]
    assert "Observation/mg-other-patient" in card(resp.get_json(), "data-gaps")["detail"]


def test_malformed_entries_are_skipped_and_counted_while_the_rest_is_used(client):
    broken = [
        {"resource": {"resourceType": "Observation", "id": "mg-bad-code", "status": "final", "code": "19123-9",
                      "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 0.8, "unit": "mg/dL"}}},
        {"resource": {"resourceType": "Observation", "id": "mg-no-status",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]}}},
        "not-an-entry",
    ]
    prefetch = full_prefetch()
    prefetch["observations"] = bundle(LOW_MG, raw_entries=broken)
    resp = client.post(URL, json=hook_request(prefetch=prefetch))
    assert resp.status_code == 200
    body = resp.get_json()
    assert_magnesium_card(body, gaps=True)
    assert "1.30" in card(body, "hypomagnesemia")["summary"]  # the bad 0.8 entry was not read as a value
    gaps = card(body, "data-gaps")
    assert "3 entries could not be read" in gaps["summary"]
    assert "Observation/mg-bad-code" in gaps["detail"] and "Observation/mg-no-status" in gaps["detail"]


def test_entered_in_error_observation_never_counts(client):
    wrong = magnesium("mg-eie", 0.8, status="entered-in-error", when="2026-11-24T06:00:00Z")
    resp = client.post(URL, json=hook_request(prefetch=full_prefetch([wrong, magnesium("mg-ok", 2.0)])))
    assert resp.get_json() == {"cards": []}


def test_strict_validation_notes_what_full_r4_rejects_and_still_reads_it(app_factory):
    """CDS_STRICT_VALIDATION: the full R4B model also checks every resource read; a resource it rejects (here an
    element R4 does not have) is named in the data-gaps card, while the lenient reading still uses it."""
    odd = dict(LOW_MG, id="mg-odd", madeUpElement=True)
    prefetch = full_prefetch([odd])
    lenient = app_factory().test_client().post(URL, json=hook_request(prefetch=prefetch)).get_json()
    assert sorted(rules_of(lenient)) == ["femg-needed", "hypomagnesemia"]  # unknown elements are ignored by default
    strict = app_factory(strict_validation=True).test_client().post(URL, json=hook_request(prefetch=prefetch)).get_json()
    assert "hypomagnesemia" in rules_of(strict)
    gaps = card(strict, "data-gaps")
    assert "Observation/mg-odd in observations is not strictly valid R4" in gaps["detail"]
    assert "madeUpElement" in gaps["detail"]
