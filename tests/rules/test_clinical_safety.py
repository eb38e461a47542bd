"""Issue 10 classes owned here: patient context (children, pregnancy), high magnesium, one kidney assessment from
all the evidence, magnesium dose sums over every order, the age of values, suggestions that agree with the
kidney card, and numbers that never contradict their cut-offs. Each test writes the clinical picture first."""
from __future__ import annotations

from datetime import date

import pytest

from cds_service.decide import evaluate_rules
from cds_service.record.kidney import assess_kidney
from cds_service.record.model import ConditionFact, SourceRef
from cds_service.rules.base import digits_for, shown_pair
from cds_service.rules.doses import magnesium_load_48h
from tests.rules.rules_factory import NOW, K, ago, ctx, failing_kidneys, lab, med, normal_kidneys, record, run

SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
ADULT_IV = ("4-5 g", "250 mL over 3 h")


def condition(key: str, label: str, system: str, code: str) -> ConditionFact:
    return ConditionFact(K.condition_of([(system, code)]), label, ((system, code),), "active", None,
                         SourceRef("Condition", f"c-{code}"))


def kidney(rec):
    return assess_kidney(rec, K, NOW)


# ---------------------------------------------------------------- one kidney assessment
def test_kidney_measured_clearance_comes_first():
    rec = record(lab("crcl_measured", 18, at=ago(3)), *normal_kidneys())  # Cockcroft-Gault would say 76 mL/min
    kf = kidney(rec)
    assert kf.status == "below" and kf.estimate.method == "measured-clearance" and kf.estimate.low == 18


def test_kidney_creatinine_without_weight_is_bounded_and_concludes_when_the_range_is_one_side():
    # woman 66 y, creatinine 7.8, no weight: CG between 40 kg (4.5) and 150 kg (16.8) mL/min: below 20 at any weight
    kf = kidney(record(lab("creatinine", 7.8, at=ago(2))))
    assert kf.status == "below" and kf.estimate.method == "cockcroft-gault" and not kf.estimate.exact
    assert kf.estimate.high < 20 and "bounded between 40 and 150 kg" in kf.estimate.notes[0]
    # creatinine 0.7: even at 40 kg the clearance is above 20: not below
    assert kidney(record(lab("creatinine", 0.7, at=ago(2)))).status == "not-below"


def test_kidney_unknown_sex_computes_both_factors():
    # creatinine 3.0, 60 kg, 66 y: male 20.6, female 17.5 mL/min: the two disagree about the cut-off
    rec = record(lab("creatinine", 3.0, at=ago(2)), lab("weight", 60, at=ago(2)), sex="unknown")
    kf = kidney(rec)
    assert kf.tried and kf.tried[0].method == "cockcroft-gault"
    assert kf.tried[0].low == pytest.approx(17.5, abs=0.1) and kf.tried[0].high == pytest.approx(20.6, abs=0.1)
    # creatinine 4.0: both sexes below 20 (male 15.4): below without knowing the sex
    rec = record(lab("creatinine", 4.0, at=ago(2)), lab("weight", 60, at=ago(2)), sex=None)
    assert kidney(rec).status == "below" and kidney(rec).estimate.method == "cockcroft-gault"


def test_kidney_reported_egfr_alone_is_deindexed_within_body_surface_bounds():
    kf = kidney(record(lab("egfr", 8, at=ago(3)), birth=None))  # 8 x 2.6 / 1.73 = 12.0 at most
    assert kf.status == "below" and kf.estimate.method == "egfr-reported"
    assert kf.estimate.high == pytest.approx(12.02, abs=0.01)
    assert kidney(record(lab("egfr", 83, at=ago(3)), birth=None)).status == "not-below"  # 83 x 1.4 / 1.73 = 67


