"""Builders for FHIR R4 test resources, CDS Hooks requests, and response checks."""
from __future__ import annotations

import copy
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PATIENT_ID = "p1"
HOOKS = {
    "magnesium-patient-view": "patient-view",
    "magnesium-order-select": "order-select",
    "magnesium-order-sign": "order-sign",
}
PREFETCH_KEYS = ("patient", "observations", "medicationRequests", "medicationStatements", "conditions")
# prefetch key -> the resource type its template queries
KEY_TYPES = {
    "patient": "Patient",
    "observations": "Observation",
    "medicationRequests": "MedicationRequest",
    "medicationStatements": "MedicationStatement",
    "conditions": "Condition",
}


def patient(pid: str = PATIENT_ID, birth_date: str = "1958-03-14", gender: str = "female") -> dict:
    return {"resourceType": "Patient", "id": pid, "birthDate": birth_date, "gender": gender}


def magnesium(oid: str, value: float, unit: str = "mg/dL", when: str = "2026-11-20T08:00:00Z",
              pid: str = PATIENT_ID, status: str = "final", loinc: str = "19123-9") -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": loinc, "display": "Magnesium"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def bundle(*resources: dict, next_url: str | None = None, raw_entries: list | None = None) -> dict:
    entries: list[Any] = [{"fullUrl": f"urn:uuid:{r.get('resourceType')}-{r.get('id')}", "resource": r} for r in resources]
    entries.extend(raw_entries or [])
    out: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    if next_url:
        out["link"] = [{"relation": "next", "url": next_url}]
    return out


def operation_outcome(text: str = "not available") -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception", "diagnostics": text}]}


def full_prefetch(observations: list[dict] | None = None, pid: str = PATIENT_ID) -> dict:
    """A complete prefetch for every key of the three services."""
    return {
        "patient": patient(pid),
        "observations": bundle(*(observations or [])),
        "medicationRequests": bundle(),
        "medicationStatements": bundle(),
        "conditions": bundle(),
    }


def draft_orders(pid: str = PATIENT_ID) -> dict:
    order = {
        "resourceType": "MedicationRequest",
        "id": "draft-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": {"text": "acetaminophen 500 mg oral tablet"},
    }
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}


def hook_request(service_id: str = "magnesium-patient-view", *, prefetch: dict | None = None, fhir_server: str | None = None,
                 token: str | None = None, pid: str = PATIENT_ID, hook_instance: str = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                 **extra: Any) -> dict:
    """A valid CDS Hooks 2.0 request for ``service_id`` with the context its hook requires."""
    hook = HOOKS[service_id]
    context: dict[str, Any] = {"userId": "Practitioner/prac-1", "patientId": pid}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = draft_orders(pid)
    if hook == "order-select":
        context["selections"] = ["MedicationRequest/draft-1"]
    body: dict[str, Any] = {"hook": hook, "hookInstance": hook_instance, "context": context}
    if prefetch is not None:
        body["prefetch"] = copy.deepcopy(prefetch)
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
    if token is not None:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "user/Patient.read user/Observation.read", "subject": "cds-magnesium"}
    body.update(extra)
    return body


def rules_of(response_json: dict) -> list[str]:
    """The rule ids (card source.topic.code) of a CDS Hooks response, in order."""
    return [c["source"]["topic"]["code"] for c in response_json["cards"]]


def card(response_json: dict, rule: str) -> dict:
    found = [c for c in response_json["cards"] if c["source"]["topic"]["code"] == rule]
    assert len(found) == 1, f"expected one {rule} card, got rules {rules_of(response_json)}"
    return found[0]


def outcome_text(resp: Any) -> str:
    """All diagnostics and expressions of an OperationOutcome response, as one string."""
    body = resp.get_json(force=True)
    parts = []
    for issue in body["issue"]:
        parts.append(issue.get("diagnostics", ""))
        parts.extend(issue.get("expression", []))
    return "\n".join(parts)


def assert_outcome(resp: Any, status: int, error_code: str | None = None, mentions: str | None = None) -> dict:
    """``resp`` is ``status`` with a FHIR OperationOutcome body (optionally with our stable error code / a text)."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:500])
    assert resp.mimetype == "application/fhir+json"
    body = resp.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], "an OperationOutcome needs at least one issue"
    for issue in body["issue"]:
        assert issue["severity"] in ("fatal", "error", "warning", "information")
        assert isinstance(issue["code"], str) and issue["code"]
        assert issue.get("diagnostics")
    if error_code is not None:
        codes = {c["code"] for i in body["issue"] for c in i.get("details", {}).get("coding", [])}
        assert error_code in codes, codes
    if mentions is not None:
        assert mentions in outcome_text(resp), outcome_text(resp)
    return body


def assert_magnesium_card(response_json: dict, *, gaps: bool) -> None:
    """A low-magnesium card came back (other rules may add cards); a data-gaps card iff ``gaps``."""
    rules = rules_of(response_json)
    assert {"hypomagnesemia", "refractory-hypomagnesemia"} & set(rules), rules
    assert ("data-gaps" in rules) is gaps, rules
