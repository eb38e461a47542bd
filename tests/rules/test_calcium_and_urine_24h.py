"""Issue 10 item 7 (calcium judged on ionized, else albumin-corrected, else total calcium) and item 8 (a 24-hour
urine magnesium as evidence of renal wasting or conservation, like FEMg)."""
from __future__ import annotations

import pytest

from cds_service.rules.calcium import calcium_status
from tests.rules.rules_factory import K, ago, ctx, lab, med, normal_kidneys, record, run

CALCIUM = med("calcium carbonate", start=ago(60))


def _hypocalcemia(*labs, mg=1.4):
    return record(*labs, lab("magnesium", mg, at=ago(1)), meds=[CALCIUM])


# ---------------------------------------------------------------- calcium_status
def test_total_calcium_alone_is_judged_as_total():
    s = calcium_status(ctx(record(lab("calcium", 7.8, at=ago(1)))))
    assert s.basis == "total" and s.low and not s.high and s.shown == "7.80 mg/dL"


def test_albumin_corrects_total_calcium_with_the_knowledge_formula():
    # 7.6 + 0.8 x (4.0 - 2.0) = 9.2 mg/dL: normal
    s = calcium_status(ctx(record(lab("calcium", 7.6, at=ago(1)), lab("albumin", 2.0, at=ago(1)))))
    assert s.basis == "albumin-corrected" and s.value == pytest.approx(9.2) and not s.low
    assert K.threshold("calcium_albumin_correction_factor").value == 0.8
    assert K.threshold("calcium_albumin_reference_g_dl").value == 4.0
    assert "7.60 mg/dL + 0.8 x (4 - albumin 2.0 g/dL)" in s.corrected.formula
    # albumin in g/L is converted first: 20 g/L = 2.0 g/dL
    s2 = calcium_status(ctx(record(lab("calcium", 7.6, at=ago(1)), lab("albumin", 20, "g/L", at=ago(1)))))
    assert s2.value == pytest.approx(9.2)


def test_an_albumin_outside_the_pairing_window_does_not_correct():
    s = calcium_status(ctx(record(lab("calcium", 7.6, at=ago(1)), lab("albumin", 2.0, at=ago(10)))))
    assert s.basis == "total" and s.low


def test_a_recent_ionized_calcium_decides_over_total_and_albumin():
    rec = record(lab("calcium", 7.2, at=ago(1)), lab("albumin", 3.8, at=ago(1)), lab("calcium_ionized", 1.20, at=ago(1)))
    s = calcium_status(ctx(rec))
    assert s.basis == "ionized" and not s.low and s.unit == "mmol/L"
    old_ionized = record(lab("calcium", 7.2, at=ago(1)), lab("calcium_ionized", 1.20, at=ago(30)))
    assert calcium_status(ctx(old_ionized)).basis == "total"


def test_a_censored_total_calcium_with_albumin_is_a_bound():
    s = calcium_status(ctx(record(lab("calcium", 6.0, at=ago(1), comparator="<"), lab("albumin", 3.5, at=ago(1)))))
    assert s.bound == "<" and s.low and s.shown == "<6.40 mg/dL"


# ---------------------------------------------------------------- refractory hypocalcemia
def test_low_total_calcium_with_low_albumin_and_normal_ionized_calcium_is_not_refractory_hypocalcemia():
    rec = _hypocalcemia(lab("calcium", 7.4, at=ago(1)), lab("calcium", 7.5, at=ago(5)), lab("albumin", 2.4, at=ago(1)),
                        lab("albumin", 2.5, at=ago(5)), lab("calcium_ionized", 1.18, at=ago(1)))
    assert run("refractory-hypocalcemia", rec) is None
    # without the ionized calcium, the albumin-corrected calcium (8.68 mg/dL) is normal too
    rec_no_ica = _hypocalcemia(lab("calcium", 7.4, at=ago(1)), lab("calcium", 7.5, at=ago(5)), lab("albumin", 2.4, at=ago(1)),
                               lab("albumin", 2.5, at=ago(5)))
    assert run("refractory-hypocalcemia", rec_no_ica) is None
    # and without albumin the old judgement on total calcium stands (and says so)
    f = run("refractory-hypocalcemia", _hypocalcemia(lab("calcium", 7.4, at=ago(1)), lab("calcium", 7.5, at=ago(5))))
    assert f is not None and "total calcium 7.40 mg/dL" in f.summary and "uncorrected" in f.detail


def test_refractory_hypocalcemia_on_ionized_calcium_says_so():
    rec = _hypocalcemia(lab("calcium_ionized", 0.98, at=ago(1)), lab("calcium_ionized", 1.00, at=ago(4)),
                        lab("calcium", 8.9, at=ago(1)), lab("albumin", 4.2, at=ago(1)))
    f = run("refractory-hypocalcemia", rec)
    assert f is not None and "ionized calcium 0.98 mmol/L" in f.summary
    assert "judged on **ionized calcium" in f.detail