def test_kidney_coded_dialysis_means_below_and_overrides_an_estimate():
    dialysis = condition("kidney_failure", "Dependence on renal dialysis", ICD, "Z99.2")
    assert dialysis.condition == "kidney_failure"
    kf = kidney(record(conditions=[dialysis], birth=None))
    assert kf.status == "below" and kf.estimate is None and kf.conditions == (dialysis,)
    kf2 = kidney(record(*normal_kidneys(), conditions=[dialysis]))
    assert kf2.status == "below" and "overrides the estimate" in kf2.notes[0]


def test_kidney_unknown_only_when_nothing_concludes_and_says_what_is_missing():
    kf = kidney(record(lab("magnesium", 1.5)))
    assert kf.status == "unknown" and "a serum creatinine, eGFR or measured creatinine clearance" in kf.missing[0]


def test_kidney_children_get_bedside_schwartz_never_the_adult_equations():
    child = date(2016, 1, 1)  # 10 years old
    rec = record(lab("creatinine", 3.0, at=ago(1)), lab("height", 140, at=ago(30)), lab("weight", 35, at=ago(30)), birth=child)
    kf = kidney(rec)
    assert kf.child and kf.estimate.method == "bedside-schwartz" and kf.estimate.low == pytest.approx(0.413 * 140 / 3.0)
    assert kf.status == "below"  # 19.3 mL/min/1.73 m2
    no_height = kidney(record(lab("creatinine", 0.5, at=ago(1)), lab("weight", 35, at=ago(30)), birth=child))
    assert no_height.status == "unknown" and any("height" in m for m in no_height.missing)
    assert all(e.method not in ("cockcroft-gault", "egfr-ckd-epi") for e in no_height.tried)


def test_every_rule_of_one_call_sees_the_same_kidney_assessment():
    # a response never has one card saying "could not be computed" and another quoting a value
    rec = record(lab("magnesium", 1.0), lab("egfr", 83, at=ago(3)), birth=None,
                 drafts=[med("magnesium sulfate", route="intravenous", dose=(2, "g"), draft=True),
                         med("potassium chloride", draft=True)])
    findings, _, errors = evaluate_rules(ctx(rec, "order-sign"))
    assert not errors
    texts = " ".join(f.detail for f in findings)
    assert "unknown" not in texts.lower().replace("unknown sex", "")
    assert "at least 67 mL/min" in texts


# ---------------------------------------------------------------- patient context: children and pregnancy
def test_child_gets_no_adult_dose_on_any_card_or_suggestion():
    child = date(2017, 3, 10)
    rec = record(lab("magnesium", 1.0), lab("magnesium", 1.1, at=ago(5)), lab("creatinine", 0.4), lab("height", 130, at=ago(5)),
                 meds=[med("magnesium oxide", start=ago(60), dose=(200, "mg"), timing="at night")],
                 drafts=[med("potassium chloride", draft=True, rid="kcl"),
                         med("magnesium sulfate", route="intravenous", dose=(1, "g"), draft=True, rid="iv")], birth=child)
    findings, _, errors = evaluate_rules(ctx(rec, "order-sign"))
    assert not errors and findings
    for f in findings:
        text = f.summary + f.detail + " ".join(s.label for s in f.suggestions)
        for adult in ADULT_IV + ("12-24 mmol", "9 µg", "0.25 µg daily", "mg magnesium oxide) by mouth"):
            assert adult not in text, (f.rule, adult)
        assert not any(a.resource and a.resource.get("resourceType") == "MedicationRequest"
                       for s in f.suggestions for a in s.actions), f.rule
    assert any("paediatric" in f.detail for f in findings)


