"""Generated sample patients (Synthea, ../shared/data/synthea-r4/, read in place, never copied): data the service was not
written for goes through every hook without an error or a parsing gap, and their medications resolve to the
right ingredients."""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import pytest

from bench.burden import synthea_dir
from cds_service import create_app
from cds_service.config import Settings
from cds_service.definitions import load_definitions
from cds_service.fixtures import (
    HOOKS,
    SERVICE_FOR_HOOK,
    chart_request,
    day_after_last_lab,
    hook_context,
    prefetch_for,
    stored_resources,
)
from cds_service.knowledge import RXNORM, load_knowledge
from cds_service.record.builder import RecordBuilder, ResolvedData
from cds_service.services import get_services
from tests.helpers.env import FIXED_NOW

REPO = Path(__file__).resolve().parents[2]


SYNTHEA = synthea_dir()
FILES = sorted(SYNTHEA.glob("*.json"))
# RxNorm clinical-drug codes in these patients -> the knowledge ingredients they must resolve to.
# Every other medication code in the files must resolve to nothing (none is a drug the rules care about).
EXPECTED_INGREDIENTS = {
    "1719286": {"furosemide"},  # 10 ML Furosemide 10 MG/ML Injection
    "315971": {"furosemide"},  # "Lasix 40mg"
    "316049": {"hydrochlorothiazide"},  # Hydrochlorothiazide 25 MG
    "316052": {"hydrochlorothiazide"},  # Hydrochlorothiazide 6.25 MG
    "1736854": {"cisplatin"},  # Cisplatin 50 MG Injection
    "835900": {"cyclosporine"},  # cycloSPORINE 50 MG Oral Capsule
    "197604": set(),  # Digoxin 0.125 MG Oral Tablet: not a magnesium drug
}


@lru_cache(maxsize=1)
def _knowledge():
    return load_knowledge()


def _load(path: Path) -> tuple[str, list[dict]]:
    resources = stored_resources(json.loads(path.read_text(encoding="utf-8")))
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    return patient["id"], resources


def _clock_for(resources: list[dict]) -> datetime:
    """The day after the patient's last Observation the service reads, so that their labs fall inside the lookback."""
    now = day_after_last_lab(resources, _knowledge().loinc_to_analyte)
    assert now is not None, "a generated patient without a lab the service reads"
    return now


def test_the_sample_patients_are_there():
    assert len(FILES) == 16, f"expected the 16 Synthea patients in {SYNTHEA}"


@pytest.fixture(scope="module")
def clock():
    return {"now": FIXED_NOW}


@pytest.fixture(scope="module")
def app(tmp_path_factory, clock, knowledge):
    db = tmp_path_factory.mktemp("synthea") / "audit.sqlite3"
    application = create_app(Settings.from_env(database_url=f"sqlite:///{db}", auth_mode="off", allow_http_fhir=True),
                             knowledge=knowledge, clock=lambda: clock["now"])
    application.config["TESTING"] = True
    yield application
    get_services(application).store.close()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name.split("_")[0] + "_" + p.name.split("_")[1])
@pytest.mark.parametrize("as_of", ["their-last-visit", "fixtures-today"])
def test_every_hook_answers_without_parsing_gaps(app, client, clock, path, as_of):
    patient_id, resources = _load(path)
    now = _clock_for(resources) if as_of == "their-last-visit" else FIXED_NOW
    clock["now"] = now
    catalog = get_services(app).catalog
    read_labs = 0
    for hook in HOOKS:
        service = catalog.get(SERVICE_FOR_HOOK[hook])
        body = chart_request(resources, hook, catalog, now, f"synthea-{patient_id}-{hook}-{as_of}")
        read_labs += len(body["prefetch"]["observations"]["entry"])
        resp = client.post(f"/cds-services/{service.id}", json=body)
        assert resp.status_code == 200, resp.get_json()
        cards = resp.get_json()["cards"]
        gap_lines = [line[2:] for c in cards if c["source"]["topic"]["code"] == "data-gaps"
                     for line in c["detail"].splitlines() if line.startswith("- ")]
        # (6 of these patients have eGFR results labelled "mL/min": read as indexed, per the knowledge file)
        assert gap_lines == []
    if as_of == "their-last-visit":
        assert read_labs > 0, "the lookback at their last visit should include some of their labs"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name.split("_")[0] + "_" + p.name.split("_")[1])
def test_medications_resolve_to_the_right_ingredients(path):
    knowledge = _knowledge()
    catalog = load_definitions(Settings().hooks_dir, knowledge)
    patient_id, resources = _load(path)
    now = _clock_for(resources)
    service = catalog.get("magnesium-patient-view")
    values = prefetch_for(service, catalog, resources, hook_context(patient_id, "patient-view"), now, honour_filters=False)
    data = ResolvedData(values=values, key_types={k: p.resource_type for k, p in service.prefetch.items()})
    every_order = {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources if r["resourceType"] == "MedicationRequest"]}
    # every MedicationRequest read as a draft (any status), to see how each one resolves
    record = RecordBuilder(knowledge, now).build(patient_id, data, draft_orders=every_order)
    assert [g.what for g in record.gaps] == []
    assert len(record.draft_medications) == every_order["entry"].__len__()
    for use, entry in zip(record.draft_medications, every_order["entry"], strict=True):
        code = next(c["code"] for c in entry["resource"]["medicationCodeableConcept"]["coding"] if c["system"] == RXNORM)
        got = {m.ingredient for m in use.ingredients}
        assert got == EXPECTED_INGREDIENTS.get(code, set()), f"{code} {use.label!r} resolved to {got}"
        if code in EXPECTED_INGREDIENTS and got:
            assert all(m.matched_by == "rxnorm-clinical-drug" for m in use.ingredients), use.ingredients
    # what the rules see as active (no drafts this time): only the active orders, never the stopped ones
    plain = RecordBuilder(knowledge, now).build(patient_id, data)
    active_ids = {r["id"] for r in resources if r["resourceType"] == "MedicationRequest" and r["status"] == "active"}
    assert {m.source.id for m in plain.medications} == active_ids


def test_the_expected_codes_occur_in_the_sample_patients():
    """Guards the table above against going stale: each code it names is in the data."""
    seen = set()
    for path in FILES:
        for r in stored_resources(json.loads(path.read_text(encoding="utf-8"))):
            if r["resourceType"] == "MedicationRequest":
                seen.update(c["code"] for c in r["medicationCodeableConcept"]["coding"])
    assert set(EXPECTED_INGREDIENTS) <= seen
