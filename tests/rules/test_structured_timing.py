"""Structured dosage timing (Timing.repeat) reaches the dose rules, not only free-text dosage."""
from __future__ import annotations

from cds_service.record.builder import RecordBuilder, ResolvedData
from cds_service.rules.doses import administrations_per_48h
from tests.rules.rules_factory import NOW, K

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _draft(repeat: dict) -> dict:
    return {"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "mgso4-draft", "status": "draft", "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6585", "display": "Magnesium Sulfate"}]},
        "dosageInstruction": [{"route": {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}]},
                               "timing": {"repeat": repeat},
                               "doseAndRate": [{"doseQuantity": {"value": 4, "unit": "g"}}]}],
    }}]}


def _timing(repeat: dict) -> str | None:
    record = RecordBuilder(K, NOW).build("p1", ResolvedData(values={}), draft_orders=_draft(repeat))
    (use,) = record.draft_medications
    assert use.route == "intravenous" and use.has_ingredient("magnesium sulfate")
    return use.timing


def test_every_six_hours():
    timing = _timing({"frequency": 1, "period": 6, "periodUnit": "h"})
    assert timing == "every 6 hours"
    assert administrations_per_48h(timing) == 8  # 48 h / 6 h


def test_twice_a_day():
    timing = _timing({"frequency": 2, "period": 1, "periodUnit": "d"})
    assert timing == "every 12 hours"
    assert administrations_per_48h(timing) == 4


def test_a_unit_the_dose_rules_cannot_use_gives_no_frequency():
    assert _timing({"frequency": 1, "period": 1, "periodUnit": "mo"}) is None
