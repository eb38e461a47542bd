"""Issue 10 items 5, 7 and 8 through the HTTP layer, on the scenario patients (ids 60-68): what the cards SAY,
beyond which topics fire (scenarios.yaml) — values as reported, bounds, named unreadable results, which calcium
was judged, and the 24-hour urine as the source of the renal-wasting conclusion."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from cds_service.audit.schema import InvocationRow
from cds_service.config import Settings
from cds_service.definitions import load_definitions
from cds_service.fixtures import SERVICE_FOR_HOOK, build_request
from cds_service.knowledge import load_knowledge
from cds_service.services import get_services
from tests.helpers.env import FIXED_NOW


@pytest.fixture(scope="module")
def catalog():
    settings = Settings()
    return load_definitions(settings.hooks_dir, load_knowledge(settings.knowledge_dir or None))


def _cards(client, catalog, scenario: str, hook: str = "patient-view") -> dict[str, dict]:
    resp = client.post(f"/cds-services/{SERVICE_FOR_HOOK[hook]}", json=build_request(scenario, hook, catalog, FIXED_NOW))
    assert resp.status_code == 200, resp.get_json()
    return {c["source"]["topic"]["code"]: c for c in resp.get_json()["cards"]}


def test_censored_magnesium_is_shown_as_reported_severe_and_counted_once(client, catalog):
    cards = _cards(client, catalog, "mg-censored-duplicate-60", "order-sign")
    hypo = cards["hypomagnesemia"]
    assert hypo["indicator"] == "critical"
    assert "<0.5 mg/dL" in hypo["summary"] and "0.50" not in hypo["summary"] + hypo["detail"]
    assert "severe" in cards["order-iv-magnesium"]["summary"] and "<0.5 mg/dL" in cards["order-iv-magnesium"]["summary"]
    # the resend is one result: the card names one Observation, no data-gaps card
    assert hypo["detail"].count("Observation/mg-censored-duplicate-60-lab-") == 1
    assert "data-gaps" not in cards


def test_femg_from_a_censored_urine_magnesium_is_a_bound(client, catalog):
    card = _cards(client, catalog, "mg-femg-censored-61")["femg-extrarenal-loss"]
    assert "FEMg < 0.7 %" in card["summary"] and "U_Mg <1.00" in card["detail"]
    straddle = _cards(client, catalog, "mg-femg-straddle-68")
    assert "femg-renal-wasting" not in straddle and "femg-extrarenal-loss" not in straddle
    needed = straddle["femg-needed"]
    assert "indeterminate" in needed["summary"] and "FEMg: **< 4.08 %**" in needed["detail"]
    action = needed["suggestions"][0]["actions"][0]
    assert action["resource"]["code"]["coding"][0]["code"] == "24447-5"


def test_newer_unreadable_magnesium_results_are_named_on_the_cards_that_use_the_older_one(client, catalog):
    """Named in full (reason and reference) on the card owning the magnesium result (issue 16: one problem, one
    card); every other card using the older value names them by date and points there."""
    for hook, topics in (("patient-view", ("hypomagnesemia", "femg-needed")),
                         ("order-sign", ("hypomagnesemia", "order-potassium-without-magnesium"))):
        cards = _cards(client, catalog, "mg-unreadable-newer-62", hook)
        owner = cards["hypomagnesemia"]["detail"]
        assert "a newer magnesium result of 2026-11-25 (today) could not be read (no numeric value): " \
               "Observation/mg-unreadable-newer-62-lab-3" in owner
        assert "a newer magnesium result of 2026-11-23 (2 days ago) could not be read (unit 'mg%' cannot be interpreted): " \
               "Observation/mg-unreadable-newer-62-lab-2" in owner
        for topic in topics[1:]:
            detail = cards[topic]["detail"]
            assert "- newer magnesium (2026-11-25): could not be read; see the low-magnesium card" in detail, topic
            assert "- newer magnesium (2026-11-23): could not be read; see the low-magnesium card" in detail, topic
        assert "1.40 mg/dL" in cards["hypomagnesemia"]["summary"]


def test_calcium_is_judged_on_ionized_then_corrected_calcium_and_the_card_says_which(client, catalog):
    assert "refractory-hypocalcemia" not in _cards(client, catalog, "ca-low-albumin-ionized-63")
    vitd = _cards(client, catalog, "ca-low-albumin-ionized-63", "order-sign")["order-vitamin-d-analogue"]
    assert "ionized calcium 1.18 mmol/L" in vitd["summary"] and vitd["indicator"] == "info"
    refractory = _cards(client, catalog, "ca-corrected-refractory-64")["refractory-hypocalcemia"]
    assert "albumin-corrected calcium 7.22 mg/dL" in refractory["summary"]
    assert "6.90 mg/dL + 0.8 x (4 - albumin 3.6 g/dL)" in refractory["detail"]
    high = _cards(client, catalog, "order-vitd-corrected-high-65", "order-select")["order-vitamin-d-analogue"]
    assert high["indicator"] == "warning" and "albumin-corrected calcium 11.22 mg/dL" in high["summary"]


def test_a_24_hour_urine_magnesium_concludes_without_a_femg(client, catalog):
    cards = _cards(client, catalog, "mg-urine24h-wasting-66")
    assert "femg-needed" not in cards
    card = cards["femg-renal-wasting"]
    assert "24-hour urine magnesium 96 mg/day" in card["summary"] and "from the 24-hour urine" in card["summary"]
    assert "urine-mg-24h" not in card["detail"] and "Magnesium in Urine" in card["detail"]  # the cited source
    conserving = _cards(client, catalog, "mg-urine24h-conserving-67")
    assert "femg-needed" not in conserving and "from the 24-hour urine" in conserving["femg-extrarenal-loss"]["summary"]



def test_an_ehr_sending_two_versions_and_a_resend_gets_the_latest_counted_once_and_audited(app):
    """Over HTTP with the audit store: the prefetch carries an Observation's first and corrected versions (the
    corrected one first) and the same result again under another id: the corrected value decides, the resend counts
    once, and both are noted in the audit, not on a card."""
    from tests.helpers.fhir import bundle, full_prefetch, hook_request, magnesium, rules_of

    first = dict(magnesium("mg-v", 0.9, when="2026-11-24T08:00:00Z"), meta={"versionId": "1"})
    corrected = dict(magnesium("mg-v", 1.5, when="2026-11-24T08:00:00Z"), meta={"versionId": "2"}, status="corrected")
    resend = magnesium("mg-resend", 1.5, when="2026-11-24T08:00:00Z")
    prefetch = full_prefetch([corrected, resend])
    prefetch["observations"]["entry"] += bundle(first)["entry"]
    resp = app.test_client().post("/cds-services/magnesium-patient-view", json=hook_request(prefetch=prefetch))
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert "data-gaps" not in rules_of(body)
    hypo = next(c for c in body["cards"] if c["source"]["topic"]["code"] == "hypomagnesemia")
    assert "1.50 mg/dL" in hypo["summary"] and hypo["indicator"] == "warning"  # not the superseded 0.9 (critical)
    store = get_services(app).store
    assert store.flush(), "audit queue did not drain"
    with store.sessions() as session:
        [row] = session.execute(select(InvocationRow)).scalars().all()
    kinds = sorted(g["kind"] for g in row.record_snapshot["notes"])
    assert kinds == ["duplicate-result", "version-superseded"]
    assert [r["source"]["id"] for r in row.record_snapshot["labs"]["magnesium"]] == ["mg-v"]
    assert sorted(g["kind"] for g in row.gaps) == kinds
