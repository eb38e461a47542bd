"""femg-renal-wasting, femg-extrarenal-loss, femg-needed and renal-replacement-caution."""
from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.knowledge import LOINC
from cds_service.record.model import ConditionFact, SourceRef
from tests.rules.rules_factory import ago, drafted_test, failing_kidneys, lab, med, normal_kidneys, record, run

FEMG_RULES = ("femg-renal-wasting", "femg-extrarenal-loss", "femg-needed")


def femg_record(u_mg: float, *extra, p_mg: float = 1.4, u_cr: float = 100.0, p_cr: float = 0.8, meds=(), **kw):
    """A paired sample on day -1; FEMg = u_mg x p_cr / (0.7 x p_mg x u_cr) x 100."""
    return record(lab("urine_magnesium", u_mg, at=ago(1), rid="umg"), lab("urine_creatinine", u_cr, at=ago(1)),
                  lab("magnesium", p_mg, at=ago(1, hours=2)), lab("creatinine", p_cr, at=ago(1, hours=2)),
                  lab("weight", 70, at=ago(2)), *extra, meds=meds, **kw)


def fired(rec, hook="patient-view"):
    return {r: f for r in FEMG_RULES if (f := run(r, rec, hook)) is not None}


def test_renal_wasting_above_4_percent():
    # 10 x 0.8 / (0.7 x 1.4 x 100) x 100 = 800/98 = 8.16 %
    out = fired(femg_record(10.0))
    assert set(out) == {"femg-renal-wasting"}
    f = out["femg-renal-wasting"]
    assert "FEMg 8.2 %" in f.summary and "grey zone" not in f.summary
    assert "(U_Mg x P_Cr) / (0.7 x P_Mg x U_Cr)" in f.detail and "CKD-EPI 2021" in f.detail
    assert f.source == "guidance"
    assert any(x["kind"] == "derived" and x["name"] == "femg" for x in f.facts)
    # no urine calcium: suggest it
    (s,) = f.suggestions
    assert s.actions[0].resource["code"]["coding"][0]["code"] == "17862-4"


def test_grey_zone_is_said_honestly():
    # 3 x 0.8 / (0.7 x 1.4 x 100) x 100 = 240/98 = 2.45 %
    f = fired(femg_record(3.0))["femg-renal-wasting"]
    assert "grey zone" in f.summary and "2.45" in f.detail
    assert "> 4 %" in f.detail and f.source == "femg-cutoffs"


def test_just_above_two_percent_is_grey_zone_renal_wasting():
    # 2.744 x 0.8 / (0.7 x 1.4 x 100) x 100 = 2.2400 % > 2 %: renal wasting (grey zone), not extrarenal
    out = fired(femg_record(2.744))
    assert set(out) == {"femg-renal-wasting"} and "grey zone" in out["femg-renal-wasting"].summary


def test_exactly_two_percent_is_not_renal_wasting():
    # u_mg chosen so FEMg = 2.0: 2.0 x 0.7 x 1.4 x 100 / (0.8 x 100) = 2.45 mg/dL (compared at 2 decimals)
    assert set(fired(femg_record(2.45))) == {"femg-extrarenal-loss"}
    # 2.46 -> 2.46 x 0.8 / 98 x 100 = 2.008 % -> renal wasting
    assert set(fired(femg_record(2.46))) == {"femg-renal-wasting"}


def test_extrarenal_loss_names_gut_causes():
    cond = ConditionFact("chronic_diarrhoea", "Chronic diarrhoea", (("http://snomed.info/sct", "236071009"),), "active", None,
                         SourceRef("Condition", "c1"))
    # 1 x 0.8 / 98 x 100 = 0.82 %
    f = fired(femg_record(1.0, conditions=[cond], meds=[med("omeprazole", start=ago(400))]))["femg-extrarenal-loss"]
    assert f.indicator == "info" and "0.8 %" in f.summary
    assert "Chronic diarrhoea (Condition/c1)" in f.detail and "proton-pump inhibitor" in f.detail


