"""The lean record's fast paths read exactly what the tolerant pydantic path reads, or step aside.

For any resource the fast path accepts, the result must equal the validated model (same values, same
fields set) with nothing dropped; whatever it refuses goes to the tolerant path, which defines behaviour.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.data import patient_view_request
from cds_service.record import lean

ODD = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, width=32),
                st.text(" \tab1", max_size=4), st.just({}), st.just([]), st.just([None]))


def mostly(clean: st.SearchStrategy, odd: st.SearchStrategy = ODD) -> st.SearchStrategy:
    """Usually ``clean``, one time in twelve something odd: most resources must reach the fast path."""
    return st.integers(0, 11).flatmap(lambda i: odd if i == 0 else clean)


def maybe(d: dict) -> st.SearchStrategy:
    """A dict strategy whose keys may each be absent."""
    return st.fixed_dictionaries({}, optional=d)


TEXT = mostly(st.text(" \tx-9", max_size=5))
NUMBER = mostly(st.one_of(st.integers(-3, 300), st.floats(allow_nan=False)))
coding = maybe({"system": TEXT, "code": TEXT, "display": TEXT})
concept = maybe({"coding": mostly(st.lists(mostly(coding), max_size=3), st.one_of(coding, ODD)), "text": TEXT})
quantity = maybe({"value": NUMBER, "unit": TEXT, "system": TEXT, "code": TEXT, "comparator": TEXT})
reference = maybe({"reference": TEXT, "display": TEXT})
observation = st.fixed_dictionaries(
    {"resourceType": st.just("Observation"), "status": TEXT, "code": mostly(concept)},
    optional={
        "id": TEXT, "meta": mostly(maybe({"versionId": TEXT, "lastUpdated": TEXT})), "subject": mostly(reference),
        "effectiveDateTime": TEXT, "effectiveInstant": TEXT, "issued": TEXT,
        "effectivePeriod": mostly(maybe({"start": TEXT, "end": TEXT})),
        "valueQuantity": mostly(quantity),
        "interpretation": mostly(st.lists(mostly(concept), max_size=2), st.one_of(concept, ODD)),
        "referenceRange": mostly(st.lists(mostly(maybe({"low": mostly(quantity), "high": mostly(quantity), "text": TEXT})),
                                          max_size=2)),
        "category": ODD,
    })
dosage = maybe({"text": TEXT, "route": mostly(concept), "timing": mostly(maybe({"code": mostly(concept)})),
                "doseAndRate": mostly(st.lists(mostly(maybe({"doseQuantity": mostly(quantity)})), max_size=2))})
medication_request = st.fixed_dictionaries(
    {"resourceType": st.just("MedicationRequest"), "status": TEXT},
    optional={"id": TEXT, "intent": TEXT, "medicationCodeableConcept": mostly(concept),
              "medicationReference": mostly(reference), "subject": mostly(reference), "authoredOn": TEXT,
              "contained": mostly(st.lists(mostly(st.just({"resourceType": "Medication", "id": "m"})), max_size=2)),
              "dosageInstruction": mostly(st.lists(mostly(dosage), max_size=2))})
condition = st.fixed_dictionaries(
    {"resourceType": st.just("Condition"), "code": mostly(concept)},
    optional={"id": TEXT, "clinicalStatus": mostly(concept), "verificationStatus": mostly(concept),
              "subject": mostly(reference), "onsetDateTime": TEXT, "recordedDate": TEXT})
def _slow(raw: dict):
    model = lean.MODELS[raw["resourceType"]]
    ctx = {"dropped": []}
    try:
        return model.model_validate(raw, context=ctx), ctx["dropped"]
    except Exception:
        return None, ctx["dropped"]


def _check_model_fast_path(raw: dict) -> bool:
    try:
        fast = lean._FAST[lean.MODELS[raw["resourceType"]]](raw)
    except Exception:
        return False
    slow, dropped = _slow(raw)
    assert slow is not None and dropped == []
    assert fast == slow and type(fast) is type(slow)
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump() == slow.model_dump()
    return True


@pytest.mark.slow
def test_observation_facts_equal_the_validated_model():
    counts = {"facts": 0, "model": 0}

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(observation)
    def check(raw):
        counts["model"] += _check_model_fast_path(raw)
        try:
            facts = lean.observation_facts(raw)
        except Exception:
            return  # the tolerant path decides
        counts["facts"] += 1
        slow, dropped = _slow(raw)
        assert slow is not None and dropped == []
        assert facts == lean.observation_facts_from_model(slow)

    check()
    assert counts["facts"] >= 40 and counts["model"] >= 40, counts  # not vacuous


def test_model_fast_path_equals_validation():
    counts = {"model": 0}

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(st.one_of(medication_request, condition))
    def check(raw):
        counts["model"] += _check_model_fast_path(raw)

    check()
    assert counts["model"] >= 40, counts  # not vacuous


def test_clean_resources_take_the_fast_paths():
    """The realistic bench resources are all clean: if this fails the fast path has silently stopped working."""
    prefetch = patient_view_request(60)["prefetch"]
    resources = [prefetch["patient"]] + [e["resource"] for k in ("observations", "medicationRequests",
                                                                 "medicationStatements", "conditions")
                                         for e in prefetch[k]["entry"]]
    for raw in resources:
        assert _check_model_fast_path(raw), raw
        if raw["resourceType"] == "Observation":
            assert lean.observation_facts(raw) == lean.observation_facts_from_model(_slow(raw)[0])
