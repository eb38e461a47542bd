"""record/derived.py formulas against hand-computed values (written out here, not by calling the code under test)."""
from __future__ import annotations

import math
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds_service.record.derived import (
    bsa_mosteller,
    ckd_epi_2021,
    cockcroft_gault,
    creatinine_clearance,
    femg,
    femg_percent,
    urine_ca_cr_ratio,
)
from cds_service.record.units import convert
from tests.rules.rules_factory import NOW, K, ago, lab, record


def test_cockcroft_gault_textbook_example():
    # 60-year-old man, 72 kg, creatinine 1.0 mg/dL: (140-60) x 72 / (72 x 1.0) = 80 mL/min
    assert cockcroft_gault(60, 72, 1.0, female=False) == pytest.approx(80.0)
    # the same woman: 80 x 0.85 = 68 mL/min
    assert cockcroft_gault(60, 72, 1.0, female=True) == pytest.approx(68.0)


def test_cockcroft_gault_severe_renal_failure():
    # 80-year-old woman, 50 kg, creatinine 3.0: (60 x 50) / 216 x 0.85 = 3000/216*0.85 = 11.805...
    assert cockcroft_gault(80, 50, 3.0, female=True) == pytest.approx(11.8056, abs=1e-3)


def test_ckd_epi_2021_male_above_kappa():
    # 50-year-old man, creatinine 1.0 mg/dL: 142 x (1.0/0.9)^-1.200 x 0.9938^50
    # (1/0.9)^-1.2 = 0.881234; 0.9938^50 = 0.732740; 142 x 0.881234 x 0.732740 = 91.69 (MDCalc shows 92)
    assert ckd_epi_2021(50, 1.0, female=False) == pytest.approx(91.69, abs=0.02)


def test_ckd_epi_2021_female_below_kappa():
    # 40-year-old woman, creatinine 0.6: 142 x (0.6/0.7)^-0.241 x 0.9938^40 x 1.012
    # (0.857143)^-0.241 = 1.03784; 0.9938^40 = 0.77980; 142 x 1.03784 x 0.77980 x 1.012 = 116.30
    assert ckd_epi_2021(40, 0.6, female=True) == pytest.approx(116.30, abs=0.05)


def test_bsa_mosteller():
    # sqrt(180 cm x 80 kg / 3600) = sqrt(4) = 2.0 m2
    assert bsa_mosteller(180, 80) == pytest.approx(2.0)


def test_femg_percent_worked_example():
    # U_Mg 5, P_Cr 1.0, P_Mg 1.5, U_Cr 100 (mg/dL): 5 x 1 / (0.7 x 1.5 x 100) x 100 = 500/105 = 4.7619 %
    assert femg_percent(5.0, 1.0, 1.5, 100.0) == pytest.approx(4.7619, abs=1e-4)


def test_unit_conversions_match_the_reference():
    mg = K.model.analytes["magnesium"]
    # 0.74 mmol/L x 24.305 / 10 = 1.7986 mg/dL; 1.48 mEq/L = 0.74 mmol/L (valence 2)
    assert convert(0.74, "mmol/L", mg) == pytest.approx(1.79857, abs=1e-4)
    assert convert(1.48, "meq/L", mg) == pytest.approx(1.79857, abs=1e-4)
    # creatinine 88.42 umol/L = 1 mg/dL (113.12 g/mol)
    assert convert(88.42, "umol/L", K.model.analytes["creatinine"]) == pytest.approx(1.0002, abs=1e-3)


def test_creatinine_clearance_from_record_says_inputs():
    rec = record(lab("creatinine", 1.0, at=ago(3)), lab("weight", 72, at=ago(3)), sex="male", birth=date(1966, 1, 1))
    d, missing = creatinine_clearance(rec, NOW, 90, 365)
    assert missing == []
    # age 60 on 2026-11-25: (140-60) x 72 / (72 x 1.0) = 80
    assert d.value == pytest.approx(80.0)
    assert d.extra["method"] == "cockcroft-gault"
    assert [i.analyte for i in d.inputs] == ["creatinine", "weight"]


