"""hypomagnesemia and refractory-hypomagnesemia as pure functions: thresholds, units, ranges, suppression."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds_service.decide import evaluate_rules
from cds_service.record.builder import RecordBuilder, ResolvedData
from cds_service.rules.base import INDICATOR_RANK
from tests.rules.rules_factory import NOW, K, ago, ctx, lab, med, record, run


# ---------------------------------------------------------------- hypomagnesemia
def test_low_magnesium_is_a_warning_with_value_date_and_mmol():
    f = run("hypomagnesemia", record(lab("magnesium", 1.5, at=ago(2), rid="mg1")))
    assert f.indicator == "warning"
    assert "1.50 mg/dL" in f.summary and "0.62 mmol/L" in f.summary and ago(2).date().isoformat() in f.summary
    assert "Observation/mg1" in f.detail and "CTCAE grade 1" in f.detail
    assert f.facts[0]["value"] == 1.5 and f.facts[0]["source"]["id"] == "mg1"
    assert f.override_reasons


def test_normal_magnesium_gives_nothing():
    assert run("hypomagnesemia", record(lab("magnesium", 2.0))) is None
    assert run("hypomagnesemia", record()) is None


@pytest.mark.parametrize("value, expected", [
    (1.8, None),          # exactly at the default lower limit: not low
    (1.79, "warning"),
    (1.2, "warning"),     # exactly at the severe threshold: not severe
    (1.19, "critical"),
])
def test_boundaries(value, expected):
    f = run("hypomagnesemia", record(lab("magnesium", value)))
    assert (f.indicator if f else None) == expected


@pytest.mark.parametrize("value, unit", [(0.70, "mmol/L"), (1.40, "meq/L"), (1.7014, "mg/dL")])
def test_units_give_the_same_decision(value, unit):
    # 0.70 mmol/L = 1.40 mEq/L = 0.70 x 24.305 / 10 = 1.7014 mg/dL: low, not severe
    f = run("hypomagnesemia", record(lab("magnesium", value, unit)))
    assert f.indicator == "warning"
    assert "1.70 mg/dL" in f.summary


def _observation(oid, value, unit, code, day, low=None):
    obs = {"resourceType": "Observation", "id": oid, "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "subject": {"reference": "Patient/p1"},
           "effectiveDateTime": day, "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}
    if low is not None:
        obs["referenceRange"] = [{"low": {"value": low, "unit": unit}}]
    return obs


@pytest.mark.parametrize("value, unit, code", [(0.45, "mmol/L", "2601-3"), (0.9, "meq/L", "2601-3"), (1.094, "mg/dL", "19123-9")])
def test_units_through_the_real_record_builder(value, unit, code):
    """The builder converts explicitly; the rule sees 1.09 mg/dL whatever the unit, so the card is critical."""
    data = ResolvedData(values={"labs": {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": _observation("o1", value, unit, code, "2026-11-24")}]}}, key_types={"labs": "Observation"})
    rec = RecordBuilder(K, NOW).build("p1", data)
    f = run("hypomagnesemia", rec)
    assert f.indicator == "critical"
    assert "1.09 mg/dL" in f.summary


def test_lab_reference_range_overrides_the_default():
    # 1.65 mg/dL is low by the 1.8 default but normal for a lab whose range starts at 1.6
    assert run("hypomagnesemia", record(lab("magnesium", 1.65, ref_low=1.6))) is None
    # a lab range starting at 2.0 makes 1.9 low
    f = run("hypomagnesemia", record(lab("magnesium", 1.9, ref_low=2.0)))
    assert f is not None and "the lab's reference range" in f.detail
    # a range in mmol/L is converted too: 0.8 mmol/L = 1.944 mg/dL > 1.9
    assert run("hypomagnesemia", record(lab("magnesium", 0.78, "mmol/L", ref_low=0.8))) is not None


def test_severe_threshold_applies_whatever_the_lab_range():
    f = run("hypomagnesemia", record(lab("magnesium", 1.1, ref_low=1.0)))
    assert f is not None and f.indicator == "critical"


def test_only_the_latest_result_counts():
    rec = record(lab("magnesium", 2.0, at=ago(1)), lab("magnesium", 1.0, at=ago(10)))
    assert run("hypomagnesemia", rec) is None


def test_rule_sees_only_what_the_builder_kept():
    """entered-in-error and preliminary results never reach the record, so never fire."""
    entries = []
    for oid, status in (("bad", "entered-in-error"), ("pre", "preliminary"), ("can", "cancelled")):
        o = _observation(oid, 0.9, "mg/dL", "19123-9", "2026-11-24")
        o["status"] = status
        entries.append({"resource": o})
    entries.append({"resource": _observation("ok", 2.1, "mg/dL", "19123-9", "2026-11-20")})
    data = ResolvedData(values={"labs": {"resourceType": "Bundle", "type": "searchset", "entry": entries}},
                        key_types={"labs": "Observation"})
    rec = RecordBuilder(K, NOW).build("p1", data)
    assert [r.source.id for r in rec.results("magnesium")] == ["ok"]
    assert run("hypomagnesemia", rec) is None


@given(a=st.floats(0.2, 3.0), b=st.floats(0.2, 3.0), ref=st.one_of(st.none(), st.floats(1.3, 2.2)))
def test_lower_magnesium_never_gives_a_milder_indicator(a, b, ref):
    lo, hi = sorted((a, b))
    f_lo = run("hypomagnesemia", record(lab("magnesium", lo, ref_low=ref)))
    f_hi = run("hypomagnesemia", record(lab("magnesium", hi, ref_low=ref)))
    rank = lambda f: -1 if f is None else INDICATOR_RANK[f.indicator]  # noqa: E731
    assert rank(f_lo) >= rank(f_hi)


def test_relevant_on_order_hooks_only_for_related_drafts():
    low = lab("magnesium", 1.5)
    unrelated = med("cisplatin", draft=True)  # wasting: relevant
    assert run("hypomagnesemia", record(low, drafts=[unrelated]), "order-sign") is not None
    other = record(low, drafts=[])
    assert run("hypomagnesemia", other, "order-sign") is None
    # order-select: only selected drafts count
    assert run("hypomagnesemia", record(low, drafts=[med("potassium chloride", draft=True)]), "order-select") is None
    assert run("hypomagnesemia", record(low, drafts=[med("potassium chloride", draft=True, selected=True)]), "order-select") is not None


# ---------------------------------------------------------------- refractory-hypomagnesemia
def _refractory(**kw):
    labs = kw.pop("labs", (lab("magnesium", 1.4, at=ago(1)), lab("magnesium", 1.5, at=ago(10))))
    meds = kw.pop("meds", [med("magnesium oxide", start=ago(60), dose=(400, "mg"), timing="400 mg twice daily")])
    return record(*labs, meds=meds, **kw)


def test_refractory_fires_and_names_steps_not_done():
    f = run("refractory-hypomagnesemia", _refractory())
    assert f.indicator == "warning"
    assert "2 low results" in f.summary and "1.40 mg/dL" in f.summary
    assert "_not at night_: no dosing text says night/bedtime" in f.detail
    assert "_not yet_: no active alfacalcidol" in f.detail
    assert "no active IV or subcutaneous magnesium" in f.detail
    assert "Volume status first" in f.detail
    assert "9.9 mmol Mg" in f.detail  # 400 mg MgO / 40.3 mg/mmol
    assert "Local policy" in f.detail


def test_refractory_names_steps_already_done():
    meds = [med("magnesium oxide", start=ago(60), timing="800 mg at bedtime"),
            med("alfacalcidol", start=ago(30), dose=(0.5, "ug")),
            med("magnesium sulfate", start=ago(14), route="subcutaneous", timing="8 mmol twice weekly")]
    f = run("refractory-hypomagnesemia", _refractory(meds=meds, labs=(lab("magnesium", 1.4, at=ago(1)),
                                                                        lab("magnesium", 1.5, at=ago(10)),
                                                                        lab("calcium", 10.9, at=ago(2)))))
    # 800 mg MgO / 40.3 = 19.9 mmol, once a day at bedtime: within the 12-24 mmol target, at night
    assert "_done_: 19.9 mmol a day (target 12-24), at night" in f.detail and "dose read from the dosage text" in f.detail
    assert "_started_: active **Alfacalcidol**" in f.detail and "**above range**" in f.detail
    assert "_started_: parenteral magnesium active" in f.detail and "subcutaneous" in f.detail


def test_refractory_step_one_not_done_below_the_target_dose():
    meds = [med("magnesium oxide", start=ago(60), dose=(200, "mg"), timing="at bedtime")]
    f = run("refractory-hypomagnesemia", _refractory(meds=meds))
    # 200 mg / 40.3 = 4.96 mmol once a day: below 12 mmol a day, even though it is given at night
    assert "_started below target_: 5.0 mmol a day, target 12-24 mmol a day" in f.detail and "_done_" not in f.detail


@pytest.mark.parametrize("labs, fires", [
    ((lab("magnesium", 1.4, at=ago(1)),), False),                                       # one result only
    ((lab("magnesium", 1.4, at=ago(1)), lab("magnesium", 1.5, at=ago(1, hours=47))), False),  # 47 h apart < 48 h
    ((lab("magnesium", 1.4, at=ago(1)), lab("magnesium", 1.5, at=ago(1, hours=48))), True),   # exactly 48 h
    ((lab("magnesium", 1.4, at=ago(1)), lab("magnesium", 2.0, at=ago(5)), lab("magnesium", 1.5, at=ago(10))), False),  # run broken
    ((lab("magnesium", 1.4, at=ago(1)), lab("magnesium", 1.5, at=ago(120))), False),   # outside the 90-day window
    ((lab("magnesium", 2.0, at=ago(1)), lab("magnesium", 1.5, at=ago(10))), False),    # corrected now
])
def test_refractory_persistence(labs, fires):
    assert (run("refractory-hypomagnesemia", _refractory(labs=labs)) is not None) is fires


def test_refractory_needs_oral_magnesium_taken_during_the_low_results():
    assert run("refractory-hypomagnesemia", _refractory(meds=[])) is None
    started_after = [med("magnesium oxide", start=ago(0, hours=2))]
    assert run("refractory-hypomagnesemia", _refractory(meds=started_after)) is None
    iv_only = [med("magnesium sulfate", start=ago(30), route="intravenous")]
    assert run("refractory-hypomagnesemia", _refractory(meds=iv_only)) is None
    no_start = [med("magnesium chloride", start=None)]
    assert run("refractory-hypomagnesemia", _refractory(meds=no_start)) is not None


def test_refractory_suppresses_hypomagnesemia_in_the_registry():
    findings, evaluated, errors = evaluate_rules(ctx(_refractory()))
    fired = [f.rule for f in findings]
    assert "refractory-hypomagnesemia" in fired and "hypomagnesemia" not in fired
    assert "hypomagnesemia" in evaluated and errors == {}
    plain, _, _ = evaluate_rules(ctx(_refractory(meds=[])))
    assert "hypomagnesemia" in [f.rule for f in plain]


def test_refractory_critical_when_severe():
    f = run("refractory-hypomagnesemia", _refractory(labs=(lab("magnesium", 1.0, at=ago(1)), lab("magnesium", 1.1, at=ago(4)))))
    assert f.indicator == "critical" and "IV replacement applies if symptomatic" in f.detail
