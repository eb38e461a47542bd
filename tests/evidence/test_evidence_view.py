"""The page model from an audit row: which results counted for the card, and why the others did not."""
from __future__ import annotations

from cds_service.evidence.view import build


def lab(obs: str, value: float, day: str, low: float | None = 1.7, high: float | None = 2.2) -> dict:
    return {"kind": "lab", "analyte": "magnesium", "value": value, "unit": "mg/dL", "originalValue": value * 0.4114,
            "originalUnit": "mmol/L", "effective": f"{day}T08:00:00+00:00", "code": "19123-9", "status": "final",
            "refLow": low, "refHigh": high, "source": {"resourceType": "Observation", "id": obs, "versionId": "2"}}


def invocation(rule: str, used: list[dict], series: list[dict], **snapshot) -> tuple[dict, dict]:
    card = {"uuid": "u1", "summary": "s", "indicator": "warning", "detail": "d", "source": {"topic": {"code": rule}}}
    inv = {"evaluatedAt": "2026-11-25T12:00:00+00:00", "receivedAt": "2026-11-30T01:00:00+00:00",
           "knowledgeVersion": "k", "facts": {rule: used}, "cards": [card],
           "recordSnapshot": {"patientId": "p", "labs": {"magnesium": series}, **snapshot}}
    return inv, card


def reasons(ev) -> dict[str, str]:
    return {p.date: ("counted" if p.counted else p.why) for p in ev.panels[0].points}


def test_refractory_card_says_stale_ended_and_in_range(knowledge):
    run = [lab("a", 1.3, "2026-11-20"), lab("b", 1.4, "2026-11-10")]
    series = run + [lab("c", 1.9, "2026-10-20"), lab("d", 1.2, "2026-10-01"), lab("e", 1.1, "2026-06-01")]
    ev = build(*invocation("refractory-hypomagnesemia", run, series), knowledge)
    assert reasons(ev) == {
        "2026-11-20": "counted", "2026-11-10": "counted",
        "2026-10-20": "within the lab's range: not part of this finding",
        "2026-10-01": "before the in-range result of 2026-10-20, which ended the low run",
        "2026-06-01": "stale: older than the 90-day refractory window",
    }
    p = next(p for p in ev.panels[0].points if p.date == "2026-11-20")
    assert (p.reported, p.converted, p.source) == ("0.5348 mmol/L", "1.3 mg/dL = 0.535 mmol/L", "Observation/a/_history/2")
    assert ev.window is not None and ev.panels[0].band is not None  # refractory window and lab range drawn


def test_latest_value_card_marks_older_results_superseded_and_lists_unreadable_ones(knowledge):
    latest = lab("a", 1.1, "2026-11-24", low=None, high=None)
    gaps = [{"kind": "unit-unknown", "what": "Observation/x (magnesium) unit 'mg' cannot be interpreted", "key": "observations"},
            {"kind": "unit-unknown", "what": "Observation/y (potassium) unit 'q' cannot be interpreted", "key": "observations"}]
    ev = build(*invocation("hypomagnesemia", [latest], [latest, lab("b", 1.5, "2026-11-01", low=None, high=None)],
                           gaps=gaps), knowledge)
    assert reasons(ev) == {"2026-11-24": "counted", "2026-11-01": "superseded: the card used the later result of 2026-11-24"}
    assert ev.panels[0].unreadable == [gaps[0]["what"]] and len(ev.gaps) == 2
    assert [p.id for p in ev.panels] == ["magnesium"]  # only what the card used gets a panel


def test_medication_bars_run_from_start_to_the_call_and_drafts_from_the_call(knowledge):
    def med(label, cls, start, draft=False):
        return {"kind": "medication", "label": label, "status": "draft" if draft else "active", "draft": draft,
                "start": start, "ingredients": [{"ingredient": label, "classes": [cls]}],
                "source": {"resourceType": "MedicationRequest", "id": label}}
    meds = [med("omeprazole", "ppi", "2020-01-01T00:00:00+00:00"), med("mag", "magnesium-supplement", None),
            med("paracetamol", "analgesic", "2026-11-01T00:00:00+00:00")]
    drafts = [med("alfacalcidol", "vitamin-d-analogue", "2026-11-25T09:00:00+00:00", draft=True)]
    latest = lab("a", 1.1, "2026-11-24")
    ev = build(*invocation("hypomagnesemia", [latest, meds[0]], [latest], medications=meds, draftMedications=drafts),
               knowledge)
    bars = {b.label: b for b in ev.bars}
    assert list(bars) == ["omeprazole", "mag", "alfacalcidol"]  # wasting, supplements, vitamin D; others left out
    now_x = ev.axis.x(ev.now)
    assert bars["omeprazole"].clipped and bars["omeprazole"].used and bars["omeprazole"].x1 == now_x
    assert bars["omeprazole"].x0 == ev.axis.x(ev.axis.start) < ev.axis.x(ev.lookback_start)  # from the chart's left edge
    assert not bars["mag"].start_known and bars["mag"].since == "start not recorded"
    assert bars["alfacalcidol"].draft and bars["alfacalcidol"].x0 == now_x