def test_obstetric_magnesium_in_the_label_range_is_expected_and_above_it_is_toxicity():
    pre_eclampsia = condition("obstetric_magnesium_indication", "Severe pre-eclampsia", ICD, "O14.13")
    assert pre_eclampsia.condition == "obstetric_magnesium_indication"  # ICD-10-CM category prefix
    infusion = med("magnesium sulfate", route="intravenous", dose=(2, "g"), timing="2 g per hour", start=ago(1))
    in_range = record(lab("magnesium", 5.9, at=ago(0, hours=2)), *normal_kidneys(), meds=[infusion], conditions=[pre_eclampsia])
    assert run("hypermagnesemia", in_range) is None
    toxic = record(lab("magnesium", 7.6, at=ago(0, hours=2)), *normal_kidneys(), meds=[infusion], conditions=[pre_eclampsia])
    f = run("hypermagnesemia", toxic)
    assert f.indicator == "critical" and "toxicity" in f.summary.lower() and "obstetric therapeutic range" in f.detail
    # the same 5.9 mg/dL without an obstetric context is high, never "not low"
    f2 = run("hypermagnesemia", record(lab("magnesium", 5.9), *normal_kidneys()))
    assert f2.indicator == "critical" and "Hypermagnesemia" in f2.summary


# ---------------------------------------------------------------- high magnesium
@pytest.mark.parametrize("extra, hook, indicator", [
    ({}, "patient-view", "warning"),                                                  # 3.0 mg/dL, nothing else
    ({"meds": [med("magnesium oxide", start=ago(30))]}, "patient-view", "critical"),  # magnesium being given
    ({"drafts": [med("magnesium oxide", draft=True, rid="mgo")]}, "order-sign", "critical"),
])
def test_high_magnesium_is_graded(extra, hook, indicator):
    f = run("hypermagnesemia", record(lab("magnesium", 3.0), *normal_kidneys(), **extra), hook)
    assert f.indicator == indicator and "above the upper limit" in f.detail and "not low" not in f.summary


def test_high_magnesium_with_reduced_kidney_function_is_critical_and_a_draft_gets_a_remove_suggestion():
    f = run("hypermagnesemia", record(lab("magnesium", 3.0), *failing_kidneys()))
    assert f.indicator == "critical" and "kidney function is below 20" in f.detail
    rec = record(lab("magnesium", 4.2), *failing_kidneys(), drafts=[med("magnesium oxide", draft=True, rid="mgo")])
    f = run("hypermagnesemia", rec, "order-sign")
    (s,) = f.suggestions
    assert s.actions[0].type == "delete" and s.actions[0].resource_id == "MedicationRequest/mgo"
    # the IV-magnesium card does not also speak (one problem, one card) and nothing reads as reassurance
    iv = med("magnesium sulfate", route="intravenous", dose=(2, "g"), draft=True, rid="iv")
    assert run("order-iv-magnesium", record(lab("magnesium", 4.2), *failing_kidneys(), drafts=[iv]), "order-sign") is None


def test_high_magnesium_censored_below_is_never_high():
    r = lab("magnesium", 3.0)
    censored = type(r)(**{**{k: getattr(r, k) for k in r.__slots__}, "comparator": "<"})
    assert run("hypermagnesemia", record(censored, *normal_kidneys())) is None


# ---------------------------------------------------------------- dose arithmetic over every order
def test_magnesium_ceiling_sums_every_drafted_and_active_order():
    # 10 g + 8 g IV (40.6 + 32.5 mmol) + oral MgO 800 mg twice daily (4 x 19.85 mmol): 152.5 mmol > 81.2 mmol
    drafts = [med("magnesium sulfate", route="intravenous", dose=(10, "g"), timing="once", draft=True, rid="a"),
              med("magnesium sulfate", route="intravenous", dose=(8, "g"), timing="once", draft=True, rid="b")]
    active = [med("magnesium oxide", start=ago(60), dose=(800, "mg"), timing="twice daily")]
    load = magnesium_load_48h(drafts + active, K)
    assert load.complete and load.known_mmol == pytest.approx(40.6 + 32.48 + 4 * 800 / 40.3, abs=0.05)
    f = run("order-magnesium-renal", record(lab("magnesium", 1.4), *failing_kidneys(), meds=active, drafts=drafts), "order-sign")
    assert f.indicator == "critical" and "152.5 > 81.2 mmol" in f.detail
    assert "MedicationRequest/a" in f.detail and "MedicationRequest/b" in f.detail  # the per-order breakdown


