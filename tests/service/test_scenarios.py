"""Scenario patients through the HTTP layer: the card topics must equal what fixtures/scenarios.yaml declares,
and the full responses must equal the reviewed golden files in tests/service/golden/ (pretty-printed, sorted
keys, each card's Markdown detail stored as a list of lines, the knowledge version as ``<knowledge-version>``:
tests/helpers/golden.py).

Goldens are regenerated only on purpose: ``CDS_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/service/test_scenarios.py``
writes them and fails, asking for the diff to be reviewed. A golden is never written for a response whose
card topics contradict scenarios.yaml.
"""
from __future__ import annotations

import difflib
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from cds_service import create_app
from cds_service.cards import GAP_RULE
from cds_service.config import Settings
from cds_service.definitions import load_definitions
from cds_service.fixtures import (
    FHIR_SERVER_PLACEHOLDER,
    HOOKS,
    SERVICE_FOR_HOOK,
    build_request,
    fixtures_dir,
    hook_context,
    list_scenarios,
    read_bundle,
    read_drafts,
    request_files,
    search,
    stored_resources,
)
from cds_service.knowledge import load_knowledge
from cds_service.protocol.request import parse_hook_request
from cds_service.record.dates import parse_fhir_datetime
from cds_service.rules import RULES_BY_ID
from cds_service.services import get_services
from tests.helpers.env import FIXED_NOW
from tests.helpers.golden import KNOWLEDGE_VERSION, golden_text, read_golden, write_golden

GOLDEN = Path(__file__).resolve().parent / "golden"
SCENARIOS = list_scenarios()
CASES = [(s, hook) for s in SCENARIOS for hook in HOOKS]
# every rule of issue 3 must be shown by at least one scenario
ISSUE_RULES = {
    "hypomagnesemia", "refractory-hypomagnesemia", "magnesium-wasting-drug", "magnesium-monitoring-gap",
    "femg-renal-wasting", "femg-extrarenal-loss", "femg-needed", "refractory-hypokalemia", "refractory-hypocalcemia",
    "renal-replacement-caution", "order-wasting-drug", "order-potassium-without-magnesium", "order-magnesium-renal",
    "order-iv-magnesium", "order-vitamin-d-analogue",
}


def _id(case) -> str:
    s, hook = case
    return f"{s.id}.{hook}"


@pytest.fixture(scope="module")
def app(tmp_path_factory, knowledge):
    """One app for the module (same configuration as conftest's app_factory)."""
    db = tmp_path_factory.mktemp("scenarios") / "audit.sqlite3"
    application = create_app(Settings.from_env(database_url=f"sqlite:///{db}", auth_mode="off", allow_http_fhir=True),
                             knowledge=knowledge, clock=lambda: FIXED_NOW)
    application.config["TESTING"] = True
    yield application
    get_services(application).store.close()


@pytest.fixture(scope="module")
def catalog():
    settings = Settings()
    return load_definitions(settings.hooks_dir, load_knowledge(settings.knowledge_dir or None))


def _call(client, catalog, scenario, hook, **kwargs):
    body = build_request(scenario, hook, catalog, FIXED_NOW, **kwargs)
    resp = client.post(f"/cds-services/{SERVICE_FOR_HOOK[hook]}", json=body)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def _topics(response) -> set[str]:
    return {card["source"]["topic"]["code"] for card in response["cards"]}


# ---------------------------------------------------------------------------------------------- the index
def test_index_covers_every_rule_and_the_required_variety():
    assert len(SCENARIOS) >= 18
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)
    shown = set().union(*(s.expected[h] for s in SCENARIOS for h in HOOKS))
    assert ISSUE_RULES - shown == set(), "rules no scenario shows"
    assert shown <= set(RULES_BY_ID) | {GAP_RULE}, f"scenarios.yaml names unknown rules: {shown - set(RULES_BY_ID)}"
    normal = [s.id for s in SCENARIOS if not any(s.expected[h] for h in HOOKS)]
    assert len(normal) >= 3, normal
    for s in SCENARIOS:
        assert s.description, s.id
        if s.drafts_path is None:
            assert not s.expected["order-select"] and not s.expected["order-sign"], s.id


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_bundle_is_a_valid_transaction_with_stable_ids(scenario):
    bundle = read_bundle(scenario)
    Bundle.model_validate(bundle)  # full R4 (R4B models) validation of every resource
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        res = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
        if res["resourceType"] == "Patient":
            assert res["id"] == scenario.patient_id == scenario.id
        else:
            assert res["id"].startswith(scenario.id + "-"), res["id"]
        subject = res.get("subject")
        if subject is not None:
            assert subject == {"reference": f"Patient/{scenario.patient_id}"}
        when = parse_fhir_datetime(res.get("effectiveDateTime"))
        if when is not None:
            assert when <= FIXED_NOW, res["id"]
            if when < FIXED_NOW - timedelta(days=365):
                assert scenario.id == "normal-old-data-20", f"{res['id']} is older than a year"
    drafts = read_drafts(scenario)
    Bundle.model_validate(drafts)
    for entry in drafts["entry"]:
        res = entry["resource"]
        assert res["status"] == "draft" and res["id"].startswith(scenario.id + "-draft-")
        assert res["subject"] == {"reference": f"Patient/{scenario.patient_id}"}
    ids = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in drafts["entry"]}
    assert set(scenario.selections or ()) <= ids


