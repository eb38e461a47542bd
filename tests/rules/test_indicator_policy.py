"""Indicator policy in one place (issue 16 item 5): knowledge.yaml `indicators` says which finding is critical,
warning or info, when, with its thresholds and source; the rules read it; the README's rules table shows it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service.cards import GAP_RULE
from cds_service.kit.readme import rules_table
from cds_service.knowledge import Knowledge, KnowledgeModel
from cds_service.rules import RULES
from cds_service.rules.base import RuleContext
from tests.rules.rules_factory import NOW, K, lab, record

GOLDEN = Path(__file__).resolve().parents[1] / "service" / "golden"


def test_every_rule_has_an_indicator_policy_with_known_thresholds_and_sources():
    assert set(K.model.indicators) == {r.id for r in RULES} | {GAP_RULE}
    for rule, cases in K.model.indicators.items():
        assert cases, rule
        for case in cases.values():
            assert case.source in K.model.sources and case.when
            assert all(t in K.model.thresholds for t in case.thresholds)
            assert all(p in K.model.policies for p in case.policies)


def test_an_unknown_threshold_in_the_policy_is_rejected_at_load():
    data = K.model.model_dump()
    data["indicators"]["hypomagnesemia"]["low"]["thresholds"] = ["no_such_threshold"]
    with pytest.raises(ValueError, match="unknown threshold 'no_such_threshold'"):
        KnowledgeModel.model_validate(data)


def test_the_rule_takes_its_indicator_from_the_knowledge():
    """Grading is data: the same low magnesium is a warning with the shipped policy and critical when the
    policy says so."""
    rec = record(lab("magnesium", 1.5))
    rule = next(r for r in RULES if r.id == "hypomagnesemia")
    shipped = rule.evaluate(RuleContext(rec, K, NOW, "patient-view"))
    data = K.model.model_dump()
    data["indicators"]["hypomagnesemia"]["low"]["level"] = "critical"
    stricter = Knowledge(KnowledgeModel.model_validate(data), K.clinical_drugs, K.path)
    changed = rule.evaluate(RuleContext(rec, stricter, NOW, "patient-view"))
    assert (shipped.indicator, changed.indicator) == ("warning", "critical")


def test_every_fixture_card_has_a_level_its_rule_declares():
    """Over every golden response: no card is graded outside the knowledge's policy for its rule."""
    seen = set()
    for path in sorted(GOLDEN.glob("*.json")):
        for card in json.loads(path.read_text(encoding="utf-8"))["cards"]:
            rule = card["source"]["topic"]["code"]
            levels = {c.level for c in K.model.indicators[rule].values()}
            assert card["indicator"] in levels, f"{path.name}: {rule} is {card['indicator']}, policy {levels}"
            seen.add((rule, card["indicator"]))
    assert ("hypomagnesemia", "critical") in seen and ("order-magnesium-renal", "critical") in seen


def test_the_readme_rules_table_shows_each_level_with_threshold_and_source():
    table = rules_table()
    row = next(line for line in table.splitlines() if line.startswith("| `hypomagnesemia`"))
    assert "**critical**" in row and "`magnesium_severe` = 1.2 mg/dL" in row and "**warning**" in row and "**info**" in row
    assert K.source("guidance").url in row
