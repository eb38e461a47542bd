"""Who and what a hook call is about, as the body says it: kept in the audit for every call, also one refused."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CallIdentity:
    """The call's identity as sent (strings only; anything else is left out): hook, hookInstance, the context's
    patientId, userId and encounterId, and fhirServer."""

    hook: str | None = None
    hook_instance: str | None = None
    patient_id: str | None = None
    user_id: str | None = None
    encounter_id: str | None = None
    fhir_server: str | None = None


def identify(body: Any) -> CallIdentity:
    """The identity of a call from its (possibly invalid) JSON body."""
    if not isinstance(body, dict):
        return CallIdentity()
    context = body.get("context")
    if not isinstance(context, dict):
        context = {}

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) else None

    return CallIdentity(hook=text(body.get("hook")), hook_instance=text(body.get("hookInstance")),
                        patient_id=text(context.get("patientId")), user_id=text(context.get("userId")),
                        encounter_id=text(context.get("encounterId")), fhir_server=text(body.get("fhirServer")))
