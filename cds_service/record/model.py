"""The typed patient record the rules read: values in canonical units, with their sources."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from .dates import age_in_years


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a fact came from: resource type/id/version (for audit and replay)."""

    resource_type: str
    id: str | None
    version: str | None = None

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}" if self.id else f"{self.resource_type}/(no id)"

    @classmethod
    def of(cls, resource: Any) -> SourceRef:
        """The reference of a parsed resource (record/lean): its type, id and meta.versionId."""
        meta = getattr(resource, "meta", None)
        return cls(type(resource).__name__, getattr(resource, "id", None), meta.versionId if meta else None)

    def to_json(self) -> dict[str, Any]:
        return {"resourceType": self.resource_type, "id": self.id, "versionId": self.version}


@dataclass(frozen=True, slots=True)
class LabResult:
    """One final/amended/corrected Observation of an analyte, converted to the canonical unit."""

    analyte: str
    value: float  # canonical unit
    unit: str  # canonical unit
    original_value: float
    original_unit: str
    effective: datetime
    code: str  # LOINC code as sent
    source: SourceRef
    status: str = "final"
    ref_low: float | None = None  # canonical unit, from the Observation's referenceRange
    ref_high: float | None = None
    interpretation: str | None = None  # first interpretation code (L, LL, H, HH, N, ...)
    comparator: str | None = None  # "<", "<=", ">=", ">" as reported (kept through unit conversion)

    @property
    def censored(self) -> bool:
        """A value reported as a bound ("<0.5"): never an exact number in a formula."""
        return self.comparator is not None

    def to_fact(self) -> dict[str, Any]:
        return {
            "kind": "lab",
            "analyte": self.analyte,
            "value": round(self.value, 4),
            "unit": self.unit,
            "originalValue": self.original_value,
            "originalUnit": self.original_unit,
            "effective": self.effective.isoformat(),
            "code": self.code,
            "status": self.status,
            "refLow": self.ref_low,
            "refHigh": self.ref_high,
            "interpretation": self.interpretation,
            "comparator": self.comparator,
            "source": self.source.to_json(),
        }


@dataclass(frozen=True, slots=True)
class IngredientMatch:
    ingredient: str  # knowledge ingredient id
    classes: tuple[str, ...]
    matched_by: Literal["rxnorm-ingredient", "rxnorm-clinical-drug", "atc", "text"]
    matched_code: str  # the code or the text that matched


@dataclass(frozen=True, slots=True)
class Dose:
    value: float
    unit: str  # as sent (normalised spelling)


@dataclass(frozen=True, slots=True)
class MedicationUse:
    """An active (or drafted) medication, resolved to ingredients and classes."""

    source: SourceRef
    status: str
    label: str
    ingredients: tuple[IngredientMatch, ...]
    start: datetime | None
    route: str | None  # intravenous | subcutaneous | intramuscular | oral | None
    dose: Dose | None = None
    timing: str | None = None  # dosage text / timing code text (e.g. "at night")
    draft: bool = False  # from context.draftOrders
    selected: bool = False  # order-select: among context.selections
    # current (taken now) | on-hold (paused) | ended (completed/stopped) | planned (not started) | draft (draftOrders)
    state: str = "current"
    end: datetime | None = None  # last known date of a course (MedicationStatement effectivePeriod.end)
    intent: str | None = None  # MedicationRequest.intent as sent
    doses_per_day: float | None = None  # from structured Timing.repeat (frequency / period), when stated

    def classes(self) -> set[str]:
        return {c for m in self.ingredients for c in m.classes}

    def has_class(self, cls: str) -> bool:
        return any(cls in m.classes for m in self.ingredients)

    def has_ingredient(self, ingredient: str) -> bool:
        return any(m.ingredient == ingredient for m in self.ingredients)

    @property
    def matched_by_text(self) -> bool:
        return any(m.matched_by == "text" for m in self.ingredients)

    @property
    def drug_name(self) -> str:
        """How cards name the drug: its ingredients, joined by " + " for a combination, else the label as sent."""
        return " + ".join(i.ingredient for i in self.ingredients) or self.label

    def to_fact(self) -> dict[str, Any]:
        return {
            "kind": "medication",
            "label": self.label,
            "status": self.status,
            "draft": self.draft,
            "selected": self.selected,
            "start": self.start.isoformat() if self.start else None,
            "route": self.route,
            "dose": {"value": self.dose.value, "unit": self.dose.unit} if self.dose else None,
            "timing": self.timing,
            "state": self.state,
            "end": self.end.isoformat() if self.end else None,
            "intent": self.intent,
            "dosesPerDay": self.doses_per_day,
            "ingredients": [
                {"ingredient": m.ingredient, "classes": list(m.classes), "matchedBy": m.matched_by, "matchedCode": m.matched_code}
                for m in self.ingredients
            ],
            "source": self.source.to_json(),
        }


