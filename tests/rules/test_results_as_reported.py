"""Issue 10 item 5, results as reported: comparators kept through unit conversion, shown, and never used as exact
values in formulas; the latest version of an Observation wins; duplicates count once; a newer result that could
not be read is named on the card that uses an older one."""
from __future__ import annotations

import pytest

from cds_service.audit.invocation import snapshot
from cds_service.audit.replay import record_from_snapshot
from cds_service.record.builder import RecordBuilder, ResolvedData
from cds_service.record.derived import censored_bound, femg
from cds_service.rules.base import fmt_lab, value_text
from cds_service.rules.common import below, magnesium_low, unreadable_note
from tests.rules.rules_factory import NOW, K, ago, ctx, lab, record, run


def _obs(oid, value, unit="mg/dL", code="19123-9", day="2026-11-24T08:00:00Z", comparator=None, version=None,
         updated=None, status="final", **extra):
    o = {"resourceType": "Observation", "id": oid, "status": status,
         "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "subject": {"reference": "Patient/p1"},
         "effectiveDateTime": day}
    if value is not None:
        o["valueQuantity"] = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
        if comparator:
            o["valueQuantity"]["comparator"] = comparator
    meta = {k: v for k, v in (("versionId", version), ("lastUpdated", updated)) if v is not None}
    if meta:
        o["meta"] = meta
    o.update(extra)
    return o


