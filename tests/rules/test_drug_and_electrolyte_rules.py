"""magnesium-wasting-drug, magnesium-monitoring-gap, refractory-hypokalemia and refractory-hypocalcemia."""
from __future__ import annotations

import pytest

from tests.rules.rules_factory import ago, drafted_test, lab, med, record, run


# ---------------------------------------------------------------- magnesium-wasting-drug
def test_wasting_drug_lists_each_drug_class_mechanism_and_duration():
    rec = record(lab("magnesium", 1.5), meds=[med("furosemide", start=ago(100), rid="f1"),
                                               med("omeprazole", start=ago(400), rid="o1"),
                                               med("magnesium oxide", start=ago(30))])
    f = run("magnesium-wasting-drug", rec)
    assert f.indicator == "warning" and "Furosemide" in f.summary and "Omeprazole" in f.summary
    assert "loop diuretic: blocks NKCC2" in f.detail
    assert "proton-pump inhibitor" in f.detail and "(100 days)" in f.detail and "(400 days)" in f.detail
    assert "FDA 2011 warning applies" in f.detail  # PPI >= 365 days
    assert "Magnesium oxide" not in f.summary
    assert {x["source"]["id"] for x in f.facts if x["kind"] == "medication"} == {"f1", "o1"}


def test_wasting_drug_says_when_the_match_came_from_text():
    rec = record(lab("magnesium", 1.5), meds=[med("tacrolimus", label="Prograf 1 mg caps", by_text=True, start=ago(10))])
    f = run("magnesium-wasting-drug", rec)
    assert "identified from the medication text 'Prograf 1 mg caps'" in f.detail


def test_short_ppi_use_has_no_fda_note():
    f = run("magnesium-wasting-drug", record(lab("magnesium", 1.5), meds=[med("pantoprazole", start=ago(364))]))
    assert "FDA 2011" not in f.detail


@pytest.mark.parametrize("mg, meds, fires", [
    (1.8, [med("furosemide", start=ago(5))], False),               # magnesium not low (at the limit)
    (1.5, [med("magnesium oxide", start=ago(5))], False),          # no wasting drug
    (1.5, [], False),
    (1.5, [med("cetuximab", start=ago(5))], True),
])
def test_wasting_drug_fires_only_with_low_magnesium_and_a_wasting_drug(mg, meds, fires):
    assert (run("magnesium-wasting-drug", record(lab("magnesium", mg), meds=meds)) is not None) is fires


def test_drafted_wasting_drug_is_not_an_active_one():
    rec = record(lab("magnesium", 1.5), drafts=[med("furosemide", draft=True)])
    assert run("magnesium-wasting-drug", rec) is None


# ---------------------------------------------------------------- magnesium-monitoring-gap
def test_monitoring_gap_suggests_a_magnesium_check():
    f = run("magnesium-monitoring-gap", record(meds=[med("omeprazole", start=ago(400))]))
    assert f.indicator == "info" and "no magnesium result" in f.summary
    (s,) = f.suggestions
    res = s.actions[0].resource
    assert res["resourceType"] == "ServiceRequest" and res["code"]["coding"][0]["code"] == "19123-9"
    assert res["subject"] == {"reference": "Patient/p1"} and res["status"] == "draft"


@pytest.mark.parametrize("start, mg_age, fires", [
    (ago(366), None, True),
    (ago(365), None, False),       # exactly a year: not longer than the PPI's min_days (FDA: "more than a year")
    (ago(200), None, False),       # six months of a PPI: the FDA communication's "in most cases" is not reached
    (None, None, False),           # start unknown: duration unknown, not guessed
    (ago(400), 180, False),        # a result exactly 180 days old still closes the gap
    (ago(400), 181, True),
])
def test_monitoring_gap_boundaries_on_a_ppi(start, mg_age, fires):
    labs = (lab("magnesium", 2.0, at=ago(mg_age)),) if mg_age is not None else ()
    rec = record(*labs, meds=[med("omeprazole", start=start)])
    assert (run("magnesium-monitoring-gap", rec) is not None) is fires


@pytest.mark.parametrize("drug", ["hydrochlorothiazide", "chlorthalidone", "furosemide", "bumetanide", "gentamicin"])
def test_drugs_without_a_magnesium_monitoring_recommendation_never_get_the_card(drug):
    """Issue 16: their labels ask for electrolytes (potassium named) or kidney function, not for magnesium."""
    rec = record(meds=[med(drug, start=ago(3000))])
    assert run("magnesium-monitoring-gap", rec) is None


@pytest.mark.parametrize("drug, cls, source", [
    ("cisplatin", "platinum", "kidney360-2021"),
    ("carboplatin", "platinum", "kidney360-2021"),
    ("cetuximab", "egfr-antibody", "egfr-antibody-2009"),
    ("panitumumab", "egfr-antibody", "egfr-antibody-2009"),
    ("foscarnet", "foscarnet", "foscavir-label"),
    ("amphotericin b", "amphotericin-b", "ambisome-label"),
])
def test_drugs_monitored_from_the_start_fire_on_day_one_and_cite_their_source(drug, cls, source):
    f = run("magnesium-monitoring-gap", record(meds=[med(drug, start=ago(1))]))
    assert f is not None and f.source == source
    assert "Why magnesium is checked on these drugs:" in f.detail
    assert run("magnesium-monitoring-gap", record(meds=[med(drug, start=None)])) is None


