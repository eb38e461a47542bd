"""Synthetic but realistic patient-view requests of a chosen size (deterministic for a seed).

Observations use LOINC codes from the knowledge value sets in mixed units, plus results for
analytes the service does not read, old results beyond the lookback, a few entered-in-error
ones; medications and conditions grow in proportion (1 of each kind per 20 Observations).
"""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # same "today" as the test fixtures
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"

# (loinc, display, unit, low, high, value range)
READ = [
    ("19123-9", "Magnesium [Mass/volume] in Serum or Plasma", "mg/dL", 1.8, 2.4, (0.9, 2.3)),
    ("2601-3", "Magnesium [Moles/volume] in Serum or Plasma", "mmol/L", 0.74, 1.0, (0.4, 0.95)),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, (2.8, 4.8)),
    ("22760-3", "Potassium [Mass/volume] in Serum or Plasma", "mg/dL", 13.7, 19.9, (11.0, 19.0)),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 8.5, 10.5, (7.2, 10.1)),
    ("2000-8", "Calcium [Moles/volume] in Serum or Plasma", "mmol/L", 2.12, 2.62, (1.8, 2.5)),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.2, (0.7, 1.6)),
    ("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "umol/L", 53, 106, (60, 140)),
    ("19124-7", "Magnesium [Mass/volume] in Urine", "mg/dL", None, None, (2.0, 12.0)),
    ("2161-8", "Creatinine [Mass/volume] in Urine", "mg/dL", None, None, (40, 180)),
    ("98979-8", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] by CKD-EPI 2021", "mL/min/{1.73_m2}",
     60, None, (35, 95)),
    ("29463-7", "Body weight", "kg", None, None, (55, 95)),
    ("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", 3.5, 5.0, (2.8, 4.6)),
]
OTHER = [  # analytes the service does not read
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 99, (70, 180)),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12, 16, (9, 15)),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4.5, 11, (3, 14)),
    ("8867-4", "Heart rate", "/min", None, None, (55, 110)),
]
MEDS = [
    ("310429", "furosemide 20 MG Oral Tablet", "oral"),
    ("198211", "omeprazole 20 MG Delayed Release Oral Capsule", "oral"),
    ("311945", "magnesium oxide 400 MG Oral Tablet", "oral"),
    ("197770", "lisinopril 10 MG Oral Tablet", "oral"),
    ("314076", "lisinopril 5 MG Oral Tablet", "oral"),
    ("860975", "metformin hydrochloride 500 MG Oral Tablet", "oral"),
]
CONDITIONS = [
    (SNOMED, "190855004", "Hypomagnesemia"),
    (ICD10, "E87.6", "Hypokalemia"),
    (SNOMED, "38341003", "Hypertensive disorder"),
    (SNOMED, "44054006", "Diabetes mellitus type 2"),
    (ICD10, "K52.9", "Noninfective gastroenteritis and colitis, unspecified"),
]


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def observation(i: int, patient_id: str, rnd: random.Random) -> dict[str, Any]:
    pick = rnd.random()
    code, display, unit, low, high, (vmin, vmax) = rnd.choice(OTHER if pick < 0.3 else READ)
    # 15 % beyond the 365-day lookback, the rest spread over the year
    days = rnd.uniform(366, 900) if rnd.random() < 0.15 else rnd.uniform(0, 360)
    when = NOW - timedelta(days=days, minutes=rnd.randint(0, 600))
    status = "entered-in-error" if rnd.random() < 0.02 else rnd.choice(("final", "final", "final", "amended"))
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"obs-{i}",
        "meta": {"versionId": "1", "lastUpdated": _iso(when + timedelta(hours=2))},
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory", "display": "Laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display.split(" [")[0]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": _iso(when),
        "issued": _iso(when + timedelta(hours=1)),
        "valueQuantity": {"value": round(rnd.uniform(vmin, vmax), 2), "unit": unit, "system": UCUM, "code": unit},
    }
    add_reference_range(obs, low, high, unit)
    return obs


def medication(i: int, kind: str, patient_id: str, rnd: random.Random) -> dict[str, Any]:
    rxcui, name, route = rnd.choice(MEDS)
    start = NOW - timedelta(days=rnd.randint(10, 800))
    dosage = [{"text": f"{name.split(' ')[0]} once daily", "timing": {"code": {"text": "QD"}},
               "route": {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]},
               "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}]
    res: dict[str, Any] = {
        "resourceType": kind,
        "id": f"{'mr' if kind == 'MedicationRequest' else 'ms'}-{i}",
        "meta": {"versionId": "1"},
        "status": rnd.choice(("active", "active", "active", "on-hold")),
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxcui, "display": name}], "text": name},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if kind == "MedicationRequest":
        res.update(intent="order", authoredOn=_iso(start), dosageInstruction=dosage)
    else:
        res.update(effectivePeriod={"start": _iso(start)}, dateAsserted=_iso(start), dosage=dosage)
    return res


def condition(i: int, patient_id: str, rnd: random.Random) -> dict[str, Any]:
    system, code, display = rnd.choice(CONDITIONS)
    return {
        "resourceType": "Condition",
        "id": f"cond-{i}",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{patient_id}"},
        "onsetDateTime": _iso(NOW - timedelta(days=rnd.randint(30, 2000))),
        "recordedDate": _iso(NOW - timedelta(days=rnd.randint(1, 29))),
    }


def bundle(resources: list[dict[str, Any]], base: str = "http://ehr.example.org/fhir") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                      for r in resources]}


def patient(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "meta": {"versionId": "1"}, "birthDate": "1958-04-12",
            "gender": "female", "name": [{"family": "Benchmark", "given": ["Ada"]}]}


def resources(n_observations: int, patient_id: str = "bench-1", seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """The patient's resources by prefetch key."""
    rnd = random.Random(seed * 100003 + n_observations)
    n_other = max(1, n_observations // 20)
    return {
        "patient": [patient(patient_id)],
        "observations": [observation(i, patient_id, rnd) for i in range(n_observations)],
        "medicationRequests": [medication(i, "MedicationRequest", patient_id, rnd) for i in range(n_other)],
        "medicationStatements": [medication(i, "MedicationStatement", patient_id, rnd) for i in range(n_other)],
        "conditions": [condition(i, patient_id, rnd) for i in range(n_other)],
    }


def patient_view_request(n_observations: int, patient_id: str = "bench-1", seed: int = 7,
                         hook_instance: str = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea") -> dict[str, Any]:
    """A CDS Hooks patient-view call with every prefetch key filled."""
    res = resources(n_observations, patient_id, seed)
    prefetch: dict[str, Any] = {"patient": res.pop("patient")[0]}
    prefetch.update({k: bundle(v) for k, v in res.items()})
    return {
        "hook": "patient-view",
        "hookInstance": hook_instance,
        "fhirServer": "http://ehr.example.org/fhir",
        "context": {"userId": "Practitioner/bench", "patientId": patient_id},
        "prefetch": prefetch,
    }


def add_reference_range(obs: dict[str, Any], low: float | None, high: float | None, unit: str) -> None:
    """The lab's referenceRange and the L/H/N interpretation of the value against it (nothing when no range)."""
    if low is None and high is None:
        return
    rr: dict[str, Any] = {}
    if low is not None:
        rr["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
    if high is not None:
        rr["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
    obs["referenceRange"] = [rr]
    v = obs["valueQuantity"]["value"]
    flag = "L" if low is not None and v < low else "H" if high is not None and v > high else "N"
    obs["interpretation"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": flag}]}]
