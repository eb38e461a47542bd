"""Issue 10 item 9 (medications) and item 4's vitamin D part: routes, status semantics, recent exposure,
drafted chemotherapy and anti-infectives, one line per drug, daily vitamin D doses against each drug's own ceiling.
Records are built from FHIR JSON by the real builder where the builder decides; rules are run as the engine would."""
from __future__ import annotations

from dataclasses import replace

import pytest

from cds_service.record.builder import RecordBuilder, ResolvedData
from cds_service.rules.doses import daily_micrograms, doses_per_day
from tests.rules.rules_factory import NOW, K, ago, drafted_test, lab, med, record, run

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"


def _mr(rid: str, code: str, text: str, *, status: str = "active", intent: str = "order", route: dict | None = None,
        dosage_text: str | None = None, authored: str = "2026-11-01T09:00:00Z", repeat: dict | None = None) -> dict:
    dosage: dict = {}
    if dosage_text:
        dosage["text"] = dosage_text
    if route:
        dosage["route"] = route
    if repeat:
        dosage["timing"] = {"repeat": repeat}
    res = {"resourceType": "MedicationRequest", "id": rid, "status": status, "intent": intent,
           "subject": {"reference": "Patient/p1"}, "authoredOn": authored,
           "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}], "text": text}}
    if dosage:
        res["dosageInstruction"] = [dosage]
    return res


def _ms(rid: str, code: str, text: str, *, status: str = "active", start: str = "2026-09-01", end: str | None = None,
        route: dict | None = None) -> dict:
    period = {"start": start} | ({"end": end} if end else {})
    res = {"resourceType": "MedicationStatement", "id": rid, "status": status, "subject": {"reference": "Patient/p1"},
           "effectivePeriod": period, "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}], "text": text}}
    if route:
        res["dosage"] = [{"route": route}]
    return res


def _build(*resources: dict):
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}
    return RecordBuilder(K, NOW).build("p1", ResolvedData(values={"meds": bundle}))


CISPLATIN, CETUXIMAB, TOBRAMYCIN, OMEPRAZOLE, FUROSEMIDE = "2555", "318341", "10627", "7646", "4603"
EYE = {"coding": [{"system": SNOMED, "code": "54485002", "display": "Ophthalmic route"}]}
INHALED = {"coding": [{"system": SNOMED, "code": "447694001", "display": "Respiratory tract route"}]}
IV = {"coding": [{"system": SNOMED, "code": "47625008"}]}


# ---------------------------------------------------------------- status semantics (builder)
@pytest.mark.parametrize("status,intent,state", [
    ("active", "order", "current"), ("active", "plan", "planned"), ("active", "proposal", "planned"),
    ("on-hold", "order", "on-hold"), ("completed", "order", "ended"), ("stopped", "order", "ended"),
    ("draft", "order", "planned"), ("cancelled", "order", None), ("entered-in-error", "order", None),
    ("unknown", "order", None),
])
def test_medication_request_status_and_intent(status, intent, state):
    rec = _build(_mr("x", CISPLATIN, "cisplatin 50 MG Injection", status=status, intent=intent))
    got = [m.state for m in rec.medications] + [m.state for m in rec.medication_history]
    assert got == ([state] if state else [])
    assert [m.state for m in rec.medications] == (["current"] if state == "current" else [])


@pytest.mark.parametrize("status,state", [
    ("active", "current"), ("intended", "planned"), ("on-hold", "on-hold"), ("completed", "ended"),
    ("stopped", "ended"), ("not-taken", None), ("entered-in-error", None), ("unknown", None),
])
def test_medication_statement_status(status, state):
    rec = _build(_ms("x", CETUXIMAB, "cetuximab", status=status))
    got = [m.state for m in rec.medications + rec.medication_history]
    assert got == ([state] if state else [])


def test_an_ended_course_keeps_its_end_date_and_old_courses_are_dropped():
    rec = _build(_ms("recent", CISPLATIN, "cisplatin", status="completed", start="2026-08-01", end="2026-11-05"),
                 _ms("old", CISPLATIN, "cisplatin", status="completed", start="2024-01-01", end="2024-06-01"))
    (m,) = rec.medication_history
    assert m.source.id == "recent" and m.end.date().isoformat() == "2026-11-05" and m.start.date().isoformat() == "2026-08-01"


# ---------------------------------------------------------------- routes (builder)
@pytest.mark.parametrize("resource,route", [
    (_ms("a", TOBRAMYCIN, "tobramycin 0.3 % solution", route=EYE), "ophthalmic"),
    (_mr("b", TOBRAMYCIN, "tobramycin 300 MG inhalation solution"), "inhalation"),
    (_mr("c", TOBRAMYCIN, "tobramycin", route={"text": "Inhalation"}), "inhalation"),
    (_mr("d", "1596450", "gentamicin 0.3 % eye drops"), "ophthalmic"),
    (_mr("e", "1596450", "gentamicin 0.1 % cream"), "topical"),
    (_mr("f", "1596450", "gentamicin", dosage_text="2 drops in the ear twice daily"), "otic"),
    (_mr("g", "1596450", "gentamicin 80 MG Injection"), "intravenous"),
    (_mr("h", OMEPRAZOLE, "Omeprazole 40 MG Delayed Release Oral Capsule"), "oral"),
    (_mr("i", "7994", "pentamidine 300 mg", dosage_text="300 mg nebulised every 4 weeks"), "inhalation"),
    (_mr("j", TOBRAMYCIN, "tobramycin"), None),
])
def test_route_from_code_text_label_and_dosage(resource, route):
    rec = _build(resource)
    (m,) = rec.medications
    assert m.route == route


def test_structured_timing_gives_doses_per_day():
    rec = _build(_mr("x", "1894", "calcitriol", repeat={"frequency": 3, "period": 1, "periodUnit": "d"}),
                 _mr("y", "1894", "calcitriol", repeat={"frequency": 1, "period": 2, "periodUnit": "d"}))
    assert [m.doses_per_day for m in rec.medications] == [3.0, 0.5]


# ---------------------------------------------------------------- magnesium-wasting-drug
def test_local_route_products_are_never_named_as_wasters():
    rec = record(lab("magnesium", 1.5), meds=[med("tobramycin", route="ophthalmic"), med("gentamicin", route="topical"),
                                             med("pentamidine", route="inhalation")])
    assert run("magnesium-wasting-drug", rec) is None
    rec.medications.append(med("furosemide", route="oral", start=ago(100)))
    f = run("magnesium-wasting-drug", rec)
    assert "Furosemide" in f.summary and "Tobramycin" not in f.summary
    assert "Not counted (local route):" in f.detail and "Tobramycin (ophthalmic route)" in f.detail
    assert "low or undetectable after aerosolisation" in f.detail  # the pentamidine source said where it is set aside


def test_no_route_stated_counts_as_systemic():
    f = run("magnesium-wasting-drug", record(lab("magnesium", 1.5), meds=[med("gentamicin", route=None)]))
    assert f is not None and "Gentamicin" in f.summary


def test_planned_drugs_are_never_the_cause():
    planned = replace(med("cetuximab", route="intravenous"), state="planned", status="intended")
    rec = record(lab("magnesium", 1.5))
    rec.medication_history = [planned]
    assert run("magnesium-wasting-drug", rec) is None
    rec.medications = [med("omeprazole", route="oral", start=ago(50))]
    f = run("magnesium-wasting-drug", rec)
    assert "Cetuximab" not in f.summary
    assert "Planned, not started (not a cause" in f.detail and "**Cetuximab**" in f.detail


@pytest.mark.parametrize("ingredient,ended_days_ago,counted", [
    ("cisplatin", 20, True), ("cisplatin", 300, True), ("cetuximab", 50, True), ("cetuximab", 70, False),
    ("amphotericin b", 80, True), ("foscarnet", 100, False), ("pentamidine", 30, True), ("furosemide", 5, False),
])
def test_completed_courses_count_within_the_class_window(ingredient, ended_days_ago, counted):
    course = replace(med(ingredient, route="intravenous", start=ago(ended_days_ago + 60)), state="ended",
                     status="completed", end=ago(ended_days_ago))
    rec = record(lab("magnesium", 1.4))
    rec.medication_history = [course]
    f = run("magnesium-wasting-drug", rec)
    if not counted:
        assert f is None
        return
    assert "after recent magnesium-wasting drug" in f.summary and f"({'completed'} {ago(ended_days_ago).date()})" in f.summary
    assert f"ended {ago(ended_days_ago).date()} ({ended_days_ago} days ago)" in f.detail
    assert "recent-exposure window" in f.detail


def test_ended_order_without_end_date_is_dated_from_the_order_and_said():
    course = replace(med("cisplatin", route="intravenous", start=ago(40)), state="ended", status="stopped")
    rec = record(lab("magnesium", 1.4))
    rec.medication_history = [course]
    f = run("magnesium-wasting-drug", rec)
    assert "cisplatin (stopped" in f.summary and "end date not recorded (started" in f.detail


def test_local_route_ended_course_is_not_exposure():
    course = replace(med("tobramycin", route="inhalation", start=ago(40)), state="ended", status="completed", end=ago(3))
    rec = record(lab("magnesium", 1.4))
    rec.medication_history = [course]
    assert run("magnesium-wasting-drug", rec) is None


def test_on_hold_course_is_mentioned():
    held = replace(med("cetuximab", route="intravenous", start=ago(30)), state="on-hold", status="on-hold")
    rec = record(lab("magnesium", 1.4))
    rec.medication_history = [held]
    f = run("magnesium-wasting-drug", rec)
    assert "cetuximab (on hold)" in f.summary and "**on hold** (paused, not stopped)" in f.detail


def test_a_drug_with_two_orders_is_listed_once_with_both():
    rec = record(lab("magnesium", 1.5), meds=[med("omeprazole", label="omeprazole 20 mg", route="oral", rid="o1", start=ago(400)),
                                             med("omeprazole", label="omeprazole 40 mg", route="oral", rid="o2", start=ago(60))])
    f = run("magnesium-wasting-drug", rec)
    assert "omeprazole (2 orders)" in f.summary
    assert f.detail.count("proton-pump inhibitor: reduces") == 1
    assert "MedicationRequest/o1" in f.detail and "MedicationRequest/o2" in f.detail
    assert "on a PPI for 400 days" in f.detail


def test_monitoring_gap_ignores_local_routes():
    rec = record(lab("magnesium", 2.0, at=ago(300)), meds=[med("tobramycin", route="ophthalmic", start=ago(200))])
    assert run("magnesium-monitoring-gap", rec) is None


# ---------------------------------------------------------------- order-wasting-drug
def test_local_route_draft_is_not_a_wasting_draft_and_does_not_make_patient_rules_relevant():
    rec = record(lab("magnesium", 1.5), meds=[med("furosemide", route="oral", start=ago(90))],
                 drafts=[med("gentamicin", route="ophthalmic", draft=True)])
    assert run("order-wasting-drug", rec, "order-sign") is None
    assert run("hypomagnesemia", rec, "order-sign") is None
    assert run("magnesium-wasting-drug", rec, "order-sign") is None


def test_chemotherapy_draft_gets_monitoring_and_replacement_not_removal():
    rec = record(lab("magnesium", 1.5), drafts=[med("cisplatin", route="intravenous", draft=True, rid="cis")])
    f = run("order-wasting-drug", rec, "order-sign")
    assert f.indicator == "warning"
    assert [s.key for s in f.suggestions] == ["order-magnesium", "add-magnesium"]
    assert all(a.type == "create" for s in f.suggestions for a in s.actions)
    assert f.suggestions[0].actions[0].resource["resourceType"] == "ServiceRequest"
    assert f.suggestions[1].actions[0].resource["resourceType"] == "MedicationRequest"
    assert "before each cycle" in f.detail


def test_replacement_not_offered_when_magnesium_is_drafted_and_monitoring_not_when_test_drafted():
    rec = record(lab("magnesium", 1.5), drafts=[med("gentamicin", route="intravenous", draft=True),
                                               med("magnesium sulfate", route="intravenous", dose=(2, "g"), draft=True)],
                 services=[drafted_test("19123-9")])
    f = run("order-wasting-drug", rec, "order-sign")
    assert f.suggestions == () and "already among the draft orders" in f.detail


def test_removal_only_for_classes_with_a_safer_alternative():
    rec = record(lab("magnesium", 1.5), drafts=[med("cetuximab", route="intravenous", draft=True, rid="c"),
                                               med("omeprazole", route="oral", draft=True, rid="p"),
                                               med("furosemide", route="oral", draft=True, rid="f")])
    f = run("order-wasting-drug", rec, "order-sign")
    deletes = [a.resource_id for s in f.suggestions for a in s.actions if a.type == "delete"]
    assert deletes == ["MedicationRequest/p", "MedicationRequest/f"]


def test_two_drafts_of_one_drug_listed_once_with_a_removal_per_order():
    rec = record(lab("magnesium", 1.5), drafts=[med("pantoprazole", route="intravenous", draft=True, rid="p1"),
                                               med("pantoprazole", route="intravenous", draft=True, rid="p2")])
    f = run("order-wasting-drug", rec, "order-sign")
    assert "pantoprazole (2 orders)" in f.summary and f.detail.count("proton-pump inhibitor:") == 1
    assert [s.label for s in f.suggestions] == ["Remove the draft order for Pantoprazole (MedicationRequest/p1)",
                                                "Remove the draft order for Pantoprazole (MedicationRequest/p2)"]


@pytest.mark.parametrize("ingredient", ["cisplatin", "cetuximab", "panitumumab", "carboplatin"])
def test_magnesium_before_the_cycle_when_not_measured_recently(ingredient):
    rec = record(lab("magnesium", 2.0, at=ago(30)), drafts=[med(ingredient, route="intravenous", draft=True)])
    f = run("order-wasting-drug", rec, "order-sign")
    assert f.indicator == "warning" and "measure magnesium before the cycle (last" in f.summary
    (s,) = f.suggestions
    assert s.actions[0].resource["code"]["coding"][0]["code"] == "19123-9"
    never = run("order-wasting-drug", record(drafts=[med(ingredient, route="intravenous", draft=True)]), "order-sign")
    assert "never measured" in never.summary


def test_no_before_cycle_card_with_a_recent_magnesium_or_for_other_classes():
    assert run("order-wasting-drug", record(lab("magnesium", 2.0, at=ago(2)), drafts=[med("cisplatin", draft=True)]),
               "order-sign") is None
    assert run("order-wasting-drug", record(lab("magnesium", 2.0, at=ago(30)), drafts=[med("furosemide", draft=True)]),
               "order-sign") is None
    f = run("order-wasting-drug", record(drafts=[med("cisplatin", draft=True)], services=[drafted_test("19123-9")]),
            "order-sign")
    assert f is not None and f.suggestions == ()


# ---------------------------------------------------------------- daily doses and vitamin D ceilings
@pytest.mark.parametrize("timing,per_day", [
    ("once daily", 1), ("twice daily", 2), ("bid", 2), ("three times a day", 3), ("every 8 hours", 3),
    ("every other day", 0.5), ("three times a week", 3 / 7), ("once weekly", 1 / 7), ("at bedtime", 1), ("as directed", None),
])
def test_doses_per_day_from_text(timing, per_day):
    got, _ = doses_per_day(med("calcitriol", timing=timing))
    assert got == (pytest.approx(per_day) if per_day is not None else None)


def test_structured_timing_wins_over_text():
    m = replace(med("calcitriol", dose=(0.5, "ug"), timing="once daily"), doses_per_day=2.0)
    d = daily_micrograms(m)
    assert d.per_day_ug == 1.0 and "structured timing" in d.explanation


def _vitd(ingredient: str, dose: float, timing: str | None = None, per_day: float | None = None):
    m = med(ingredient, dose=(dose, "ug"), timing=timing, draft=True)
    return replace(m, doses_per_day=per_day) if per_day is not None else m


def test_daily_dose_not_single_dose_is_compared():
    f = run("order-vitamin-d-analogue", record(lab("calcium", 9.0), drafts=[_vitd("alfacalcidol", 5, "twice daily")]), "order-sign")
    assert f.indicator == "warning" and "alfacalcidol 10 µg a day > 9 µg a day" in f.summary
    ok = run("order-vitamin-d-analogue", record(lab("calcium", 9.0), drafts=[_vitd("alfacalcidol", 4, "twice daily")]), "order-sign")
    assert ok.indicator == "info"


def test_calcitriol_has_its_own_ceiling():
    f = run("order-vitamin-d-analogue", record(lab("calcium", 9.0), drafts=[_vitd("calcitriol", 1, per_day=3)]), "order-sign")
    assert f.indicator == "warning" and "calcitriol 3 µg a day > 2 µg a day" in f.summary
    assert "Rocaltrol" in f.detail and "Alfacalcidol: start" not in f.detail
    same_dose_alfacalcidol = run("order-vitamin-d-analogue", record(lab("calcium", 9.0), drafts=[_vitd("alfacalcidol", 1, per_day=3)]),
                                 "order-sign")
    assert same_dose_alfacalcidol.indicator == "info"
    within = run("order-vitamin-d-analogue", record(lab("calcium", 9.0), drafts=[_vitd("calcitriol", 0.5, "twice daily")]), "order-sign")
    assert within.indicator == "info" and "0.5 µg x 2 a day" in within.detail


def test_unknown_frequency_still_catches_one_dose_above_the_daily_ceiling():
    f = run("order-vitamin-d-analogue", record(lab("calcium", 9.0), drafts=[_vitd("calcitriol", 2.5, "as directed")]), "order-sign")
    assert f.indicator == "warning" and "one dose of 2.5 µg > 2 µg a day" in f.summary
    quiet = run("order-vitamin-d-analogue", record(lab("calcium", 9.0), drafts=[_vitd("calcitriol", 1, "as directed")]), "order-sign")
    assert quiet.indicator == "info" and "daily total unknown" in quiet.detail


def test_every_vitamin_d_analogue_has_a_cited_daily_ceiling():
    for key, ing in K.model.ingredients.items():
        if "vitamin-d-analogue" in ing.classes:
            t = K.threshold(ing.daily_max)
            assert t.unit == "ug/d" and t.source in K.model.sources, key
    assert K.model.ingredients["calcitriol"].daily_max != K.model.ingredients["alfacalcidol"].daily_max


def test_exposure_windows_and_local_routes_are_cited_in_the_knowledge():
    classes = K.model.classes
    for cls in ("platinum", "egfr-antibody", "amphotericin-b", "foscarnet", "pentamidine"):
        assert classes[cls].exposure_window_days and classes[cls].exposure_source in K.model.sources, cls
    assert {c for c, v in classes.items() if v.safer_alternative} == {"ppi", "loop-diuretic", "thiazide"}
    assert {c for c, v in classes.items() if v.measure_before_cycle} == {"platinum", "egfr-antibody"}
    assert {n for n, r in K.model.routes.items() if not r.systemic} >= {"ophthalmic", "otic", "topical", "inhalation"}


def test_femg_renal_wasting_names_only_systemic_and_recent_wasters():
    urine = (lab("urine_magnesium", 6.0, at=ago(1)), lab("urine_creatinine", 50, at=ago(1)),
             lab("creatinine", 0.8, at=ago(1)), lab("weight", 70, at=ago(1)))
    eye = med("tobramycin", label="tobramycin eye drops", route="ophthalmic")
    course = replace(med("cisplatin", route="intravenous", start=ago(80)), state="ended", status="completed", end=ago(10))
    rec = record(lab("magnesium", 1.4, at=ago(1)), *urine, meds=[eye])
    f = run("femg-renal-wasting", rec)
    assert f is not None and "tobramycin eye drops" not in f.detail
    rec.medication_history = [course]
    assert "Recent magnesium-wasting drugs (on hold or recently finished) may explain renal wasting: Cisplatin" in \
        run("femg-renal-wasting", rec).detail


def test_two_drafted_orders_of_one_analogue_are_added_up():
    drafts = [_vitd("alfacalcidol", 5, "once daily"), _vitd("alfacalcidol", 5, "at bedtime")]
    f = run("order-vitamin-d-analogue", record(lab("calcium", 9.0), drafts=drafts), "order-sign")
    assert f.indicator == "warning" and "alfacalcidol 10 µg a day > 9 µg a day" in f.summary
    assert "2 drafted orders, their daily doses added" in f.detail and "5 + 5 = 10 µg a day" in f.detail
    mixed = [_vitd("alfacalcidol", 5, "once daily"), _vitd("calcitriol", 1.5, "once daily")]
    assert run("order-vitamin-d-analogue", record(lab("calcium", 9.0), drafts=mixed), "order-sign").indicator == "info"


def test_courses_that_ended_before_the_lookback_are_not_read_and_odd_ones_take_the_full_path():
    old = _mr("old", CISPLATIN, "cisplatin", status="completed", authored="2024-01-01T09:00:00Z")
    recent = _mr("recent", CISPLATIN, "cisplatin", status="completed", authored="2026-10-01T09:00:00Z")
    odd = dict(_mr("odd", CISPLATIN, "cisplatin", status="stopped"), authoredOn=20240101)  # not a string: validated, noted
    rec = _build(old, recent, odd)
    assert [m.source.id for m in rec.medication_history] == ["recent", "odd"]  # old never read; odd read leniently
    assert any("MedicationRequest/odd" in g.what and "authoredOn" in g.what for g in rec.gaps)
    odd_use = rec.medication_history[1]
    assert odd_use.start is None
    mg = lab("magnesium", 1.4)
    rec.labs["magnesium"] = [mg]
    f = run("magnesium-wasting-drug", rec)
    assert "cisplatin (completed 2026-10-01)" in f.summary  # the drug once, by its latest dated course
    assert "- **cisplatin** (platinum chemotherapy): 2 courses" in f.detail
    assert "  - **cisplatin**, course stopped, no date recorded: it may be recent; MedicationRequest/odd" in f.detail


def test_a_course_dated_in_the_future_is_not_recent_exposure():
    course = replace(med("cisplatin", route="intravenous", start=NOW), state="ended", status="completed",
                     end=ago(-30))
    rec = record(lab("magnesium", 1.4))
    rec.medication_history = [course]
    assert run("magnesium-wasting-drug", rec) is None


def test_prefetch_asks_for_every_status_the_knowledge_reads():
    from cds_service.config import Settings
    from cds_service.definitions import load_definitions

    catalog = load_definitions(Settings().hooks_dir, K)
    wanted = {"MedicationRequest": set(K.policy("medication_request_states")) - set(K.policy("medication_request_statuses_not_fetched")),
              "MedicationStatement": set(K.policy("medication_statement_states")),
              "Condition": set(K.policy("condition_clinical_statuses"))}
    assert wanted["MedicationRequest"] == {"active", "on-hold", "completed", "stopped"}  # drafts come as draftOrders
    checked = 0
    for sid in ("magnesium-patient-view", "magnesium-order-select", "magnesium-order-sign"):
        service = catalog.get(sid)
        for p in service.prefetch.values():
            if p.resource_type in wanted:
                template = catalog.expand_knowledge_tokens(service, p.template, NOW)
                statuses = set(template.split("status=")[1].split("&")[0].split(","))
                assert statuses == wanted[p.resource_type], (sid, template)
                checked += 1
    assert checked == 9


def test_an_undated_course_is_shown_as_possibly_recent():
    course = replace(med("cetuximab", route="intravenous", start=None), state="ended", status="stopped")
    rec = record(lab("magnesium", 1.4))
    rec.medication_history = [course]
    f = run("magnesium-wasting-drug", rec)
    assert "cetuximab (stopped, undated)" in f.summary and "no date recorded: it may be recent" in f.detail