def test_monitoring_gap_card_says_why_and_cites_the_ppi_communication():
    f = run("magnesium-monitoring-gap", record(meds=[med("omeprazole", start=ago(400), rid="o1"),
                                                     med("furosemide", start=ago(400), rid="f1")]))
    assert f.source == "fda-ppi-2011"
    assert "proton-pump inhibitor: hypomagnesemia mostly after more than a year" in f.detail
    assert "counted after 365 days on it" in f.detail
    assert "Furosemide" not in f.detail  # not a monitored class: not named as a reason
    assert [x["source"]["id"] for x in f.facts if x["kind"] == "medication"] == ["o1"]


def test_monitoring_gap_is_silent_when_labs_could_not_be_read():
    rec = record(meds=[med("omeprazole", start=ago(400))], available={"labs": False})
    assert run("magnesium-monitoring-gap", rec) is None


def test_monitoring_gap_no_suggestion_when_magnesium_is_already_drafted():
    rec = record(meds=[med("omeprazole", start=ago(400))], services=[drafted_test("19123-9")])
    assert run("magnesium-monitoring-gap", rec).suggestions == ()


# ---------------------------------------------------------------- refractory-hypokalemia / hypocalcemia
def _k(*values_days):
    return tuple(lab("potassium", v, at=ago(d)) for v, d in values_days)


def test_refractory_hypokalemia_with_low_magnesium():
    rec = record(*_k((3.1, 1), (3.2, 4)), lab("magnesium", 1.5, at=ago(1)), meds=[med("potassium chloride", start=ago(10))])
    f = run("refractory-hypokalemia", rec)
    assert f.indicator == "warning" and "3.1 mmol/L" in f.summary and "magnesium low (1.50 mg/dL)" in f.summary
    assert "Correct magnesium first" in f.detail and "Local policy" in f.detail


def test_refractory_hypokalemia_with_magnesium_not_measured_recently():
    rec = record(*_k((3.1, 1), (3.2, 4)), lab("magnesium", 2.0, at=ago(8)), meds=[med("potassium chloride", start=ago(10))])
    f = run("refractory-hypokalemia", rec)
    assert "not measured since" in f.summary and "Check magnesium now" in f.detail
    rec2 = record(*_k((3.1, 1), (3.2, 4)), meds=[med("potassium citrate", start=ago(10))])
    assert "magnesium not measured" in run("refractory-hypokalemia", rec2).summary


@pytest.mark.parametrize("labs, meds, fires", [
    # Mg normal, 7 d = recent
    (_k((3.1, 1), (3.2, 4)) + (lab("magnesium", 2.0, at=ago(7)),), [med("potassium chloride", start=ago(10))], False),
    (_k((3.1, 1), (3.2, 4)), [], False),                                              # no potassium supplement
    (_k((3.5, 1), (3.2, 4)), [med("potassium chloride", start=ago(10))], False),      # 3.5 is not low
    (_k((3.1, 1), (3.2, 1.5)), [med("potassium chloride", start=ago(10))], False),    # only 12 h apart
    (_k((3.1, 1),), [med("potassium chloride", start=ago(10))], False),               # one result
])
def test_refractory_hypokalemia_does_not_fire(labs, meds, fires):
    assert (run("refractory-hypokalemia", record(*labs, meds=meds)) is not None) is fires


def test_potassium_in_blood_codes_and_mass_units_count_the_same():
    # 22760-3 potassium mass concentration: 12.1 mg/dL x 10 / 39.098 = 3.09 mmol/L
    a = lab("potassium", 12.1, "mg/dL", at=ago(1))
    rec = record(a, lab("potassium", 3.2, at=ago(4)), lab("magnesium", 1.5), meds=[med("potassium chloride", start=ago(10))])
    assert run("refractory-hypokalemia", rec) is not None


def test_refractory_hypocalcemia():
    rec = record(lab("calcium", 7.8, at=ago(1)), lab("calcium", 1.95, "mmol/L", at=ago(5)), lab("magnesium", 1.4),
                 meds=[med("calcium carbonate", start=ago(20))])
    f = run("refractory-hypocalcemia", rec)
    assert f is not None and "7.80 mg/dL" in f.summary and "parathyroid" in f.detail
    # 1.95 mmol/L = 7.82 mg/dL shown with the reported unit
    assert "reported 1.95 mmol/L" in f.detail
    rec_normal_mg = record(lab("calcium", 7.8, at=ago(1)), lab("calcium", 7.9, at=ago(5)), lab("magnesium", 2.1),
                           meds=[med("calcium carbonate", start=ago(20))])
    assert run("refractory-hypocalcemia", rec_normal_mg) is None


def test_electrolyte_rules_relevant_on_order_hooks_for_their_drafts():
    rec = record(*_k((3.1, 1), (3.2, 4)), lab("magnesium", 1.5), meds=[med("potassium chloride", start=ago(10))],
                 drafts=[med("potassium chloride", draft=True, selected=True)])
    assert run("refractory-hypokalemia", rec, "order-select") is not None
    rec_other = record(*_k((3.1, 1), (3.2, 4)), lab("magnesium", 1.5), meds=[med("potassium chloride", start=ago(10))],
                       drafts=[med("tacrolimus", draft=True, selected=True)])
    assert run("refractory-hypokalemia", rec_other, "order-select") is None
