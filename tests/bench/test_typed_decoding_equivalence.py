"""Issue 11 item 3: the body decoded straight from bytes (api/body.decode_typed) gives exactly the PatientRecord,
the answer and the audit facts of the plain reading (orjson.loads), for every fixture request, the Synthea
patients and odd Observations; and it steps aside (None) wherever plain JSON would refuse the body."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.burden import synthea_dir
from bench.peer import chart_body
from cds_service import create_app
from cds_service.api.body import decode_typed
from cds_service.audit.invocation import Invocation
from cds_service.config import Settings
from cds_service.fixtures import HOOKS, SERVICE_FOR_HOOK, chart_request, day_after_last_lab, stored_resources
from cds_service.record.builder import RecordBuilder, ResolvedData
from cds_service.record.typed_observations import ObservationData
from cds_service.services import get_services
from tests.bench.test_fast_path_equivalence import observation
from tests.helpers.env import FIXED_NOW

REPO = Path(__file__).resolve().parents[2]
REQUESTS = sorted((REPO / "fixtures" / "requests").glob("*.json"))


SYNTHEA = sorted(synthea_dir().glob("*.json"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory, knowledge):
    db = tmp_path_factory.mktemp("typed") / "audit.sqlite3"
    clock = {"now": FIXED_NOW}
    app = create_app(Settings.from_env(database_url=f"sqlite:///{db}", auth_mode="off"), knowledge=knowledge,
                     clock=lambda: clock["now"])
    eng = get_services(app).engine
    eng.test_clock = clock
    yield eng
    get_services(app).store.close()


def typed_observations(body: dict) -> int:
    return sum(type(e.get("resource")) is ObservationData for v in (body.get("prefetch") or {}).values()
               if isinstance(v, dict) for e in (v.get("entry") or []) if isinstance(e, dict))


def handle(engine, service_id: str, body: dict):
    outcome = engine.handle(service_id, body)
    response = outcome.response()
    return response, Invocation(service_id=service_id, **outcome.audit_fields())


def assert_same_call(engine, service_id: str, raw: bytes) -> int:
    """Both readings of ``raw`` through the engine: the same record, answer and audit facts. Returns how many
    Observations the typed reading decoded from bytes."""
    typed = decode_typed(raw)
    assert typed is not None
    plain = orjson.loads(raw)
    r1, inv1 = handle(engine, service_id, plain)
    r2, inv2 = handle(engine, service_id, typed)
    assert inv2.record == inv1.record
    assert r2 == r1
    assert (inv2.gaps, inv2.facts, inv2.rules_fired, inv2.prefetch) == (inv1.gaps, inv1.facts, inv1.rules_fired, inv1.prefetch)
    return typed_observations(typed)


def test_every_fixture_request_reads_the_same():
    """Every fixture body: decode_typed gives what orjson gives, Observation Bundles aside (checked below)."""
    used = 0
    for path in REQUESTS:
        raw = path.read_bytes()
        typed, plain = decode_typed(raw), orjson.loads(raw)
        assert typed is not None, path.name
        n = typed_observations(typed)
        used += n > 0
        if n == 0:
            assert typed == plain, path.name
        else:
            assert typed.keys() == plain.keys() and typed["prefetch"].keys() == plain["prefetch"].keys()
    assert used >= 40, used  # the fast path is taken (most prefetch fixtures hold clean Observations)


@pytest.mark.parametrize("path", [p for p in REQUESTS if ".prefetch." in p.name], ids=lambda p: p.name)
def test_fixture_call_same_record(engine, path):
    engine.test_clock["now"] = FIXED_NOW
    body = json.loads(path.read_bytes())
    assert_same_call(engine, SERVICE_FOR_HOOK[body["hook"]], path.read_bytes())


@pytest.mark.parametrize("path", SYNTHEA, ids=lambda p: p.name.split("_")[0])
@pytest.mark.parametrize("honour_filters", [True, False])
def test_synthea_call_same_record(engine, path, honour_filters):
    """Each Synthea patient through every hook, as of the day after their last lab (with unfiltered searches too:
    every Observation they have, of any date and status)."""
    resources = stored_resources(json.loads(path.read_text(encoding="utf-8")))
    patient_id = next(r for r in resources if r["resourceType"] == "Patient")["id"]
    now = day_after_last_lab(resources, engine.knowledge.loinc_to_analyte)
    assert now is not None
    engine.test_clock["now"] = now
    used = 0
    for hook in HOOKS:
        body = chart_request(resources, hook, engine.catalog, now, f"typed-{patient_id}-{hook}", honour_filters=honour_filters)
        used += assert_same_call(engine, SERVICE_FOR_HOOK[hook], json.dumps(body).encode())
    assert used > 0


def test_bench_chart_same_record(engine):
    engine.test_clock["now"] = FIXED_NOW
    from bench.peer import NOW, SERVICE
    engine.test_clock["now"] = NOW
    assert assert_same_call(engine, SERVICE, chart_body(300)) == 300


# ---------------------------------------------------------------------------------------------- odd Observations
KNOWLEDGE_CODES = st.sampled_from(["19123-9", "2601-3", " 2823-3 ", "718-7", "2160-0"])
observation_of_ours = observation.flatmap(lambda o: st.tuples(st.just(o), KNOWLEDGE_CODES, st.sampled_from(
    [None, "http://loinc.org", " http://loinc.org", "", "urn:other"]), st.sampled_from(
    ["Patient/p1", "Patient/p2", None, " Patient/p1"]), st.sampled_from(["final", "amended", "preliminary", " final"]),
    st.sampled_from([None, "1", "2", "x"])))


def _with(o: dict, code: str, system: str | None, subject: str | None, status: str, rid: str | None) -> dict:
    """Most generated Observations get a code the rules read, this patient, a date: the paths that matter."""
    o = dict(o)
    if isinstance(o.get("code"), dict) and isinstance(o["code"].get("coding"), list) and o["code"]["coding"] \
            and isinstance(o["code"]["coding"][0], dict):
        o["code"] = dict(o["code"], coding=[dict(o["code"]["coding"][0], code=code, system=system)] + o["code"]["coding"][1:])
    if subject is not None:
        o["subject"] = {"reference": subject}
    if isinstance(o.get("status"), str):
        o["status"] = status
    if rid is not None:
        o["id"] = rid
    o.setdefault("effectiveDateTime", "2026-11-20T08:00:00Z")
    return o


@pytest.mark.slow
def test_odd_observations_same_record(knowledge):
    """Generated Observations (R4 deviations, wrong types, whitespace, other patients, repeated ids and versions):
    a Bundle of them read from bytes builds the same record as the plain reading; the typed decoding is taken
    for the clean ones and refused (so plain decides) for the others."""
    counts = {"typed": 0, "plain": 0}
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(st.lists(observation_of_ours, min_size=1, max_size=4))
    def check(items):
        resources = [_with(*item) for item in items]
        raw = json.dumps({"hook": "patient-view", "prefetch": {"observations": {
            "resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}}}).encode()
        typed = decode_typed(raw)
        try:
            plain = orjson.loads(raw)
        except orjson.JSONDecodeError:  # an infinite float was generated: plain JSON refuses the body
            assert typed is None
            return
        assert typed is not None
        counts["typed" if typed_observations(typed) else "plain"] += 1
        records = []
        for body in (plain, typed):
            data = ResolvedData(values=dict(body["prefetch"]), key_types={"observations": "Observation"})
            records.append(RecordBuilder(knowledge, now).build("p1", data))
        assert records[1] == records[0]

    check()
    assert counts["typed"] >= 40 and counts["plain"] >= 40, counts  # both sides exercised


# ---------------------------------------------------------------------------------------------- stepping aside
@pytest.mark.parametrize("raw", [
    b'{"hook": "patient-view\xff"}',  # not UTF-8
    b'{"prefetch": {"o": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation", "status": "final", '
    b'"code": {}, "note": "\xff\xfe"}}]}}}',  # not UTF-8 in an element msgspec would skip
    b'{"a": ' + b"[" * 1100 + b"]" * 1100 + b"}",  # deeper than orjson reads
    b'{"a": 1e999}', b'{"hook": NaN}', b"[1, 2]", b'{"a": 1,}', b'{"a": "\\ud800"}',
    b'{"prefetch": {"o": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation", "status": "final", '
    b'"code": {}, "valueQuantity": {"value": 1e999}}}]}}}',  # out of double range in an element the service reads
])
def test_typed_decoding_steps_aside_where_plain_json_decides(raw):
    assert decode_typed(raw) is None


def test_odd_bundles_are_read_plain():
    """A Bundle with anything but clean Observations (another type, a single entry object, a whitespace-padded
    code is fine but a number for a string is not) is read by orjson, unchanged."""
    obs = {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": 19123}]}}
    for value in ({"resourceType": "Bundle", "entry": [{"resource": obs}]},
                  {"resourceType": "Bundle", "entry": {"resource": dict(obs, code={"coding": []})}},
                  {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "p"}}]},
                  {"resourceType": "Patient", "id": "p"}):
        raw = json.dumps({"prefetch": {"k": value}}).encode()
        assert decode_typed(raw) == orjson.loads(raw)
