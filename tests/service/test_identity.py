"""A call's identity, taken from its body by one function (the engine's calls and the HTTP layer's 404s)."""
from __future__ import annotations

from cds_service.protocol.identity import CallIdentity, identify
from tests.helpers.fhir import hook_request


def test_identity_of_a_valid_call():
    body = hook_request(fhir_server="https://ehr.test/fhir", hook_instance="hi-1")
    body["context"]["encounterId"] = "enc-1"
    assert identify(body) == CallIdentity(hook="patient-view", hook_instance="hi-1", patient_id="p1",
                                          user_id="Practitioner/prac-1", encounter_id="enc-1",
                                          fhir_server="https://ehr.test/fhir")


def test_identity_keeps_strings_only():
    body = {"hook": 7, "hookInstance": "hi-2", "context": {"patientId": ["p1"], "userId": None, "encounterId": {}},
            "fhirServer": 3}
    assert identify(body) == CallIdentity(hook_instance="hi-2")
    assert identify({"hook": "patient-view", "context": "not an object"}) == CallIdentity(hook="patient-view")
    for junk in (None, [], "text", 5):
        assert identify(junk) == CallIdentity()