def test_urine_calcium_creatinine_points_to_gitelman_or_bartter():
    gitelman = fired(femg_record(10.0, lab("urine_calcium", 5.0, at=ago(1))))["femg-renal-wasting"]  # 5/100 = 0.05 < 0.07
    assert "Gitelman" in gitelman.detail and gitelman.suggestions == ()
    bartter = fired(femg_record(10.0, lab("urine_calcium", 30.0, at=ago(1))))["femg-renal-wasting"]  # 0.30 > 0.26
    assert "Bartter" in bartter.detail
    neither = fired(femg_record(10.0, lab("urine_calcium", 15.0, at=ago(1))))["femg-renal-wasting"]  # 0.15
    assert "neither the Gitelman nor the Bartter" in neither.detail


def test_femg_not_interpreted_with_reduced_kidney_function():
    rec = femg_record(10.0, p_cr=2.0)  # Cockcroft-Gault (140-66) x 70 / (72 x 2.0) x 0.85 = 30.6 mL/min < 60
    assert fired(rec) == {}


def test_interpretability_uses_egfr_not_cockcroft_gault():
    # 70-year-old woman, 50 kg, creatinine 0.9: Cockcroft-Gault (70 x 50) / (72 x 0.9) x 0.85 = 45.9 mL/min,
    # but CKD-EPI 2021 = 142 x (0.9/0.7)^-1.2 x 0.9938^70 x 1.012 = 68.8 mL/min/1.73 m2 >= 60: interpretable
    rec = record(lab("urine_magnesium", 10, at=ago(1)), lab("urine_creatinine", 100, at=ago(1)), lab("magnesium", 1.4, at=ago(1)),
                 lab("creatinine", 0.9, at=ago(1)), lab("weight", 50, at=ago(2)), birth=date(1956, 1, 20))
    assert set(fired(rec)) == {"femg-renal-wasting"}


def test_reported_egfr_is_used_when_age_is_unknown():
    # age unknown: neither CKD-EPI nor Cockcroft-Gault can be computed; the lab-reported eGFR of 90 is used
    rec = femg_record(10.0, lab("egfr", 90, at=ago(2)), birth=None)
    assert set(fired(rec)) == {"femg-renal-wasting"}


def test_femg_needed_silent_when_kidney_function_is_known_to_be_reduced():
    assert run("femg-needed", record(lab("magnesium", 1.5), *failing_kidneys())) is None


def test_femg_not_interpreted_when_kidney_function_unknown():
    rec = femg_record(10.0, birth=None)
    assert fired(rec) == {}


def test_femg_not_interpreted_when_the_paired_magnesium_was_normal():
    # paired sample on day -5 with serum magnesium 2.0 (normal); magnesium low again today
    rec = record(lab("urine_magnesium", 10, at=ago(5)), lab("urine_creatinine", 100, at=ago(5)),
                 lab("magnesium", 2.0, at=ago(5)), lab("creatinine", 0.8, at=ago(5)), lab("weight", 70, at=ago(5)),
                 lab("magnesium", 1.5, at=ago(0)))
    assert fired(rec) == {}


def test_femg_needed_suggests_three_service_requests():
    f = fired(record(lab("magnesium", 1.5), *normal_kidneys()))["femg-needed"]
    (s,) = f.suggestions
    codes = [a.resource["code"]["coding"][0]["code"] for a in s.actions]
    assert codes == ["19124-7", "2161-8", "2160-0"]
    for a in s.actions:
        r = a.resource
        assert r["resourceType"] == "ServiceRequest" and r["status"] == "draft" and r["intent"] in ("proposal", "order")
        assert r["subject"] == {"reference": "Patient/p1"} and r["code"]["coding"][0]["system"] == LOINC
    assert "missing: spot urine magnesium" in f.detail


def test_femg_needed_leaves_out_tests_already_drafted():
    rec = record(lab("magnesium", 1.5), services=[drafted_test("19124-7")])
    f = run("femg-needed", rec)
    assert [a.resource["code"]["coding"][0]["code"] for a in f.suggestions[0].actions] == ["2161-8", "2160-0"]
    all_drafted = record(lab("magnesium", 1.5), services=[drafted_test(c) for c in ("19124-7", "2161-8", "2160-0")])
    assert run("femg-needed", all_drafted) is None


def test_femg_needed_silent_without_low_magnesium():
    assert run("femg-needed", record(lab("magnesium", 1.9))) is None


