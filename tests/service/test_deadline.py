"""One deadline per hook call: started when the engine takes the call, passed down to every FHIR read."""
from __future__ import annotations

import time

import pytest

from cds_service.prefetch.deadline import EXTRA_FETCH_FLOOR, KEY_FETCH_FLOOR, REQUEST_FLOOR, Deadline
from cds_service.prefetch.gateway import FetchResult, FhirGateway
from cds_service.services import get_services
from tests.helpers.fhir import full_prefetch, hook_request


def test_a_deadline_counts_down_from_its_start():
    d = Deadline.start(2.0)
    assert 1.9 < d.remaining() <= 2.0
    assert d.leaves(1.5) and not d.leaves(2.5)
    assert Deadline.start(-1.0).remaining() < 0


def test_at_least_keeps_a_later_deadline_and_lifts_a_passed_one():
    d = Deadline.start(2.0)
    assert d.at_least(KEY_FETCH_FLOOR) == d  # far enough away: unchanged
    passed = Deadline.start(-1.0)
    lifted = passed.at_least(KEY_FETCH_FLOOR)
    assert 0 < lifted.remaining() <= KEY_FETCH_FLOOR
    assert passed.remaining() < 0  # the call's own deadline is not changed


def test_the_gateway_sends_nothing_once_the_deadline_is_reached():
    gateway = FhirGateway(call_timeout=1.0, retries=0, page_limit=1)
    t0 = time.monotonic()
    [result] = gateway.fetch_many("http://127.0.0.1:9/fhir", None, {"k": "Patient/p1"},
                                  Deadline.start(REQUEST_FLOOR / 2)).values()
    assert result.error in ("deadline reached before the query could be sent", "no answer within the 0.0 s deadline")
    assert time.monotonic() - t0 < 0.5


class RecordingGateway:
    """Answers every query at once and records the deadline each fetch_many was given."""

    def __init__(self):
        self.deadlines: list[tuple[list[str], Deadline]] = []

    def call_budget(self):
        return None

    def fetch_many(self, base, token, queries, deadline, budget=None):
        assert isinstance(deadline, Deadline)
        self.deadlines.append((list(queries), deadline))
        out = {}
        for key, query in queries.items():
            if query.startswith("Medication/"):
                data = {"resourceType": "Medication", "id": query.split("/")[1], "code": {"text": "tacrolimus"}}
            else:
                data = {"resourceType": "Bundle", "type": "searchset", "entry": []}
            out[key] = FetchResult(key, data=data, elapsed_ms=1.0)
        return out


@pytest.mark.parametrize("seconds", [2.0, 7.5])
def test_one_deadline_from_the_start_of_the_call_reaches_every_fetch(app_factory, seconds):
    gateway = RecordingGateway()
    engine = get_services(app_factory(gateway=gateway, fetch_deadline_seconds=seconds)).engine
    prefetch = full_prefetch()
    del prefetch["conditions"]  # fetched
    prefetch["medicationRequests"]["entry"] = [{"resource": {
        "resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "Medication/med-1"}}}]
    before = time.monotonic()
    outcome = engine.handle("magnesium-patient-view", hook_request(prefetch=prefetch, fhir_server="http://ehr.test/fhir"))
    after = time.monotonic()
    outcome.response()
    [(keys, first), (meds, second)] = gateway.deadlines
    assert keys == ["conditions"] and meds == ["Medication/med-1"]
    assert before + seconds <= first.at <= after + seconds  # started when the engine took the call
    assert second.at == first.at  # the same deadline, not a fresh one per fetch
    assert outcome.prefetch is not None and outcome.prefetch.status["conditions"] == "fetched"


def test_referenced_medications_are_not_fetched_with_too_little_time_left(app_factory):
    gateway = RecordingGateway()
    engine = get_services(app_factory(gateway=gateway, fetch_deadline_seconds=EXTRA_FETCH_FLOOR / 2)).engine
    prefetch = full_prefetch()
    prefetch["medicationRequests"]["entry"] = [{"resource": {
        "resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "Medication/med-1"}}}]
    outcome = engine.handle("magnesium-patient-view", hook_request(prefetch=prefetch, fhir_server="http://ehr.test/fhir"))
    outcome.response()
    assert gateway.deadlines == []
