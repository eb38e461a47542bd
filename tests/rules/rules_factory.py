"""Hand-built records for pure rule tests: labs in any unit (converted by the real converter), medications
resolved to knowledge ingredients, and a RuleContext at the fixtures' fixed "today"."""
from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

from cds_service.knowledge import load_knowledge
from cds_service.record.model import Dose, DraftService, IngredientMatch, LabResult, MedicationUse, PatientRecord, SourceRef
from cds_service.record.units import convert
from cds_service.rules import RULES_BY_ID
from cds_service.rules.base import RuleContext

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
K = load_knowledge()
_ids = itertools.count(1)


def ago(days: float = 0, hours: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


def lab(analyte: str, value: float, unit: str | None = None, at: datetime | None = None, ref_low: float | None = None,
        ref_high: float | None = None, rid: str | None = None, comparator: str | None = None) -> LabResult:
    """A final result; ``value``/``ref_*`` in ``unit`` (default canonical), converted explicitly like the builder does;
    ``comparator`` ('<', '<=', '>=', '>') makes it a censored result as reported."""
    a = K.model.analytes[analyte]
    unit = unit or a.canonical_unit

    def conv(v: float | None) -> float | None:
        return None if v is None else convert(v, unit, a)

    code = a.codes[0].code
    return LabResult(analyte=analyte, value=conv(value), unit=a.canonical_unit, original_value=value, original_unit=unit,
                     effective=at or ago(1), code=code, source=SourceRef("Observation", rid or f"obs-{next(_ids)}"),
                     ref_low=conv(ref_low), ref_high=conv(ref_high), comparator=comparator)


def med(ingredient: str, label: str | None = None, start: datetime | None = None, route: str | None = None,
        dose: tuple[float, str] | None = None, timing: str | None = None, draft: bool = False, selected: bool = False,
        by_text: bool = False, rid: str | None = None, resource_type: str = "MedicationRequest") -> MedicationUse:
    ing = K.model.ingredients[ingredient]
    how = "text" if by_text else "rxnorm-ingredient"
    match = IngredientMatch(ingredient, tuple(ing.classes), how, label or ingredient if by_text else (ing.rxcui or ""))
    return MedicationUse(source=SourceRef(resource_type, rid or f"med-{next(_ids)}"), status="draft" if draft else "active",
                         label=label or ingredient.capitalize(), ingredients=(match,), start=start, route=route,
                         dose=Dose(*dose) if dose else None, timing=timing, draft=draft, selected=selected)


def record(*labs: LabResult, meds=(), drafts=(), services=(), conditions=(), sex: str | None = "female",
           birth: date | None = date(1960, 5, 1), available=None) -> PatientRecord:
    rec = PatientRecord(patient_id="p1", birth_date=birth, sex=sex)
    for r in labs:
        rec.labs.setdefault(r.analyte, []).append(r)
    for v in rec.labs.values():
        v.sort(key=lambda r: r.effective, reverse=True)
    rec.medications = list(meds)
    rec.draft_medications = list(drafts)
    rec.draft_services = list(services)
    rec.conditions = list(conditions)
    rec.available = dict(available or {})
    return rec


def drafted_test(code: str) -> DraftService:
    return DraftService(SourceRef("ServiceRequest", f"sr-{next(_ids)}"), code, (("http://loinc.org", code),))


def ctx(rec: PatientRecord, hook: str = "patient-view", now: datetime = NOW) -> RuleContext:
    return RuleContext(record=rec, knowledge=K, now=now, hook=hook)


def run(rule_id: str, rec: PatientRecord, hook: str = "patient-view"):
    """Evaluate one rule as the engine would: only when it applies to the hook."""
    rule = RULES_BY_ID[rule_id]
    c = ctx(rec, hook)
    return rule.evaluate(c) if rule.applies(c) else None


def normal_kidneys() -> tuple[LabResult, LabResult]:
    """Creatinine 0.8 mg/dL and 70 kg: a 66-year-old woman's Cockcroft-Gault is about 76 mL/min."""
    return lab("creatinine", 0.8, at=ago(2)), lab("weight", 70, at=ago(2))


def failing_kidneys() -> tuple[LabResult, LabResult]:
    """Creatinine 4.0 mg/dL and 60 kg: (140-66) x 60 / (72 x 4.0) x 0.85 = 13.1 mL/min."""
    return lab("creatinine", 4.0, at=ago(2)), lab("weight", 60, at=ago(2))