def test_refractory_hypocalcemia_on_corrected_calcium_says_so():
    # 7.0 + 0.8 x (4.0 - 3.5) = 7.4 and 7.1 + 0.4 = 7.5 mg/dL: low after correction
    rec = _hypocalcemia(lab("calcium", 7.0, at=ago(1)), lab("calcium", 7.1, at=ago(5)), lab("albumin", 3.5, at=ago(1)),
                        lab("albumin", 3.5, at=ago(5)))
    f = run("refractory-hypocalcemia", rec)
    assert f is not None and "albumin-corrected calcium 7.40 mg/dL" in f.summary
    assert "albumin-corrected calcium 7.50 mg/dL" in f.detail and "0.8 x (4 - albumin 3.5 g/dL)" in f.detail


def test_the_lab_corrected_calcium_is_never_corrected_again():
    rec = _hypocalcemia(lab("calcium_corrected", 7.6, at=ago(1)), lab("calcium_corrected", 7.7, at=ago(5)),
                        lab("albumin", 2.0, at=ago(1)))
    s = calcium_status(ctx(rec))
    assert s.basis == "reported-corrected" and s.value == pytest.approx(7.6)
    f = run("refractory-hypocalcemia", rec)
    assert f is not None and "as reported" in f.summary


def test_vitamin_d_draft_reads_calcium_high_on_the_same_judgement():
    d = med("calcitriol", dose=(0.25, "ug"), draft=True)
    # total 10.0 is normal, but with albumin 2.5 the corrected calcium is 11.2: high
    f = run("order-vitamin-d-analogue", record(lab("calcium", 10.0, at=ago(1)), lab("albumin", 2.5, at=ago(1)), drafts=[d]),
            "order-sign")
    assert f.indicator == "warning" and "albumin-corrected calcium 11.20 mg/dL" in f.summary
    # total 10.9 is high, but a recent ionized calcium 1.25 mmol/L is normal
    f2 = run("order-vitamin-d-analogue", record(lab("calcium", 10.9, at=ago(1)), lab("calcium_ionized", 1.25, at=ago(1)),
                                                drafts=[d]), "order-sign")
    assert f2.indicator == "info" and "ionized calcium 1.25 mmol/L" in f2.summary


# ---------------------------------------------------------------- 24-hour urine magnesium
def _u24(value, mg=1.4, mg_days=1.0, u_days=1.0, comparator=None, extra=()):
    return record(lab("magnesium", mg, at=ago(mg_days)), lab("urine_magnesium_24h", value, at=ago(u_days), comparator=comparator),
                  *normal_kidneys(), *extra)


def test_a_high_24h_urine_magnesium_with_low_serum_magnesium_is_renal_wasting_and_no_femg_is_asked():
    rec = _u24(96)
    f = run("femg-renal-wasting", rec)
    assert f is not None and "24-hour urine magnesium 96 mg/day" in f.summary and "from the 24-hour urine" in f.summary
    assert f.source == "urine-mg-24h" and K.threshold("urine_mg_24h_renal_wasting").source == "urine-mg-24h"
    assert run("femg-needed", rec) is None and run("femg-extrarenal-loss", rec) is None
    # in mmol/day: 2.0 mmol = 48.6 mg/day, above the threshold
    mmol = record(lab("magnesium", 1.4, at=ago(1)), lab("urine_magnesium_24h", 2.0, "mmol/(24.h)", at=ago(1)), *normal_kidneys())
    assert "49 mg/day" in run("femg-renal-wasting", mmol).summary


def test_a_low_24h_urine_magnesium_says_the_kidney_conserves():
    rec = _u24(12)
    f = run("femg-extrarenal-loss", rec)
    assert f is not None and "from the 24-hour urine" in f.summary
    assert run("femg-renal-wasting", rec) is None and run("femg-needed", rec) is None


def test_the_24h_urine_needs_a_low_serum_magnesium_of_the_same_period():
    # serum magnesium 5 days from the collection: outside the 48 h pairing window -> no conclusion, FEMg still asked
    rec = record(lab("magnesium", 1.4, at=ago(1)), lab("urine_magnesium_24h", 96, at=ago(6)), *normal_kidneys())
    assert run("femg-renal-wasting", rec) is None
    assert run("femg-needed", rec) is not None
    # serum magnesium normal: nothing
    assert run("femg-renal-wasting", _u24(96, mg=2.1)) is None


def test_a_censored_24h_urine_magnesium_concludes_only_when_its_bound_does():
    assert run("femg-renal-wasting", _u24(30, comparator=">")) is not None
    assert run("femg-extrarenal-loss", _u24(10, comparator="<")) is not None
    straddles = _u24(50, comparator="<")
    assert run("femg-renal-wasting", straddles) is None and run("femg-extrarenal-loss", straddles) is None
    assert run("femg-needed", straddles) is not None


def test_an_interpretable_femg_decides_and_the_24h_urine_is_shown_alongside():
    femg_rec = record(lab("magnesium", 1.3, at=ago(1)), lab("creatinine", 0.8, at=ago(1)), lab("weight", 70, at=ago(1)),
                      lab("urine_magnesium", 8.0, at=ago(1)), lab("urine_creatinine", 80, at=ago(1)),
                      lab("urine_magnesium_24h", 96, at=ago(1)))
    f = run("femg-renal-wasting", femg_rec)
    assert f is not None and f.summary.startswith("FEMg ") and "24-hour urine magnesium" in f.detail
