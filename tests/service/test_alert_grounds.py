"""Issue 16: a warning or critical card needs something abnormal to stand on.

Over the engine's output for every fixture scenario and every generated patient (../shared/data/synthea-r4/), on
every hook: each warning/critical card's facts include an abnormal laboratory result (outside its reference range,
or outside the knowledge's default range when the result has none) or a drafted order (a medication fact with
draft = true). A derived fact's inputs count (FEMg stands on the low serum magnesium it was computed from).
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from bench.burden import synthea_dir
from cds_service import create_app
from cds_service.audit.invocation import Invocation
from cds_service.config import Settings
from cds_service.fixtures import HOOKS, SERVICE_FOR_HOOK, build_request, chart_request, day_after_last_lab, list_scenarios, stored_resources
from cds_service.knowledge import Knowledge
from cds_service.services import get_services
from tests.helpers.env import FIXED_NOW

SYNTHEA_FILES = sorted(synthea_dir().glob("*.json"))
ABNORMAL_CODES = {"L", "LL", "LU", "H", "HH", "HU", "A", "AA", "<", ">"}


@pytest.fixture(scope="module")
def cds(tmp_path_factory, knowledge):
    clock = {"now": FIXED_NOW}
    db = tmp_path_factory.mktemp("grounds") / "audit.sqlite3"
    app = create_app(Settings.from_env(database_url=f"sqlite:///{db}", auth_mode="off", allow_http_fhir=True),
                     knowledge=knowledge, clock=lambda: clock["now"])
    services = get_services(app)
    services.clock = clock
    yield services
    services.store.close()


def _default_range(k: Knowledge, analyte: str, unit: str) -> tuple[float | None, float | None]:
    out = []
    for side in ("low", "high"):
        t = k.model.thresholds.get(f"{analyte}_{side}")
        out.append(float(t.value) if t is not None and t.unit == unit else None)
    return out[0], out[1]


def is_abnormal_lab(k: Knowledge, fact: dict[str, Any]) -> bool:
    """Outside the result's own reference range; with none, outside the knowledge default; or flagged abnormal."""
    value, low, high = fact["value"], fact.get("refLow"), fact.get("refHigh")
    if low is None and high is None:
        low, high = _default_range(k, fact["analyte"], fact["unit"])
    if (low is not None and value < low) or (high is not None and value > high):
        return True
    interpretation = fact.get("interpretation")
    codes = interpretation if isinstance(interpretation, list) else [interpretation]
    return any(isinstance(c, str) and c in ABNORMAL_CODES for c in codes)


def _flatten(facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in facts:
        out.append(f)
        out += _flatten([i for i in f.get("inputs") or () if isinstance(i, dict)])
    return out


def ungrounded(k: Knowledge, inv: Invocation) -> list[str]:
    """The warning/critical cards of one call that have neither an abnormal lab nor a drafted order among their facts."""
    bad = []
    for card in inv.cards:
        if card["indicator"] not in ("warning", "critical"):
            continue
        rule = card["source"]["topic"]["code"]
        facts = _flatten(inv.facts.get(rule, []))
        if any(f["kind"] == "lab" and is_abnormal_lab(k, f) for f in facts):
            continue
        if any(f["kind"] == "medication" and f.get("draft") is True for f in facts):
            continue
        bad.append(f"{rule} ({card['indicator']}): {card['summary']}")
    return bad


def _handle(cds, body: dict[str, Any], hook: str, now: datetime) -> Invocation:
    cds.clock["now"] = now
    outcome = cds.engine.handle(SERVICE_FOR_HOOK[hook], body)
    outcome.response()  # raises when the call failed
    return Invocation(SERVICE_FOR_HOOK[hook], **outcome.audit_fields())


@pytest.mark.parametrize("scenario", list_scenarios(), ids=lambda s: s.id)
def test_fixture_warnings_stand_on_an_abnormal_value_or_a_drafted_order(cds, scenario):
    problems = {}
    for hook in HOOKS:
        inv = _handle(cds, build_request(scenario, hook, cds.catalog, FIXED_NOW), hook, FIXED_NOW)
        if bad := ungrounded(cds.knowledge, inv):
            problems[hook] = bad
    assert problems == {}


def _synthea_bodies(cds, path, now_choice: str):
    resources = stored_resources(json.loads(path.read_text(encoding="utf-8")))
    patient_id = next(r for r in resources if r["resourceType"] == "Patient")["id"]
    now = day_after_last_lab(resources, cds.knowledge.loinc_to_analyte) if now_choice == "their-last-visit" else FIXED_NOW
    for hook in HOOKS:
        yield hook, chart_request(resources, hook, cds.catalog, now, f"grounds-{patient_id}-{hook}"), now


def test_the_generated_patients_are_there():
    assert len(SYNTHEA_FILES) == 16, f"expected the 16 generated patients in {synthea_dir()}"


@pytest.mark.parametrize("path", SYNTHEA_FILES, ids=lambda p: "_".join(p.name.split("_")[:2]))
@pytest.mark.parametrize("now_choice", ["their-last-visit", "fixtures-today"])
def test_generated_patient_warnings_stand_on_an_abnormal_value_or_a_drafted_order(cds, path, now_choice):
    problems = {}
    for hook, body, now in _synthea_bodies(cds, path, now_choice):
        if bad := ungrounded(cds.knowledge, _handle(cds, body, hook, now)):
            problems[hook] = bad
    assert problems == {}


def test_the_check_itself_tells_normal_from_abnormal(cds):
    """The predicate the tests above rely on: a normal magnesium is not a ground, a low one or a flagged one is."""
    k = cds.knowledge
    base = {"kind": "lab", "analyte": "magnesium", "unit": "mg/dL", "refLow": None, "refHigh": None, "interpretation": None}
    assert not is_abnormal_lab(k, {**base, "value": 2.0})
    assert is_abnormal_lab(k, {**base, "value": 1.5})  # below the knowledge default (1.8 mg/dL)
    assert is_abnormal_lab(k, {**base, "value": 2.0, "refLow": 2.1, "refHigh": 2.6})  # below its own range
    assert not is_abnormal_lab(k, {**base, "value": 1.75, "refLow": 1.7, "refHigh": 2.2})  # its own range wins
    assert is_abnormal_lab(k, {**base, "value": 2.0, "interpretation": "H"})
    inv = Invocation("magnesium-patient-view")
    inv.cards = [{"indicator": "warning", "summary": "s", "source": {"topic": {"code": "r"}}}]
    inv.facts = {"r": [{**base, "value": 2.0}, {"kind": "medication", "draft": False}]}
    assert ungrounded(k, inv) == ["r (warning): s"]
    inv.facts = {"r": [{"kind": "derived", "inputs": [{**base, "value": 1.2}]}]}
    assert ungrounded(k, inv) == []
