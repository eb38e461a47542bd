"""Resources from real EHRs deviate from R4 in small ways: read what can be read safely, drop only what cannot be
interpreted, and say so (data-gaps card and log) — never drop a whole resource for a detail."""
from __future__ import annotations

import logging

from tests.helpers.fhir import bundle, card, full_prefetch, hook_request, rules_of

URL = "/cds-services/magnesium-patient-view"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _low_mg(**changes) -> dict:
    obs = {
        "resourceType": "Observation", "id": "mg-dev", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "19123-9"}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-11-23T07:00:00Z",
        "valueQuantity": {"value": 1.4, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
    }
    obs.update(changes)
    return obs


def _post(client, observations, medication_requests=()):
    prefetch = full_prefetch(observations)
    prefetch["medicationRequests"] = bundle(*medication_requests)
    resp = client.post(URL, json=hook_request(prefetch=prefetch))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_a_single_object_where_r4_wants_a_list_stray_whitespace_and_unknown_elements_are_read(client):
    odd = _low_mg(
        code={"coding": {"system": f" {LOINC} ", "code": " 19123-9\n"}},  # one Coding, not a list; padded strings
        status=" final ",
        referenceRange={"low": {"value": 1.7, "unit": "mg/dL"}, "high": {"value": 2.2, "unit": "mg/dL"}},  # object
        vendorExtensionField={"anything": [1, 2, 3]},  # not an R4 element
    )
    body = _post(client, [odd])
    low = card(body, "hypomagnesemia")
    assert "1.40 mg/dL" in low["summary"]
    assert "lower limit 1.70 mg/dL (the lab's reference range)" in low["detail"]  # the single referenceRange object was read
    assert "data-gaps" not in rules_of(body)  # nothing had to be dropped


def test_an_unreadable_optional_element_is_dropped_and_said_while_the_result_counts(client, caplog):
    odd = _low_mg(interpretation=[{"coding": "L"}], effectivePeriod="yesterday")
    with caplog.at_level(logging.INFO, logger="cds_service.record.builder"):
        body = _post(client, [odd])
    assert "1.40 mg/dL" in card(body, "hypomagnesemia")["summary"]
    gaps = card(body, "data-gaps")["detail"]
    assert "Observation/mg-dev in observations: unreadable element(s) ignored" in gaps
    assert "effectivePeriod" in gaps
    assert any("without unreadable element(s)" in r.getMessage() and "Observation/mg-dev" in r.getMessage()
               for r in caplog.records)


def test_a_medication_with_an_unreadable_dosage_still_counts_as_a_wasting_drug(client):
    furosemide = {
        "resourceType": "MedicationRequest", "id": "mr-furo", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p1"}, "authoredOn": "2026-09-01",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "4603", "display": "furosemide"}]},
        "dosageInstruction": "40 mg twice a day",  # a string where R4 wants Dosage objects
    }
    body = _post(client, [_low_mg()], [furosemide])
    assert "furosemide" in card(body, "magnesium-wasting-drug")["detail"].lower()
    assert "MedicationRequest/mr-furo in medicationRequests: unreadable element(s) ignored" in card(body, "data-gaps")["detail"]


def test_what_cannot_be_interpreted_drops_only_that_resource(client):
    no_code = _low_mg(id="mg-no-code", code="19123-9")  # a bare string: which analyte cannot be known
    body = _post(client, [no_code, _low_mg(id="mg-fine", effectiveDateTime="2026-11-20T07:00:00Z")])
    assert "Observation/mg-fine" in card(body, "hypomagnesemia")["detail"]
    gaps = card(body, "data-gaps")["detail"]
    assert "Observation/mg-no-code in observations" in gaps and "cannot be read" in gaps
