"""Every card every rule can produce passes the CDS Hooks 2.0 card rules, with cited source and topic."""
from __future__ import annotations

import json

import pytest

from cds_service.cards import build_card
from cds_service.decide import evaluate_rules
from cds_service.rules import RULES
from tests.rules.rules_factory import K, ago, ctx, failing_kidneys, lab, med, normal_kidneys, record

INDICATORS = {"info", "warning", "critical"}
ACTION_TYPES = {"create", "update", "delete"}


def scenarios():
    """(name, record, hook): together they make every registered rule fire at least once."""
    refractory = record(
        lab("magnesium", 1.1, at=ago(1)), lab("magnesium", 1.3, at=ago(6)), lab("potassium", 3.0, at=ago(1)),
        lab("potassium", 3.1, at=ago(5)), lab("calcium", 7.8, at=ago(1)), lab("calcium", 7.9, at=ago(5)), *failing_kidneys(),
        meds=[med("magnesium oxide", start=ago(90), dose=(400, "mg"), timing="twice daily"),
              med("potassium chloride", start=ago(30)), med("calcium carbonate", start=ago(30)),
              med("furosemide", start=ago(400)), med("omeprazole", label="omeprazole 40mg", by_text=True, start=ago(800))],
        drafts=[med("magnesium sulfate", route="intravenous", dose=(6, "g"), timing="every 12 hours", draft=True, rid="mg-iv"),
                med("hydrochlorothiazide", draft=True, rid="hctz"), med("potassium chloride", draft=True, rid="kcl"),
                med("alfacalcidol", dose=(0.25, "ug"), draft=True, rid="alfa")])
    renal_wasting = record(lab("urine_magnesium", 10, at=ago(1)), lab("urine_creatinine", 100, at=ago(1)),
                           lab("magnesium", 1.4, at=ago(1)), lab("creatinine", 0.8, at=ago(1)), lab("weight", 70, at=ago(2)))
    extrarenal = record(lab("urine_magnesium", 1, at=ago(1)), lab("urine_creatinine", 100, at=ago(1)),
                        lab("magnesium", 1.4, at=ago(1)), lab("creatinine", 0.8, at=ago(1)), lab("weight", 70, at=ago(2)))
    gap = record(*normal_kidneys(), meds=[med("pantoprazole", start=ago(400))])  # a PPI for more than a year
    plain_low = record(lab("magnesium", 1.6), *normal_kidneys())
    high = record(lab("magnesium", 4.4), *failing_kidneys(),
                  drafts=[med("magnesium oxide", dose=(400, "mg"), timing="twice daily", draft=True, rid="mgo")])
    child = record(lab("magnesium", 1.0), lab("creatinine", 0.4), lab("height", 120, at=ago(10)),
                   drafts=[med("potassium chloride", draft=True, rid="kcl-child")], birth=ago(3000).date())
    normal = record(lab("magnesium", 2.0), lab("potassium", 4.2), *normal_kidneys(), meds=[med("magnesium oxide", start=ago(20))])
    return [
        ("refractory, patient-view", refractory, "patient-view"),
        ("refractory, order-sign", refractory, "order-sign"),
        ("refractory, order-select", refractory, "order-select"),
        ("renal wasting", renal_wasting, "patient-view"),
        ("extrarenal", extrarenal, "patient-view"),
        ("monitoring gap", gap, "patient-view"),
        ("plain low", plain_low, "patient-view"),
        ("high, order-sign", high, "order-sign"),
        ("high, patient-view", high, "patient-view"),
        ("child, order-sign", child, "order-sign"),
        ("normal", normal, "patient-view"),
    ]


def all_cards():
    out = []
    for name, rec, hook in scenarios():
        findings, _, errors = evaluate_rules(ctx(rec, hook))
        assert errors == {}, f"{name}: rule errors {errors}"
        out += [(name, f, build_card(f, f"hook-instance-{name}", K)) for f in findings]
    return out


CARDS = all_cards()


def test_every_rule_fires_in_some_scenario():
    fired = {f.rule for _, f, _ in CARDS}
    assert fired == {r.id for r in RULES}


def test_a_normal_patient_gets_no_cards():
    assert [f.rule for name, f, _ in CARDS if name == "normal"] == []


@pytest.mark.parametrize("name, finding, card", CARDS, ids=[f"{n}:{f.rule}" for n, f, _ in CARDS])
def test_card_follows_cds_hooks_2(name, finding, card):
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
    assert card["indicator"] in INDICATORS
    src = card["source"]
    assert src["label"] and src["url"].startswith("https://")
    assert src["topic"] == {"system": K.topic_system, "code": finding.rule, "display": finding.rule.replace("-", " ")}
    assert finding.source in K.model.sources
    assert isinstance(card["detail"], str) and "Knowledge version" in card["detail"]
    assert ("suggestions" in card) == ("selectionBehavior" in card)
    if "suggestions" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any")
        for s in card["suggestions"]:
            assert s["label"] and s["uuid"]
            for a in s.get("actions", []):
                assert a["type"] in ACTION_TYPES and a["description"]
                if a["type"] == "delete":
                    assert a["resourceId"].startswith("MedicationRequest/") and "resource" not in a
                else:
                    assert a["resource"]["resourceType"] in ("ServiceRequest", "MedicationRequest")
                    assert a["resource"]["subject"] == {"reference": "Patient/p1"}
    if card["indicator"] in ("warning", "critical"):
        assert card["overrideReasons"], "warnings carry override reasons"
        for o in card["overrideReasons"]:
            assert o["code"] and o["display"] and o["system"].startswith("https://")
    json.dumps(card)  # serialisable as sent


@pytest.mark.parametrize("name, finding, card", CARDS, ids=[f"{n}:{f.rule}" for n, f, _ in CARDS])
def test_card_states_values_dates_and_evidence(name, finding, card):
    assert finding.facts, "facts = the normalised evidence"
    kinds = {x["kind"] for x in finding.facts}
    assert kinds <= {"lab", "medication", "derived", "condition", "kidney-assessment"}
    for fact in finding.facts:
        if fact["kind"] == "lab":
            assert fact["effective"][:10] in card["detail"], f"{finding.rule}: date of {fact['source']['id']} not shown"
        if fact["kind"] == "derived":
            assert fact["formula"].split(":")[0] in card["detail"]


def test_one_card_per_rule_per_call_and_deterministic_uuids():
    for _name, rec, hook in scenarios():
        findings, _, _ = evaluate_rules(ctx(rec, hook))
        rules = [f.rule for f in findings]
        assert len(rules) == len(set(rules))
        first = [build_card(f, "same-instance", K)["uuid"] for f in findings]
        again = [build_card(f, "same-instance", K)["uuid"] for f in findings]
        assert first == again and len(set(first)) == len(first)