@dataclass(frozen=True, slots=True)
class ConditionFact:
    condition: str | None  # knowledge condition id, when the codes match a value set
    label: str
    codes: tuple[tuple[str, str], ...]
    clinical_status: str | None
    onset: datetime | None
    source: SourceRef

    def to_fact(self) -> dict[str, Any]:
        return {
            "kind": "condition",
            "condition": self.condition,
            "label": self.label,
            "codes": [list(c) for c in self.codes],
            "clinicalStatus": self.clinical_status,
            "onset": self.onset.isoformat() if self.onset else None,
            "source": self.source.to_json(),
        }


@dataclass(frozen=True, slots=True)
class DraftService:
    """A drafted ServiceRequest (e.g. a lab order) in context.draftOrders."""

    source: SourceRef
    label: str
    codes: tuple[tuple[str, str], ...]
    selected: bool = False


@dataclass(frozen=True, slots=True)
class DataGap:
    """Something the service could not read: said on cards and in the audit, never guessed."""

    kind: str  # e.g. "prefetch-unavailable", "entry-skipped", "element-dropped", "unit-unknown", "other-patient"
    what: str  # human-readable description
    key: str | None = None  # prefetch key, when it applies

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "what": self.what, "key": self.key}


@dataclass(frozen=True, slots=True)
class UnreadableResult:
    """A result of an analyte the rules read that could not be used (no value, unreadable unit or value)."""

    analyte: str
    effective: datetime
    source: SourceRef
    reason: str

    def to_fact(self) -> dict[str, Any]:
        return {"kind": "unreadable-lab", "analyte": self.analyte, "effective": self.effective.isoformat(),
                "reason": self.reason, "source": self.source.to_json()}


@dataclass
class PatientRecord:
    patient_id: str
    birth_date: date | None = None
    sex: str | None = None  # FHIR administrative gender
    labs: dict[str, list[LabResult]] = field(default_factory=dict)  # newest first
    medications: list[MedicationUse] = field(default_factory=list)  # current (active), not drafted
    # not taken now: on hold, completed or stopped (within the lookback), planned (intended, intent plan/proposal)
    medication_history: list[MedicationUse] = field(default_factory=list)
    draft_medications: list[MedicationUse] = field(default_factory=list)
    draft_services: list[DraftService] = field(default_factory=list)
    conditions: list[ConditionFact] = field(default_factory=list)
    gaps: list[DataGap] = field(default_factory=list)
    # results that could not be read, per analyte, newest first (named on cards that use an older value)
    unreadable: dict[str, list[UnreadableResult]] = field(default_factory=dict)
    # audit-only notes (duplicates counted once, superseded versions): kept in the audit, never on a card
    notes: list[DataGap] = field(default_factory=list)
    # which data families could be read at all (False = could not be obtained)
    available: dict[str, bool] = field(default_factory=dict)

    def results(self, analyte: str) -> list[LabResult]:
        return self.labs.get(analyte, [])

    def latest(self, analyte: str) -> LabResult | None:
        r = self.labs.get(analyte)
        return r[0] if r else None

    def age(self, on: date) -> int | None:
        return age_in_years(self.birth_date, on) if self.birth_date else None

    def note_gap(self, kind: str, what: str, key: str | None = None) -> None:
        self.gaps.append(DataGap(kind, what, key))

    def note(self, kind: str, what: str, key: str | None = None) -> None:
        """An audit-only note (not a data gap: nothing is missing for the rules)."""
        self.notes.append(DataGap(kind, what, key))

    def newer_unreadable(self, analyte: str, than: datetime | None) -> list[UnreadableResult]:
        """Unreadable results of ``analyte`` newer than ``than`` (all of them when ``than`` is None), newest first."""
        return [u for u in self.unreadable.get(analyte, []) if than is None or u.effective > than]