@settings(max_examples=60)
@given(u_mg=st.floats(0.5, 40))
def test_exactly_one_femg_card_whatever_the_urine_magnesium(u_mg):
    out = fired(femg_record(u_mg))
    assert len(out) == 1 and "femg-needed" not in out


# ---------------------------------------------------------------- renal-replacement-caution
def test_renal_caution_with_low_clearance_and_low_magnesium():
    f = run("renal-replacement-caution", record(lab("magnesium", 1.5), *failing_kidneys()))
    assert f.indicator == "warning" and "Creatinine clearance 13 mL/min" in f.summary
    assert "**13 mL/min** (Cockcroft-Gault)" in f.detail
    assert "20 g magnesium sulfate per 48 h" in f.detail and "81 mmol" in f.detail
    assert "(140 - 66) x 60.0 kg / (72 x 4.00 mg/dL) x 0.85 (female)" in f.detail


def test_renal_caution_uses_deindexed_egfr_and_says_so():
    rec = record(lab("magnesium", 1.5), lab("egfr", 10, at=ago(3)), lab("weight", 80, at=ago(3)), lab("height", 180, at=ago(30)),
                 birth=None)
    f = run("renal-replacement-caution", rec)
    assert "12 mL/min" in f.summary and "de-indexed reported eGFR" in f.detail  # 10 x 2.0 / 1.73 = 11.6 mL/min


@pytest.mark.parametrize("scr, fires", [
    # woman 66 y, 60 kg: CrCl = 74 x 60 / (72 x scr) x 0.85 = 52.4167 / scr; < 20 when scr > 2.6208
    (2.62, False), (2.63, True)])
def test_renal_caution_boundary(scr, fires):
    rec = record(lab("magnesium", 1.5), lab("creatinine", scr, at=ago(2)), lab("weight", 60, at=ago(2)))
    assert (run("renal-replacement-caution", rec) is not None) is fires


def test_renal_caution_quiet_when_magnesium_is_not_in_play():
    assert run("renal-replacement-caution", record(lab("magnesium", 2.0), *failing_kidneys())) is None


def test_renal_caution_missing_data_said_only_when_a_magnesium_order_is_drafted():
    drafted = med("magnesium sulfate", route="intravenous", draft=True)
    assert run("renal-replacement-caution", record(lab("magnesium", 1.5))) is None
    f = run("renal-replacement-caution", record(lab("magnesium", 1.5), drafts=[drafted]), "order-sign")
    assert f.indicator == "info" and "Kidney function unknown" in f.summary
    assert "a serum creatinine, eGFR or measured creatinine clearance in the last 90 days" in f.detail
    ckd4 = ConditionFact("ckd_stage_4", "CKD stage 4", (("http://snomed.info/sct", "431857002"),), "active", None,
                         SourceRef("Condition", "ckd"))
    f2 = run("renal-replacement-caution", record(lab("magnesium", 1.5), drafts=[drafted], conditions=[ckd4]), "order-sign")
    assert f2.indicator == "warning" and "CKD stage 4 (Condition/ckd)" in f2.detail and "unknown" in f2.summary
    ckd5 = ConditionFact("kidney_failure", "CKD stage 5", (("http://snomed.info/sct", "433146000"),), "active", None,
                         SourceRef("Condition", "ckd5"))
    f3 = run("renal-replacement-caution", record(lab("magnesium", 1.5), drafts=[drafted], conditions=[ckd5]), "order-sign")
    assert f3.indicator == "warning" and "below 20 mL/min" in f3.summary and "CKD stage 5 (Condition/ckd5)" in f3.detail


def test_renal_caution_not_on_order_hooks_without_a_magnesium_draft():
    rec = record(lab("magnesium", 1.5), *failing_kidneys(), drafts=[med("furosemide", draft=True)])
    assert run("renal-replacement-caution", rec, "order-sign") is None
    assert run("renal-replacement-caution", rec, "patient-view") is not None


def test_stale_creatinine_is_not_used():
    rec = record(lab("magnesium", 1.5), lab("creatinine", 4.0, at=ago(91)), lab("weight", 60, at=ago(2)),
                 birth=date(1960, 5, 1))
    assert run("renal-replacement-caution", rec) is None
