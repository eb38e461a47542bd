"""Order-level rules: order-select sees the selected drafts only, order-sign every draft; never patient-view."""
from __future__ import annotations

import pytest

from cds_service.rules.doses import administrations_per_48h, magnesium_dose
from tests.rules.rules_factory import K, ago, drafted_test, failing_kidneys, lab, med, normal_kidneys, record, run

ORDER_RULES = ("order-wasting-drug", "order-potassium-without-magnesium", "order-magnesium-renal", "order-iv-magnesium",
               "order-vitamin-d-analogue")


# ---------------------------------------------------------------- scope
def test_order_rules_never_run_on_patient_view():
    rec = record(lab("magnesium", 1.0), *failing_kidneys(),
                 drafts=[med("furosemide", draft=True), med("potassium chloride", draft=True),
                         med("magnesium sulfate", route="intravenous", dose=(30, "g"), draft=True), med("calcitriol", draft=True)])
    assert all(run(r, rec, "patient-view") is None for r in ORDER_RULES)
    assert all(run(r, rec, "order-sign") is not None for r in ORDER_RULES)


def test_order_select_uses_only_selected_drafts_order_sign_all():
    drafts = [med("furosemide", draft=True, rid="lasix"), med("omeprazole", draft=True, selected=True, rid="ppi")]
    rec = record(lab("magnesium", 1.5), drafts=drafts)
    sel = run("order-wasting-drug", rec, "order-select")
    assert [s.actions[0].resource_id for s in sel.suggestions] == ["MedicationRequest/ppi"]
    sign = run("order-wasting-drug", rec, "order-sign")
    assert [s.actions[0].resource_id for s in sign.suggestions] == ["MedicationRequest/lasix", "MedicationRequest/ppi"]
    none_selected = record(lab("magnesium", 1.5), drafts=[med("furosemide", draft=True)])
    assert run("order-wasting-drug", none_selected, "order-select") is None


# ---------------------------------------------------------------- order-wasting-drug
def test_wasting_draft_warning_with_delete_and_override_reasons():
    # a PPI has a safer alternative: "remove the draft" is offered (chemotherapy: see test_medication_safety.py)
    f = run("order-wasting-drug", record(lab("magnesium", 1.5), drafts=[med("pantoprazole", draft=True, rid="ppi")]), "order-sign")
    assert f.indicator == "warning" and "Pantoprazole" in f.summary and "1.50 mg/dL" in f.summary
    (s,) = f.suggestions
    (a,) = s.actions
    assert a.type == "delete" and a.resource_id == "MedicationRequest/ppi" and a.resource is None
    assert {o.code for o in f.override_reasons} >= {"benefit-outweighs-risk", "magnesium-being-replaced"}
    assert "proton-pump inhibitor" in f.detail


def test_wasting_draft_quiet_when_magnesium_normal_or_unmeasured():
    assert run("order-wasting-drug", record(lab("magnesium", 1.8), drafts=[med("furosemide", draft=True)]), "order-sign") is None
    assert run("order-wasting-drug", record(drafts=[med("furosemide", draft=True)]), "order-sign") is None


def test_wasting_draft_from_text_is_said():
    d = med("foscarnet", label="Foscavir infusion", by_text=True, draft=True)
    f = run("order-wasting-drug", record(lab("magnesium", 1.5), drafts=[d]), "order-sign")
    assert "identified from the medication text 'Foscavir infusion'" in f.detail


# ---------------------------------------------------------------- order-potassium-without-magnesium
def test_potassium_draft_with_low_magnesium_suggests_oral_magnesium():
    f = run("order-potassium-without-magnesium", record(lab("magnesium", 1.5), lab("potassium", 3.0),
                                                          drafts=[med("potassium chloride", draft=True)]), "order-sign")
    (s,) = f.suggestions
    res = s.actions[0].resource
    assert res["resourceType"] == "MedicationRequest" and res["medicationCodeableConcept"]["text"] == "Magnesium oxide"
    dosage = res["dosageInstruction"][0]
    assert "at bedtime" in dosage["text"]
    assert dosage["timing"]["repeat"] == {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["HS"]}
    assert dosage["doseAndRate"][0]["doseQuantity"] == {"value": 12.0, "unit": "mmol", "system": "http://unitsofmeasure.org",
                                                        "code": "mmol"}
    assert "potassium: **3.0 mmol/L" in f.detail


