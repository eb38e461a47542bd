"""The audit record of one hook call (``Invocation``) and the record snapshot it keeps for replay."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..record.model import PatientRecord


@dataclass
class Invocation:
    """Everything the audit store keeps about one call (never tokens)."""

    service_id: str
    hook: str | None = None
    hook_instance: str | None = None
    patient_id: str | None = None
    user_id: str | None = None
    encounter_id: str | None = None
    fhir_server: str | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    evaluated_at: datetime | None = None  # the `now` the rules saw
    latency_ms: float = 0.0
    status: int = 200
    error_code: str | None = None
    error: str | None = None
    knowledge_version: str | None = None
    rules_evaluated: list[str] = field(default_factory=list)
    rules_fired: list[str] = field(default_factory=list)
    rule_errors: dict[str, str] = field(default_factory=dict)
    cards: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # rule id -> facts used
    record_snapshot: dict[str, Any] | None = None  # normalised record, for replay
    prefetch: dict[str, str] = field(default_factory=dict)  # key -> prefetched|fetched|unavailable
    fetch_ms: dict[str, float] = field(default_factory=dict)
    client: str | None = None  # the verified JWT issuer (+ sub, tenant); never the token
    # the built record; serialised to record_snapshot by the audit writer, off the response path
    record: PatientRecord | None = field(default=None, repr=False, compare=False)


def snapshot(rec: PatientRecord) -> dict[str, Any]:
    """The normalised record as JSON: enough to replay every rule without the EHR."""
    return {
        "patientId": rec.patient_id,
        "birthDate": rec.birth_date.isoformat() if rec.birth_date else None,
        "sex": rec.sex,
        "labs": {k: [r.to_fact() for r in v] for k, v in rec.labs.items()},
        "medications": [m.to_fact() for m in rec.medications],
        "draftMedications": [m.to_fact() for m in rec.draft_medications],
        "draftServices": [
            {"source": d.source.to_json(), "label": d.label, "codes": [list(c) for c in d.codes], "selected": d.selected}
            for d in rec.draft_services
        ],
        "conditions": [c.to_fact() for c in rec.conditions],
        "gaps": [g.to_json() for g in rec.gaps],
        "available": rec.available,
        "unreadable": {k: [u.to_fact() for u in v] for k, v in rec.unreadable.items()},
        "notes": [g.to_json() for g in rec.notes],
    }