def _build(*observations, keys=None):
    """The real builder over one or more prefetch keys of Observations."""
    keys = keys or {"labs": list(observations)}
    values = {k: {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": o} for o in obs]}
              for k, obs in keys.items()}
    return RecordBuilder(K, NOW).build("p1", ResolvedData(values=values, key_types={k: "Observation" for k in keys}))


# ---------------------------------------------------------------- comparators
def test_a_comparator_is_kept_through_unit_conversion_on_both_parse_paths():
    clean = _obs("c1", 0.2, "mmol/L", "2601-3", comparator="<")
    odd = dict(_obs("c2", 0.2, "mmol/L", "2601-3", comparator=" < ", day="2026-11-23T08:00:00Z"),
               interpretation={"coding": [{"code": "LL"}]})  # a single object where R4 wants a list: tolerant path
    rec = _build(clean, odd)
    got = {r.source.id: r for r in rec.results("magnesium")}
    assert got["c1"].comparator == "<" and got["c2"].comparator == "<"
    assert got["c1"].value == pytest.approx(0.2 * 24.305 / 10)
    assert value_text(got["c1"]) == "<0.49 mg/dL (reported <0.2 mmol/L)"


def test_a_censored_value_is_shown_as_reported_never_as_a_rounded_number():
    r = lab("magnesium", 0.5, comparator="<", at=ago(1), rid="m1")
    assert value_text(r) == "<0.5 mg/dL"
    assert fmt_lab(r).startswith("<0.5 mg/dL on ")
    f = run("hypomagnesemia", record(r))
    assert f.indicator == "critical"  # "<0.5" is low, and severe
    assert "<0.5 mg/dL" in f.summary and "0.50" not in f.summary and "0.50" not in f.detail
    assert "<0.21 mmol/L" in f.summary


def test_an_unknown_comparator_makes_the_result_unreadable_not_exact():
    rec = _build(_obs("x", 0.5, comparator="~"))
    assert rec.results("magnesium") == []
    assert [u.source.id for u in rec.unreadable["magnesium"]] == ["x"]
    assert any(g.kind == "value-unreadable" for g in rec.gaps)


@pytest.mark.parametrize("value, comparator, limit, expected", [
    (0.5, "<", 1.2, True), (1.2, "<", 1.2, True), (1.2, "<=", 1.2, False), (2.0, "<", 1.8, False),
    (1.0, ">", 1.8, False), (1.0, None, 1.8, True), (1.8, None, 1.8, False),
])
def test_below_is_certain_below(value, comparator, limit, expected):
    assert below(lab("magnesium", value, comparator=comparator), limit) is expected


def test_a_censored_magnesium_that_straddles_the_limit_is_not_called_low():
    assert not magnesium_low(ctx(record()), lab("magnesium", 2.0, comparator="<"))
    assert run("hypomagnesemia", record(lab("magnesium", 2.0, comparator="<"))) is None


@pytest.mark.parametrize("effects, expected", [
    ([], None), ([("<", 1)], "<"), ([("<=", 1)], "<="), ([("<", -1)], ">"), ([(">", 1), ("<", -1)], ">"),
    ([("<", 1), ("<", -1)], "indeterminate"), ([(">=", 1), ("<=", -1)], ">="),
])
def test_censored_bound_direction(effects, expected):
    inputs = [(lab("magnesium", 1.0, comparator=c), sign) for c, sign in effects] + [(lab("magnesium", 1.0), 1)]
    assert censored_bound(inputs) == expected


def _femg_rec(u_mg, p_mg=1.3, u_mg_cmp=None, p_mg_cmp=None, u_cr=100.0):
    return record(lab("magnesium", p_mg, at=ago(1), comparator=p_mg_cmp), lab("creatinine", 0.8, at=ago(1)),
                  lab("urine_magnesium", u_mg, at=ago(1), comparator=u_mg_cmp), lab("urine_creatinine", u_cr, at=ago(1)),
                  lab("weight", 70, at=ago(1)))


def test_femg_from_a_censored_urine_magnesium_is_an_upper_bound():
    d, _ = femg(_femg_rec(1.0, u_mg_cmp="<"), 24)  # FEMg < (1.0 x 0.8)/(0.7 x 1.3 x 100) x 100 = 0.88 %
    assert d.extra == {"bound": "<"} and d.value == pytest.approx(0.879, abs=1e-3)
    assert "U_Mg <1.00" in d.formula


def test_an_upper_bound_below_the_cutoff_still_supports_extrarenal_loss():
    rec = _femg_rec(1.0, u_mg_cmp="<")
    f = run("femg-extrarenal-loss", rec)
    assert f is not None and "FEMg < 0.9 %" in f.summary
    assert run("femg-renal-wasting", rec) is None and run("femg-needed", rec) is None


def test_an_upper_bound_that_straddles_the_cutoff_is_indeterminate():
    rec = _femg_rec(5.0, u_mg_cmp="<")  # FEMg < 4.4 %: could be either side of 2 %
    assert run("femg-extrarenal-loss", rec) is None and run("femg-renal-wasting", rec) is None
    f = run("femg-needed", rec)
    assert f is not None and "indeterminate" in f.summary and "24-hour urine magnesium" in f.summary
    assert "indeterminate (computed 4.40 %" not in f.detail  # an upper bound, not an indeterminate computation
    assert "FEMg: **< 4.40 %**" in f.detail
    (action,) = f.suggestions[0].actions
    assert action.resource["code"]["coding"][0]["code"] == "24447-5"


def test_a_censored_serum_magnesium_makes_femg_a_lower_bound():
    # P_Mg "<0.9" (low and severe): FEMg > (4.0 x 0.8)/(0.7 x 0.9 x 100) x 100 = 5.1 %: renal wasting
    rec = _femg_rec(4.0, p_mg=0.9, p_mg_cmp="<")
    f = run("femg-renal-wasting", rec)
    assert f is not None and "FEMg > 5.1 %" in f.summary and "renal magnesium wasting" in f.summary
    # a lower bound below the cut-off is indeterminate
    low = _femg_rec(0.5, p_mg=0.9, p_mg_cmp="<")  # FEMg > 0.63 %
    assert run("femg-renal-wasting", low) is None and run("femg-extrarenal-loss", low) is None
    assert "indeterminate" in run("femg-needed", low).summary


def test_inputs_censored_both_ways_make_femg_indeterminate():
    rec = _femg_rec(0.5, p_mg=0.9, u_mg_cmp="<", p_mg_cmp="<")
    d, _ = femg(rec, 24)
    assert d.extra["bound"] == "indeterminate"
    assert run("femg-extrarenal-loss", rec) is None and run("femg-renal-wasting", rec) is None
    assert "indeterminate" in run("femg-needed", rec).detail


# ---------------------------------------------------------------- versions and duplicates
def test_the_latest_version_of_an_observation_wins_whatever_the_order_it_is_sent_in():
    v1 = _obs("m", 0.9, version="1", updated="2026-11-24T09:00:00Z")
    v2 = _obs("m", 1.9, version="2", updated="2026-11-24T11:00:00Z")
    for order in ((v1, v2), (v2, v1)):
        rec = _build(*order)
        (r,) = rec.results("magnesium")
        assert r.value == 1.9 and r.source.version == "2"
        assert [n.kind for n in rec.notes] == ["version-superseded"] and not rec.gaps
    # split across two prefetch keys, the older one first: still the latest
    rec = _build(keys={"a": [v1], "b": [v2]})
    assert [r.value for r in rec.results("magnesium")] == [1.9]
    assert run("hypomagnesemia", rec) is None


def test_last_updated_decides_when_version_ids_are_not_numbers():
    old = _obs("m", 0.9, version="a7f", updated="2026-11-24T09:00:00+00:00")
    new = _obs("m", 2.0, version="0c1", updated="2026-11-24T12:00:00+00:00")
    assert [r.value for r in _build(new, old).results("magnesium")] == [2.0]
    assert [r.value for r in _build(old, new).results("magnesium")] == [2.0]


def test_a_later_entered_in_error_version_withdraws_the_result():
    v1 = _obs("m", 0.9, version="1")
    v2 = _obs("m", 0.9, version="2", status="entered-in-error")
    rec = _build(v1, v2)
    assert rec.results("magnesium") == []
    assert run("hypomagnesemia", rec) is None


def test_versions_that_cannot_be_ordered_keep_the_first_and_say_so():
    rec = _build(_obs("m", 0.9, version="x"), _obs("m", 2.0, version="y"))
    assert [r.value for r in rec.results("magnesium")] == [0.9]
    assert [g.kind for g in rec.gaps] == ["version-unordered"]


def test_the_same_result_under_two_ids_counts_once_and_is_noted_for_the_audit_only():
    a = _obs("a", 1.4, day="2026-11-20T08:00:00Z")
    b = _obs("b", 1.4, day="2026-11-20T08:00:00Z")
    b_in_mmol = _obs("c", round(1.4 * 10 / 24.305, 6), "mmol/L", "2601-3", day="2026-11-20T08:00:00Z")
    other_time = _obs("d", 1.4, day="2026-11-23T08:00:00Z")
    rec = _build(a, b, other_time)
    assert [r.source.id for r in rec.results("magnesium")] == ["d", "a"]
    assert [n.kind for n in rec.notes] == ["duplicate-result"] and "Observation/b repeats Observation/a" in rec.notes[0].what
    assert not rec.gaps  # nothing is missing: no data-gaps card
    assert len(_build(a, b_in_mmol).results("magnesium")) == 1  # same value in another unit: same result
    # refractory persistence needs two distinct results: a duplicate does not make one
    from tests.rules.rules_factory import med
    rec2 = _build(a, b)
    rec2.medications = [med("magnesium oxide", route="oral", start=ago(60))]
    assert run("refractory-hypomagnesemia", rec2) is None


# ---------------------------------------------------------------- unreadable newer results
def test_a_newer_unreadable_result_is_named_on_the_card_that_uses_the_older_value():
    older = _obs("old", 1.3, day="2026-11-20T08:00:00Z")
    no_value = _obs("nv", None, day="2026-11-24T08:00:00Z", dataAbsentReason={"text": "haemolysed"})
    bad_unit = _obs("bu", 1.9, "mg%", day="2026-11-23T08:00:00Z")
    bad_value = _obs("bv", None, day="2026-11-22T08:00:00Z", valueQuantity={"value": "1,9", "unit": "mg/dL"})
    rec = _build(older, no_value, bad_unit, bad_value)
    assert [u.source.id for u in rec.unreadable["magnesium"]] == ["nv", "bu", "bv"]
    f = run("hypomagnesemia", rec)
    assert f is not None and "Observation/old" in f.detail
    for oid, day in (("nv", "2026-11-24"), ("bu", "2026-11-23"), ("bv", "2026-11-22")):
        assert f"a newer magnesium result of {day} (" in f.detail and f"Observation/{oid}" in f.detail
    assert "unit 'mg%' cannot be interpreted" in f.detail


def test_an_unreadable_result_older_than_the_value_used_is_not_named():
    rec = _build(_obs("new", 1.3, day="2026-11-24T08:00:00Z"), _obs("nv", None, day="2026-11-20T08:00:00Z"))
    assert unreadable_note(ctx(rec), rec.latest("magnesium")) == []
    assert "could not be read" not in run("hypomagnesemia", rec).detail


def test_unreadable_results_and_notes_survive_the_audit_snapshot():
    rec = _build(_obs("old", 1.3, day="2026-11-20T08:00:00Z"), _obs("nv", None), _obs("dup", 1.3, day="2026-11-20T08:00:00Z"))
    back = record_from_snapshot(snapshot(rec), K)
    assert back.unreadable == rec.unreadable and back.notes == rec.notes
    assert run("hypomagnesemia", back).detail == run("hypomagnesemia", rec).detail


def test_every_card_names_newer_unreadable_results_of_the_values_it_uses():
    """The engine's safety net: a rule that does not name them itself (here magnesium-wasting-drug) still does."""
    from cds_service.decide import evaluate_rules
    from tests.rules.rules_factory import med

    rec = _build(_obs("old", 1.4, day="2026-11-20T08:00:00Z"), _obs("nv", None, day="2026-11-24T08:00:00Z"))
    rec.medications = [med("furosemide", start=ago(200), route="oral")]
    findings, _, errors = evaluate_rules(ctx(rec))
    assert not errors
    by_rule = {f.rule: f for f in findings}
    wasting = by_rule["magnesium-wasting-drug"]
    assert "a newer magnesium result of 2026-11-24 (1 day ago) could not be read (no numeric value): Observation/nv" in wasting.detail
    assert any(f.get("kind") == "unreadable-lab" for f in wasting.facts)
    # named once, not again by the safety net, on the card whose rule names it itself
    assert by_rule["hypomagnesemia"].detail.count("Observation/nv") == 1


def test_a_censored_magnesium_is_graded_by_the_largest_value_it_allows():
    f = run("hypomagnesemia", record(lab("magnesium", 0.9, comparator="<", at=ago(1))))
    assert "CTCAE grade at least 3" in f.detail  # "<0.9" is below 0.9: grade 3 or 4, never 2
    assert "CTCAE grade 2." in run("hypomagnesemia", record(lab("magnesium", 0.9, at=ago(1)))).detail