def test_potassium_draft_with_severe_magnesium_suggests_iv_and_says_renal_limit():
    f = run("order-potassium-without-magnesium", record(lab("magnesium", 1.0), *failing_kidneys(),
                                                          drafts=[med("potassium chloride", draft=True)]), "order-sign")
    res = f.suggestions[0].actions[0].resource
    assert res["medicationCodeableConcept"]["coding"][0]["code"] == "6585"
    assert res["dosageInstruction"][0]["route"]["coding"][0]["code"] == "47625008"
    # creatinine clearance 13 mL/min: the suggestion agrees with the kidney card: loading dose only, the ceiling carried
    assert "at most 20 g magnesium sulfate" in f.suggestions[0].label and "repeat serum magnesium" in f.suggestions[0].label
    assert len(res["dosageInstruction"]) == 1 and res["dosageInstruction"][0]["maxDosePerPeriod"]["numerator"]["value"] == 20
    assert "4-5 g" not in f.suggestions[0].label and "below 20 mL/min" in f.detail


@pytest.mark.parametrize("labs, services, expect", [
    ((), (), "order-magnesium"),                                  # never measured
    ((lab("magnesium", 2.0, at=ago(8)),), (), "order-magnesium"),  # 8 days old: not recent
    ((lab("magnesium", 2.0, at=ago(7)),), (), None),               # 7 days: recent and normal
    ((), (drafted_test("19123-9"),), None),                        # a magnesium test is already drafted
])
def test_potassium_draft_without_recent_magnesium(labs, services, expect):
    f = run("order-potassium-without-magnesium", record(*labs, services=services, drafts=[med("potassium citrate", draft=True)]),
            "order-sign")
    assert (f.suggestions[0].key if f else None) == expect
    if f:
        assert f.suggestions[0].actions[0].resource["code"]["coding"][0]["code"] == "19123-9"


# ---------------------------------------------------------------- doses
@pytest.mark.parametrize("dose, mmol, grams", [
    ((2, "g"), 8.12, 2.0),            # 2 g x 4.06
    ((2000, "mg"), 8.12, 2.0),
    ((8.12, "mmol"), 8.12, 2.0),      # 8.12 / 4.06 = 2 g
    ((16.2, "mEq"), 8.1, 2.0),        # 16.2 mEq / 2 = 8.1 mmol; 16.2 / 8.1 = 2 g
])
def test_magnesium_sulfate_dose_units(dose, mmol, grams):
    d = magnesium_dose(med("magnesium sulfate", dose=dose, draft=True), K)
    assert d.mmol == pytest.approx(mmol, abs=1e-9) and d.sulfate_g == pytest.approx(grams, abs=1e-9)


def test_magnesium_oxide_dose_and_unknown_units():
    # 400 mg / 40.30 mg/mmol = 9.926 mmol
    assert magnesium_dose(med("magnesium oxide", dose=(400, "mg")), K).mmol == pytest.approx(9.9256, abs=1e-4)
    assert magnesium_dose(med("magnesium sulfate", dose=(2, "tablet")), K) is None
    assert magnesium_dose(med("magnesium sulfate"), K) is None


@pytest.mark.parametrize("text, n", [("every 6 hours", 8), ("q12h", 4), ("twice daily", 4), ("BID", 4), ("TID", 6),
                                     ("once daily", 2), ("at night", 2), ("stat", 1), ("once", 1), ("as directed", None), (None, None)])
def test_administrations_per_48h(text, n):
    assert administrations_per_48h(text) == n


