"""Issue 16: alert burden as a measured budget (bench/burden.py). A count over fixed data, not a timing."""
from __future__ import annotations

from collections import Counter

import pytest

from bench.burden import BUDGET_PER_100, Burden, chart_openings, markdown, synthea_dir
from cds_service.fixtures import list_scenarios


@pytest.fixture(scope="module")
def openings():
    return list(chart_openings())


@pytest.fixture(scope="module")
def burdens(openings):
    out = {"generated": Burden(), "fixtures": Burden()}
    for o in openings:
        out[o.population].add(o)
    return out


@pytest.mark.slow
def test_every_generated_patient_and_every_fixture_is_opened_once(openings):
    generated = [o for o in openings if o.population == "generated"]
    assert len(generated) == len(sorted(synthea_dir().glob("*.json"))) == 16
    assert len({o.patient_id for o in generated}) == 16
    assert [o.patient_id for o in openings if o.population == "fixtures"] == [s.patient_id for s in list_scenarios()]


def test_the_count_is_the_cards_the_fixtures_declare(openings):
    """The bench counts what patient-view really answers: per scenario, the card topics scenarios.yaml declares."""
    declared = {s.patient_id: s.expected["patient-view"] for s in list_scenarios()}
    for o in openings:
        if o.population == "fixtures":
            topics = Counter(c["source"]["topic"]["code"] for c in o.cards)
            assert set(topics) == declared[o.patient_id], o.patient_id
            assert all(n == 1 for n in topics.values()), (o.patient_id, topics)  # one card per rule


def test_generated_patients_stay_within_the_alert_budget(burdens):
    """README "Alert burden": at most 15 cards per 100 chart openings, and at most 15 % of openings with any card,
    on the generated patients (none has a magnesium result or a magnesium problem the record shows)."""
    gen = burdens["generated"]
    assert gen.per_100() <= BUDGET_PER_100, markdown(burdens)
    assert gen.share_with_card <= 15.0, markdown(burdens)
    # none of them is on a class whose label or guideline recommends magnesium monitoring past its min_days
    assert ("magnesium-monitoring-gap", "info") not in gen.cards, markdown(burdens)


def test_the_report_is_a_markdown_table_by_rule_and_indicator(burdens):
    text = markdown(burdens)
    assert "| rule | indicator | cards | per 100 openings |" in text
    fx = burdens["fixtures"]
    assert f"{fx.openings} chart openings (patient-view), {fx.total} cards" in text
    for (rule, indicator), n in fx.cards.items():
        assert f"| `{rule}` | {indicator} | {n} | {fx.per_100(n):.1f} |" in text
    assert "within budget" in text or "OVER budget" in text


def test_burden_arithmetic():
    b = Burden()
    assert b.per_100() == 0.0 and b.share_with_card == 0.0
    card = {"source": {"topic": {"code": "hypomagnesemia"}}, "indicator": "warning"}
    from bench.burden import FIXTURES_TODAY, Opening
    b.add(Opening("generated", "a", FIXTURES_TODAY, [card, card]))
    b.add(Opening("generated", "b", FIXTURES_TODAY, []))
    assert b.openings == 2 and b.with_card == 1 and b.total == 2
    assert b.per_100() == 100.0 and b.share_with_card == 50.0
    assert b.cards[("hypomagnesemia", "warning")] == 2
