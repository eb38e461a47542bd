"""One problem, one card (issue 16 item 1): the response-level composition owns each fact and each piece of
advice on one card; the others point to it. Pure functions over rule findings (no HTTP)."""
from __future__ import annotations

import re

from cds_service.cards import build_card
from cds_service.cards.compose import compose, kidney_value
from cds_service.decide import evaluate_rules
from cds_service.rules import RULES
from cds_service.rules.regimens import renal_ceiling_text
from tests.rules.rules_factory import K, ago, ctx, failing_kidneys, lab, med, record

RULE_ORDER = [r.id for r in RULES]


def _ckd_with_low_magnesium(hook: str = "order-sign"):
    mg = lab("magnesium", 1.5, at=ago(2), rid="mg-low")
    rec = record(mg, *failing_kidneys(),
                 meds=[med("furosemide", route="oral", start=ago(60), rid="furo")],
                 drafts=[med("magnesium sulfate", route="intravenous", dose=(24, "g"), draft=True, selected=True, rid="mgso4")])
    c = ctx(rec, hook)
    findings, _, _ = evaluate_rules(c)
    return c, findings


def test_the_case_has_several_cards_sharing_facts():
    """The premise: the rules alone repeat the magnesium line and the kidney assessment on several cards."""
    c, findings = _ckd_with_low_magnesium()
    assert len(findings) >= 3
    assert sum("Observation/mg-low" in f.detail for f in findings) >= 2
    assert sum("- kidney function: **" in f.detail for f in findings) >= 2


def test_each_fact_in_full_on_one_card_and_pointed_to_elsewhere():
    c, findings = _ckd_with_low_magnesium()
    composed = compose(c, findings, RULE_ORDER)
    assert [f.rule for f in composed] == [f.rule for f in findings]  # no card added, dropped or reordered
    full_mg = [f.rule for f in composed if re.search(r"\*\*1\.50 mg/dL on .*\(Observation/mg-low\)", f.detail)]
    assert full_mg == ["hypomagnesemia"]  # the low-magnesium card owns the magnesium result
    kidney_blocks = [f.rule for f in composed if "Cockcroft-Gault:" in f.detail]
    assert kidney_blocks == ["order-magnesium-renal"]  # the renal-ceiling card owns the kidney assessment
    pointers = [f for f in composed if f"- kidney function: {kidney_value(c)}; see the renal-ceiling card" in f.detail]
    assert pointers and all(f.rule != "order-magnesium-renal" for f in pointers)
    assert sum(renal_ceiling_text(c) in f.detail for f in composed) == 1  # the ceiling, once


def test_nothing_is_lost():
    """Every FHIR reference and every number a rule wrote is still in the response (on its owner)."""
    c, findings = _ckd_with_low_magnesium()
    composed = compose(c, findings, RULE_ORDER)
    before = "\n".join(f.detail for f in findings)
    after = "\n".join(f.detail for f in composed)
    for ref in set(re.findall(r"(?:Observation|MedicationRequest)/[\w\-.]+", before)):
        assert ref in after, ref
    numbers = lambda text: set(re.findall(r"\d+(?:\.\d+)?", text))  # noqa: E731
    assert numbers(before) <= numbers(after)


def test_one_card_is_left_as_written():
    c, findings = _ckd_with_low_magnesium("patient-view")
    one = [f for f in findings if f.rule == "hypomagnesemia"]
    assert compose(c, one, RULE_ORDER) == one


def test_the_citation_is_named_once_per_response():
    c, findings = _ckd_with_low_magnesium()
    composed = compose(c, findings, RULE_ORDER)
    citation = K.source("guidance").citation
    first = next(f for f in composed if f.source == "guidance")
    later = [f for f in composed if f.source == "guidance" and f is not first]
    assert later, "the case needs two cards citing the guidance"
    cards = [build_card(first, "h", K)] + [build_card(f, "h", K, cited_on="the low-magnesium card") for f in later]
    assert citation in cards[0]["detail"]
    for card in cards[1:]:
        assert citation not in card["detail"].split("**Source**")[1] and "As on the low-magnesium card" in card["detail"]
        assert card["source"]["label"]  # the card's own source field still names it