def test_creatinine_clearance_falls_back_to_deindexed_egfr():
    rec = record(lab("egfr", 30, at=ago(3)), lab("weight", 80, at=ago(3)), lab("height", 180, at=ago(30)))
    d, _ = creatinine_clearance(rec, NOW, 90, 365)
    # BSA 2.0 m2 (Mosteller); 30 x 2.0 / 1.73 = 34.68 mL/min
    assert d.value == pytest.approx(34.682, abs=1e-3)
    assert d.extra["method"] == "de-indexed-egfr"


def test_creatinine_clearance_missing_is_listed_not_guessed():
    rec = record(lab("creatinine", 1.0, at=ago(200)), sex=None, birth=None)
    d, missing = creatinine_clearance(rec, NOW, 90, 365)
    assert d is None
    assert any("creatinine" in m for m in missing) and any("weight" in m for m in missing)
    assert "date of birth" in missing and any("sex" in m for m in missing)


def test_femg_from_paired_record_in_mixed_units():
    # urine Mg 2.0 mmol/L = 4.861 mg/dL; serum Mg 0.6 mmol/L = 1.4583 mg/dL; serum creatinine 88.42 umol/L = 1.0002 mg/dL;
    # urine creatinine 100 mg/dL. FEMg = 4.861 x 1.0002 / (0.7 x 1.4583 x 100) x 100 = 4.763 %
    rec = record(lab("urine_magnesium", 2.0, "mmol/L", at=ago(1)), lab("magnesium", 0.6, "mmol/L", at=ago(1, hours=3)),
                 lab("creatinine", 88.42, "umol/L", at=ago(1, hours=3)), lab("urine_creatinine", 100, at=ago(1)))
    d, missing = femg(rec, 24)
    assert missing == []
    expected = (2.0 * 24.305 / 10) * (88.42 * 113.12 / 10000) / (0.7 * (0.6 * 24.305 / 10) * 100) * 100
    assert d.value == pytest.approx(expected, rel=1e-9)
    assert d.value == pytest.approx(4.763, abs=1e-3)


def test_femg_requires_same_day_samples():
    rec = record(lab("urine_magnesium", 5, at=ago(1)), lab("urine_creatinine", 100, at=ago(1)),
                 lab("magnesium", 1.4, at=ago(3)), lab("creatinine", 1.0, at=ago(3)))
    d, missing = femg(rec, 24)
    assert d is None
    assert any("same day" in m for m in missing)


def test_urine_ca_cr_computed_from_pair():
    u = lab("urine_calcium", 10, at=ago(1))
    rec = record(u, lab("urine_creatinine", 100, at=ago(1)))
    # 10 mg/dL / 100 mg/dL = 0.1 mg/mg
    assert urine_ca_cr_ratio(rec, u, 24).value == pytest.approx(0.1)


@given(age=st.integers(18, 100), weight=st.floats(30, 200), female=st.booleans(),
       scr=st.floats(0.2, 15), factor=st.floats(1.01, 5))
def test_cockcroft_gault_decreases_with_creatinine(age, weight, female, scr, factor):
    assert cockcroft_gault(age, weight, scr * factor, female) < cockcroft_gault(age, weight, scr, female)


@given(age=st.integers(18, 100), female=st.booleans(), scr=st.floats(0.2, 15), factor=st.floats(1.01, 5))
def test_ckd_epi_decreases_with_creatinine(age, female, scr, factor):
    assert ckd_epi_2021(age, scr * factor, female) < ckd_epi_2021(age, scr, female)


@given(u_mg=st.floats(0.1, 50), p_cr=st.floats(0.3, 10), p_mg=st.floats(0.3, 3), u_cr=st.floats(10, 400),
       more=st.floats(0.01, 20))
def test_femg_monotone_in_urine_magnesium(u_mg, p_cr, p_mg, u_cr, more):
    assert femg_percent(u_mg + more, p_cr, p_mg, u_cr) > femg_percent(u_mg, p_cr, p_mg, u_cr)
    assert math.isfinite(femg_percent(u_mg, p_cr, p_mg, u_cr))
