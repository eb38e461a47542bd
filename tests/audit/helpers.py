"""Helpers for the audit tests: rows from a store, a real local HTTP server in a thread, a trusted issuer."""
from __future__ import annotations

import json
import uuid
from datetime import UTC
from typing import Any

from sqlalchemy import select

from cds_service.audit.schema import FeedbackRow, InvocationRow
from cds_service.services import get_services
from tests.helpers.processes import serve_wsgi as serve  # noqa: F401 (the audit tests' name for it)

PATIENT_VIEW = "magnesium-patient-view"


def bundle(*resources):
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in resources]}


def magnesium(obs_id: str, value: float, patient: str, effective: str = "2026-11-20T08:00:00Z", unit: str = "mg/dL",
              version: str = "1"):
    return {
        "resourceType": "Observation", "id": obs_id, "meta": {"versionId": version}, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]},
        "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": effective,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def patient_view_body(hook_instance: str, mg: float | None = 1.6, patient: str = "p1", **extra):
    """A complete patient-view call with everything prefetched (no FHIR server needed)."""
    obs = [magnesium(f"mg-{hook_instance}", mg, patient)] if mg is not None else []
    body = {
        "hook": "patient-view", "hookInstance": hook_instance,
        "context": {"userId": "Practitioner/dr-1", "patientId": patient, "encounterId": "enc-1"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": patient, "gender": "female", "birthDate": "1960-04-02"},
            "observations": bundle(*obs),
            "medicationRequests": bundle(),
            "medicationStatements": bundle(),
            "conditions": bundle(),
        },
    }
    body.update(extra)
    return body


def rows(app_or_store: Any) -> list[InvocationRow]:
    store = get_services(app_or_store).store if hasattr(app_or_store, "extensions") else app_or_store
    assert store.flush(), "audit queue did not drain"
    with store.sessions() as s:
        return list(s.execute(select(InvocationRow).order_by(InvocationRow.id)).scalars())


def feedback_rows(store: Any) -> list[FeedbackRow]:
    with store.sessions() as s:
        return list(s.execute(select(FeedbackRow).order_by(FeedbackRow.id)).scalars())


def failing_fhir_server(status: int = 503):
    """A real HTTP endpoint that answers every request with ``status`` (an EHR FHIR server having a bad day)."""
    def app(environ, start_response):
        body = json.dumps({"resourceType": "OperationOutcome",
                           "issue": [{"severity": "error", "code": "transient"}]}).encode()
        start_response(f"{status} Service Unavailable", [("Content-Type", "application/fhir+json"),
                                                         ("Content-Length", str(len(body)))])
        return [body]
    return app


ISSUER = "https://ehr.example.org"
_KEY = None


def signing_key():
    """The private EC P-384 key of the test issuer (made once per process)."""
    global _KEY
    if _KEY is None:
        from cryptography.hazmat.primitives.asymmetric import ec

        _KEY = ec.generate_private_key(ec.SECP384R1())
    return _KEY


def client_jwt(audience: str, sub: str = "ehr-client-7") -> str:
    """A CDS Hooks client JWT from the test issuer for ``audience`` (the endpoint URL)."""
    import time

    import jwt

    now = int(time.time())
    claims = {"iss": ISSUER, "sub": sub, "aud": audience, "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, signing_key(), algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


def trusted_issuers_file(tmp_path) -> str:
    """An issuers file trusting the test issuer's EC P-384 public key."""
    from jwt.algorithms import ECAlgorithm

    key = signing_key()
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "ES384"})
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps({"issuers": [{"iss": ISSUER, "jwks": {"keys": [jwk]}}]}))
    return str(path)


def invocation(hook_instance: str, *, service_id: str = PATIENT_VIEW, status: int = 200, latency_ms: float = 10.0,
               received_at=None, cards: list[dict] | None = None, evaluated: list[str] | None = None):
    """An Invocation as the engine fills it (for store-level tests with controlled values)."""
    from datetime import datetime

    from cds_service.audit.invocation import Invocation

    cards = cards or []
    return Invocation(
        service_id=service_id, hook="patient-view", hook_instance=hook_instance, patient_id="p1", user_id="Practitioner/dr-1",
        received_at=received_at or datetime(2026, 11, 25, 12, tzinfo=UTC), latency_ms=latency_ms, status=status,
        knowledge_version="test", rules_evaluated=evaluated if evaluated is not None else [c["source"]["topic"]["code"] for c in cards],
        rules_fired=[c["source"]["topic"]["code"] for c in cards], cards=cards,
        error_code=None if status == 200 else f"e{status}",
    )


def card(uuid_: str, rule: str, indicator: str = "warning", summary: str = "s") -> dict:
    return {"uuid": uuid_, "summary": summary, "indicator": indicator, "detail": "d",
            "source": {"label": "x", "topic": {"system": "urn:test", "code": rule}}}


def write_invocations_in_process(url: str, worker: int, n: int) -> int:
    """Worker body for the multi-process test: its own AuditStore (and migration), n invocations, normal close."""
    from cds_service.audit.store import AuditStore

    store = AuditStore(url)
    for i in range(n):
        store.record_invocation(invocation(f"w{worker}-{i}", cards=[card(f"w{worker}-{i}-c", "hypomagnesemia")]))
    store.close()
    return store.written
