"""Feedback: linked to card and invocation, stored once when sent twice, unknown cards kept and flagged."""
from __future__ import annotations

from cds_service.services import get_services
from tests.audit.helpers import PATIENT_VIEW, feedback_rows, patient_view_body, rows


def _feedback(card, outcome="overridden", ts="2026-11-25T12:05:00Z", **extra):
    item = {"card": card, "outcome": outcome, "outcomeTimestamp": ts}
    item.update(extra)
    return {"feedback": [item]}


def test_feedback_linked_stored_once_and_unknown_card_flagged(app_factory, db_url):
    app = app_factory(database_url=db_url)
    client = app.test_client()
    resp = client.post(f"/cds-services/{PATIENT_VIEW}", json=patient_view_body("hi-fb", mg=1.6))
    card = next(c for c in resp.get_json()["cards"] if c["source"]["topic"]["code"] == "hypomagnesemia")
    [inv] = rows(app)

    override = {"reason": {"system": "https://cds-magnesium.example.org/CodeSystem/override-reason",
                           "code": "already-treated", "display": "Already being treated"},
                "userComment": "IV given this morning"}
    body = _feedback(card["uuid"], overrideReason=override)
    first = client.post(f"/cds-services/{PATIENT_VIEW}/feedback", json=body)
    again = client.post(f"/cds-services/{PATIENT_VIEW}/feedback", json=body)
    assert first.status_code == again.status_code == 200
    assert first.get_json()["feedback"] == [{"card": card["uuid"], "stored": True, "unknownCard": False}]
    assert again.get_json()["feedback"] == [{"card": card["uuid"], "stored": False, "duplicate": True}]

    unknown = client.post(f"/cds-services/{PATIENT_VIEW}/feedback",
                          json=_feedback("00000000-0000-0000-0000-000000000000", outcome="accepted"))
    assert unknown.get_json()["feedback"] == [{"card": "00000000-0000-0000-0000-000000000000", "stored": True,
                                              "unknownCard": True}]

    store = get_services(app).store
    fb = feedback_rows(store)
    assert len(fb) == 2
    known, flagged = fb
    assert (known.card_uuid, known.invocation_id, known.rule, known.outcome) == (card["uuid"], inv.id, "hypomagnesemia", "overridden")
    assert (known.override_code, known.override_display, known.override_comment) == (
        "already-treated", "Already being treated", "IV given this morning")
    assert known.unknown_card is False
    assert (flagged.unknown_card, flagged.invocation_id, flagged.rule) == (True, None, None)


def test_a_later_different_outcome_for_the_same_card_is_a_new_row(app_factory, sqlite_url):
    app = app_factory(database_url=sqlite_url)
    client = app.test_client()
    card = client.post(f"/cds-services/{PATIENT_VIEW}", json=patient_view_body("hi-fb2", mg=1.6)).get_json()["cards"][0]
    client.post(f"/cds-services/{PATIENT_VIEW}/feedback", json=_feedback(card["uuid"], "overridden", "2026-11-25T12:05:00Z"))
    client.post(f"/cds-services/{PATIENT_VIEW}/feedback",
                json=_feedback(card["uuid"], "accepted", "2026-11-25T12:09:00Z", acceptedSuggestions=[{"id": "s-1"}]))
    fb = feedback_rows(get_services(app).store)
    assert [(f.outcome, f.accepted_suggestions) for f in fb] == [("overridden", []), ("accepted", ["s-1"])]


def test_feedback_while_the_store_is_down_is_a_503_outcome_not_a_500(app_factory, sqlite_url):
    from sqlalchemy.orm import sessionmaker

    from cds_service.audit.database import make_engine

    app = app_factory(database_url=sqlite_url)
    store = get_services(app).store
    store.sessions = sessionmaker(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"))
    resp = app.test_client().post(f"/cds-services/{PATIENT_VIEW}/feedback", json=_feedback("c-1"))
    assert resp.status_code == 503
    assert resp.get_json()["issue"][0]["details"]["coding"][0]["code"] == "audit-store-unavailable"


def test_feedback_that_arrives_before_its_call_is_shipped_is_linked_when_it_is(app_factory):
    """The call's record is still in the spool (the database was busy): the feedback is kept as an unknown
    card, then linked to its call and rule when the writer ships the call."""
    from sqlalchemy import select

    from cds_service.audit.schema import FeedbackRow
    from tests.audit.helpers import PATIENT_VIEW, patient_view_body, rows

    app = app_factory()
    store = get_services(app).store
    client = app.test_client()
    held = []
    real = store._ship_batch
    store._ship_batch = lambda batch: held.append(batch)  # the writer cannot ship yet
    cards = client.post(f"/cds-services/{PATIENT_VIEW}", json=patient_view_body("hi-early", mg=1.1)).get_json()["cards"]
    import time

    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:  # the writer took the record and could not ship it
        store._wake.set()
        time.sleep(0.05)
    assert held
    card = next(c for c in cards if c["source"]["topic"]["code"] == "hypomagnesemia")
    fb = client.post(f"/cds-services/{PATIENT_VIEW}/feedback", json={"feedback": [
        {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-25T12:01:00Z"}]})
    assert fb.get_json()["feedback"][0]["unknownCard"] is True
    store._ship_batch = real
    for batch in held:
        real(batch)
    [row] = rows(app)
    with store.sessions() as s:
        [linked] = s.scalars(select(FeedbackRow)).all()
    assert (linked.unknown_card, linked.invocation_id, linked.rule) == (False, row.id, "hypomagnesemia")