# ---------------------------------------------------------------------------------------------- expected cards
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_cards_match_the_declared_rules(client, catalog, case):
    scenario, hook = case
    response = _call(client, catalog, scenario, hook)
    assert _topics(response) == set(scenario.expected[hook]), scenario.description


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_ehr_ignoring_the_prefetch_filters_changes_nothing(client, catalog, scenario):
    """Stopped, entered-in-error, completed, refuted and old data sent anyway must still not count."""
    response = _call(client, catalog, scenario, "patient-view", honour_filters=False)
    assert _topics(response) == set(scenario.expected["patient-view"])


def test_goldens_hold_a_placeholder_for_the_knowledge_version(knowledge):
    """A knowledge version bump rewrites no golden: the writer stores the placeholder, the comparison puts it back."""
    texts = [path.read_text(encoding="utf-8") for path in GOLDEN.glob("*.json")]
    assert not [t for t in texts if knowledge.version in t]
    assert sum(KNOWLEDGE_VERSION in t for t in texts) >= 100


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_cards_match_the_golden_file(client, catalog, knowledge, case):
    scenario, hook = case
    response = _call(client, catalog, scenario, hook)
    path = GOLDEN / f"{scenario.id}.{hook}.json"
    text = golden_text(response)
    if os.environ.get("CDS_REGENERATE_GOLDEN") == "1":
        if _topics(response) != set(scenario.expected[hook]):
            pytest.fail(f"not writing {path.name}: its cards {sorted(_topics(response))} contradict scenarios.yaml "
                        f"{sorted(scenario.expected[hook])}")
        old = read_golden(path, knowledge.version) if path.exists() else None
        if old == text and path.read_text(encoding="utf-8") == old.replace(knowledge.version, KNOWLEDGE_VERSION):
            return  # unchanged (and the version already a placeholder): nothing to review
        GOLDEN.mkdir(exist_ok=True)
        write_golden(path, text, knowledge.version)
        pytest.fail(f"golden {path.name} {'rewritten' if old else 'written'}: review it (git diff {path}) and "
                    "run again without CDS_REGENERATE_GOLDEN")
    if not path.exists():
        pytest.fail(f"no golden file {path.name}: once the cards match scenarios.yaml, run with CDS_REGENERATE_GOLDEN=1 "
                    "and review the written file")
    golden = read_golden(path, knowledge.version)
    if text != golden:
        diff = list(difflib.unified_diff(golden.splitlines(), text.splitlines(), f"golden/{path.name}", "response", lineterm="", n=1))
        pytest.fail(f"cards differ from golden/{path.name} (regenerate on purpose only):\n" + "\n".join(diff[:80]))


# ---------------------------------------------------------------------------------------------- ready requests
def test_ready_requests_are_the_generated_ones(catalog):
    """fixtures/requests/ is generated by fixtures/make_requests.py, never edited by hand."""
    directory = fixtures_dir() / "requests"
    expected = request_files(catalog, FIXED_NOW)
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in directory.glob("*.json")}
    assert sorted(on_disk) == sorted(expected), "run .venv/bin/python fixtures/make_requests.py"
    stale = [name for name in expected if on_disk[name] != expected[name]]
    assert stale == [], f"out of date (run .venv/bin/python fixtures/make_requests.py): {stale[:5]}"
    assert len(expected) == len(SCENARIOS) * len(HOOKS) * 2


@pytest.mark.parametrize("hook", HOOKS)
def test_no_prefetch_requests_are_valid_and_point_at_the_placeholder_server(catalog, hook):
    for s in SCENARIOS:
        path = fixtures_dir() / "requests" / f"{s.id}.{hook}.no-prefetch.json"
        body = json.loads(path.read_text(encoding="utf-8"))
        assert "prefetch" not in body
        req = parse_hook_request(body, catalog.get(SERVICE_FOR_HOOK[hook]))
        assert req.fhir_server == FHIR_SERVER_PLACEHOLDER and req.fhir_authorization is not None
        assert req.patient_id == s.patient_id


def test_ready_request_file_gives_the_declared_cards(client):
    """A ready request file posted as-is (what `curl --data @file` sends)."""
    s = next(x for x in SCENARIOS if x.id == "mg-cisplatin-08")
    raw = (fixtures_dir() / "requests" / "mg-cisplatin-08.order-sign.prefetch.json").read_bytes()
    resp = client.post("/cds-services/magnesium-order-sign", data=raw, content_type="application/json")
    assert resp.status_code == 200
    assert _topics(resp.get_json()) == set(s.expected["order-sign"])