# ---------------------------------------------------------------- order-magnesium-renal
@pytest.mark.parametrize("dose, timing, indicator", [
    ((20, "g"), "once", "warning"),          # exactly the ceiling: not above it
    ((20.5, "g"), "once", "critical"),
    ((5, "g"), "every 12 hours", "warning"),  # 4 x 5 g = 20 g per 48 h
    ((6, "g"), "every 12 hours", "critical"), # 24 g per 48 h
    ((82, "mmol"), None, "critical"),        # 82 mmol > 81.2 mmol per dose
    ((160, "mEq"), None, "warning"),         # 80 mmol, frequency unknown
])
def test_magnesium_draft_with_low_clearance(dose, timing, indicator):
    d = med("magnesium sulfate", route="intravenous", dose=dose, timing=timing, draft=True)
    f = run("order-magnesium-renal", record(lab("magnesium", 1.5), *failing_kidneys(), drafts=[d]), "order-sign")
    assert f.indicator == indicator
    assert "20 g magnesium sulfate per 48 h" in f.detail and "Cockcroft-Gault" in f.detail
    if timing is None:  # frequency unknown: at least one dose counts
        assert "48-h total could not be computed" in f.detail and "at least" in f.detail


def test_magnesium_draft_renal_not_with_normal_clearance_or_unknown():
    d = med("magnesium oxide", dose=(400, "mg"), draft=True)
    assert run("order-magnesium-renal", record(*normal_kidneys(), drafts=[d]), "order-sign") is None
    assert run("order-magnesium-renal", record(drafts=[d]), "order-sign") is None


# ---------------------------------------------------------------- order-iv-magnesium
def test_iv_magnesium_regimen_by_severity_and_toxicity_watch():
    d = med("magnesium sulfate", route="intravenous", dose=(2, "g"), draft=True)
    severe = run("order-iv-magnesium", record(lab("magnesium", 1.1), *normal_kidneys(), drafts=[d]), "order-sign")
    assert severe.indicator == "info" and "1-2 g IV over 15 min, then 4-5 g in 250 mL over 3 h" in severe.summary
    assert "patellar reflexes" in severe.detail and "calcium chloride" in severe.detail and "respiratory" in severe.detail
    mild = run("order-iv-magnesium", record(lab("magnesium", 1.5), drafts=[d]), "order-sign")
    assert "oral first unless symptomatic" in mild.summary and "kidney function: **unknown**" in mild.detail
    normal = run("order-iv-magnesium", record(lab("magnesium", 2.2), drafts=[d]), "order-sign")
    assert normal.indicator == "warning" and "in range" in normal.summary and normal.override_reasons
    unmeasured = run("order-iv-magnesium", record(drafts=[d]), "order-sign")
    assert unmeasured.indicator == "warning" and "never measured" in unmeasured.summary


def test_iv_magnesium_only_for_iv_sulfate():
    oral = med("magnesium oxide", route="oral", draft=True)
    sc = med("magnesium sulfate", route="subcutaneous", draft=True)
    assert run("order-iv-magnesium", record(lab("magnesium", 1.1), drafts=[oral, sc]), "order-sign") is None


# ---------------------------------------------------------------- order-vitamin-d-analogue
def test_vitamin_d_draft_weekly_calcium_and_high_calcium_warning():
    d = med("alfacalcidol", dose=(0.25, "ug"), draft=True)
    f = run("order-vitamin-d-analogue", record(lab("calcium", 9.4), drafts=[d]), "order-sign")
    assert f.indicator == "info" and "weekly" in f.summary
    res = f.suggestions[0].actions[0].resource
    assert res["code"]["coding"][0]["code"] == "17861-6" and res["occurrenceTiming"]["repeat"]["period"] == 7
    high = run("order-vitamin-d-analogue", record(lab("calcium", 2.7, "mmol/L"), drafts=[d]), "order-sign")  # 10.82 mg/dL
    assert high.indicator == "warning" and "already high" in high.summary and high.override_reasons
    big = run("order-vitamin-d-analogue", record(lab("calcium", 9.0), drafts=[med("alfacalcidol", dose=(10, "mcg"), draft=True)]),
              "order-sign")
    assert big.indicator == "warning" and "one dose of 10 µg > 9 µg a day" in big.detail


def test_vitamin_d_draft_lab_range_wins_and_no_calcium():
    d = med("calcitriol", draft=True)
    assert run("order-vitamin-d-analogue", record(lab("calcium", 10.4, ref_high=10.2), drafts=[d]), "order-sign").indicator == "warning"
    f = run("order-vitamin-d-analogue", record(drafts=[d], services=[drafted_test("17861-6")]), "order-sign")
    assert "no calcium on record" in f.summary and f.suggestions == ()