def test_an_order_with_unreadable_frequency_counts_at_least_once():
    d = med("magnesium sulfate", route="intravenous", dose=(25, "g"), timing="as directed", draft=True)
    f = run("order-magnesium-renal", record(*failing_kidneys(), drafts=[d]), "order-sign")
    assert f.indicator == "critical" and "at least" in f.detail


def test_a_dose_per_hour_is_an_infusion():
    d = med("magnesium sulfate", route="intravenous", dose=(1, "g"), timing="1 g per hour", draft=True)
    assert magnesium_load_48h([d], K).known_mmol == pytest.approx(48 * 4.06)


# ---------------------------------------------------------------- time
def test_old_low_magnesium_asks_for_a_new_value_instead_of_treatment():
    rec = record(lab("magnesium", 1.4, at=ago(200)), *normal_kidneys(), meds=[med("omeprazole", start=ago(900))])
    findings, _, _ = evaluate_rules(ctx(rec, "patient-view"))
    assert [f.rule for f in findings] == ["hypomagnesemia"]
    (f,) = findings
    assert f.indicator == "info" and "200 days ago" in f.summary and "re-measure" in f.summary
    assert "replace" not in f.detail.lower() and f.suggestions[0].key == "order-magnesium"


def test_every_value_on_a_card_shows_its_age():
    f = run("hypomagnesemia", record(lab("magnesium", 1.5, at=ago(12)), *normal_kidneys()))
    assert "on 2026-11-13 (12 days ago)" in f.detail


# ---------------------------------------------------------------- suggestions agree with the kidney card
def test_iv_suggestion_is_reduced_with_low_kidney_function_and_full_otherwise():
    kcl = med("potassium chloride", draft=True)
    low = run("order-potassium-without-magnesium", record(lab("magnesium", 1.0), *failing_kidneys(), drafts=[kcl]), "order-sign")
    full = run("order-potassium-without-magnesium", record(lab("magnesium", 1.0), *normal_kidneys(), drafts=[kcl]), "order-sign")
    low_res, full_res = low.suggestions[0].actions[0].resource, full.suggestions[0].actions[0].resource
    assert len(low_res["dosageInstruction"]) == 1 and "maxDosePerPeriod" in low_res["dosageInstruction"][0]
    assert [d["sequence"] for d in full_res["dosageInstruction"]] == [1, 2]
    assert full_res["dosageInstruction"][1]["timing"]["repeat"] == {"count": 1, "duration": 3.0, "durationUnit": "h"}
    assert not any(x in low.suggestions[0].label for x in ADULT_IV)


# ---------------------------------------------------------------- precision
@pytest.mark.parametrize("value, cutoff, digits, shown", [
    (1.7961, 1.8, 2, "1.796"), (1.7961, 1.7986, 2, "1.796"), (19.6, 20, 0, "19.6"), (19.99, 20, 0, "19.99"),
    (1.5, 1.8, 2, "1.50"), (20.0, 20, 0, "20"),
])
def test_a_number_never_contradicts_its_cut_off(value, cutoff, digits, shown):
    d = digits_for(value, digits, cutoff)
    assert f"{value:.{d}f}" == shown
    a, b = shown_pair(value, cutoff, digits)
    assert (float(a) < float(b)) == (value < cutoff)


def test_a_magnesium_at_the_lab_limit_is_written_with_enough_digits():
    r = lab("magnesium", 0.739, "mmol/L", ref_low=0.74)
    f = run("hypomagnesemia", record(r, *normal_kidneys()))
    assert "1.796 mg/dL" in f.summary and "1.80" not in f.summary and "1.799 mg/dL" in f.detail