# ---------------------------------------------------------------------------------------------- search emulation
def test_search_honours_type_patient_status_and_date():
    resources = stored_resources(read_bundle("normal-old-data-20"))
    meds = search(resources, "MedicationRequest?patient=normal-old-data-20&status=active,on-hold")
    assert meds["entry"] == []
    all_meds = search(resources, "MedicationRequest?patient=normal-old-data-20")
    assert [e["resource"]["status"] for e in all_meds["entry"]] == ["stopped"]
    recent = search(resources, "Observation?patient=normal-old-data-20&date=ge2025-11-25&_sort=-date")
    assert {e["resource"]["id"] for e in recent["entry"]} == {"normal-old-data-20-lab-3", "normal-old-data-20-vital-1"}
    assert search(resources, "Observation?patient=someone-else")["entry"] == []
    conditions = search(resources, "Condition?patient=normal-old-data-20&clinical-status=active,recurrence,relapse")
    assert conditions["entry"] == []
    mg = search(resources, "Observation?patient=normal-old-data-20&code=http://loinc.org|19123-9")
    assert [e["resource"]["valueQuantity"]["value"] for e in mg["entry"]] == [1.1]
    assert search(resources, "Patient/normal-old-data-20")["id"] == "normal-old-data-20"
    assert search(resources, "Patient/nobody") is None


def test_search_sorts_newest_first_and_pages():
    resources = stored_resources(read_bundle("mg-refractory-01"))
    result = search(resources, "Observation?patient=mg-refractory-01&code=http://loinc.org|19123-9&_sort=-date&_count=2")
    assert result["total"] == 3
    assert [e["resource"]["valueQuantity"]["value"] for e in result["entry"]] == [1.4, 1.3]


def test_urn_uuid_transactions_are_resolved_like_a_server():
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0f6c7a1e-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Patient", "id": "0f6c7a1e-0000-4000-8000-000000000001"},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:0f6c7a1e-0000-4000-8000-000000000002",
         "resource": {"resourceType": "Condition", "subject": {"reference": "urn:uuid:0f6c7a1e-0000-4000-8000-000000000001"},
                      "code": {"text": "x"}},
         "request": {"method": "POST", "url": "Condition"}},
    ]}
    stored = stored_resources(bundle)
    assert stored[1]["id"] == "0f6c7a1e-0000-4000-8000-000000000002"
    assert stored[1]["subject"]["reference"] == "Patient/0f6c7a1e-0000-4000-8000-000000000001"
    found = search(stored, "Condition?patient=0f6c7a1e-0000-4000-8000-000000000001")
    assert len(found["entry"]) == 1


def test_search_rejects_what_it_cannot_emulate():
    from cds_service.fixtures import FixtureError

    with pytest.raises(FixtureError):
        search([], "Observation?patient=x&_has:Foo=bar")


# ---------------------------------------------------------------------------------------------- against a real FHIR server
@pytest.mark.integration
def test_scenarios_on_a_real_fhir_server(client, catalog):
    """Load every scenario (idempotent PUT transactions) into the FHIR server at CDS_TEST_FHIR_BASE, check that
    the search emulation answers each prefetch query as that server does, and that the no-prefetch requests
    (the service fetching for itself) give the declared cards."""
    import requests

    from cds_service.prefetch.templates import render
    from tests.helpers.env import fhir_base_url

    base = fhir_base_url()
    for s in SCENARIOS:
        resp = requests.post(base, json=read_bundle(s), headers={"Content-Type": "application/fhir+json"}, timeout=30)
        assert resp.status_code == 200, f"{s.id}: {resp.status_code} {resp.text[:300]}"

    def match_ids(value):
        if value is None or value.get("resourceType") != "Bundle":
            return (value or {}).get("id")
        return sorted(e["resource"]["id"] for e in value.get("entry", []) if e.get("search", {}).get("mode", "match") == "match")

    service = catalog.get("magnesium-patient-view")
    for s in SCENARIOS:
        resources = stored_resources(read_bundle(s))
        context = hook_context(s.patient_id, "patient-view")
        for key, p in service.prefetch.items():
            query = render(catalog.expand_knowledge_tokens(service, p.template, FIXED_NOW), context)
            server = requests.get(f"{base}/{query}", timeout=30)
            assert server.status_code == 200, query
            assert match_ids(search(resources, query)) == match_ids(server.json()), f"{s.id} {key}: {query}"
    for s, hook in CASES:
        body = build_request(s, hook, catalog, FIXED_NOW, with_prefetch=False, fhir_server=base)
        resp = client.post(f"/cds-services/{SERVICE_FOR_HOOK[hook]}", json=body)
        assert resp.status_code == 200, resp.get_json()
        assert _topics(resp.get_json()) == set(s.expected[hook]), f"{s.id} {hook}"
