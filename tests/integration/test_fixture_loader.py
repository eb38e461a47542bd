"""`cds-service fixtures load` against the real FHIR server: idempotent, reports what it loaded, fails clearly."""
from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cds_service.cli import main
from cds_service.fixtures import list_scenarios, read_bundle
from cds_service.kit.loader import FixtureLoader, LoadError, put_entries

pytestmark = pytest.mark.integration

SCENARIOS = list_scenarios()
ALL_TYPES = sorted({e["resource"]["resourceType"] for s in SCENARIOS for e in read_bundle(s)["entry"]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _per_scenario_counts(loader: FixtureLoader) -> dict[str, dict[str, int]]:
    """Per scenario and type: how many of the bundle's ids the server holds (search by _id)."""
    out = {}
    for s in SCENARIOS:
        ids: dict[str, list[str]] = {}
        for e in read_bundle(s)["entry"]:
            ids.setdefault(e["resource"]["resourceType"], []).append(e["resource"]["id"])
        out[s.id] = {t: loader.count(t, _id=",".join(v)) for t, v in ids.items()}
    return out


def test_load_twice_leaves_the_same_resource_counts(loaded, fhir_base):
    loader = FixtureLoader(fhir_base)
    before_totals = loader.counts(ALL_TYPES)
    before = _per_scenario_counts(loader)
    # every resource of every bundle is on the server, once
    for s in SCENARIOS:
        expected = Counter(e["resource"]["resourceType"] for e in read_bundle(s)["entry"])
        assert before[s.id] == dict(expected), s.id

    result = CliRunner().invoke(main, ["fixtures", "load", "--fhir-base", fhir_base])

    assert result.exit_code == 0, result.output
    assert loader.counts(ALL_TYPES) == before_totals
    assert _per_scenario_counts(loader) == before


def test_load_reports_what_each_scenario_loaded(loaded, fhir_base):
    result = CliRunner().invoke(main, ["fixtures", "load", "--fhir-base", fhir_base])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for s in SCENARIOS:
        counts = Counter(e["resource"]["resourceType"] for e in read_bundle(s)["entry"])
        line = next(ln for ln in lines if ln.startswith(f"{s.id}: "))
        assert f"{sum(counts.values())} resources" in line
        for rtype, n in counts.items():
            assert f"{rtype} {n}" in line
        assert "via transaction" in line
    total = sum(len(read_bundle(s)["entry"]) for s in SCENARIOS)
    assert lines[-1] == f"loaded {len(SCENARIOS)} scenario(s), {total} resources into {fhir_base}"
    assert loaded[SCENARIOS[0].id].total == len(read_bundle(SCENARIOS[0])["entry"])


def test_individual_puts_load_the_same_as_a_transaction(loaded, fhir_base):
    loader = FixtureLoader(fhir_base)
    before = loader.counts(ALL_TYPES)
    sid = SCENARIOS[1].id

    result = CliRunner().invoke(main, ["fixtures", "load", "--fhir-base", fhir_base, "--scenario", sid, "--individual-puts"])

    assert result.exit_code == 0, result.output
    assert f"{sid}: " in result.output and "via individual PUTs" in result.output
    assert "loaded 1 scenario(s)" in result.output
    assert loader.counts(ALL_TYPES) == before


def test_a_server_without_transactions_gets_individual_puts(loaded, fhir_base):
    loader = FixtureLoader(fhir_base)
    loader.wait_for_metadata(5)
    loader.capability = {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "interaction": []}]}
    scenario = SCENARIOS[2]

    done = loader.load(scenario.id, read_bundle(scenario))

    assert done.mode == "individual PUTs"
    assert done.counts == dict(Counter(e["resource"]["resourceType"] for e in read_bundle(scenario)["entry"]))
    assert done.created == 0 and done.updated == done.total  # already there: updates only


def test_unreachable_server_fails_with_a_clear_message():
    dead = f"http://127.0.0.1:{_free_port()}/fhir"

    result = CliRunner().invoke(main, ["fixtures", "load", "--fhir-base", dead, "--wait", "1"])

    assert result.exit_code == 1
    assert f"FHIR server {dead} is not reachable after waiting 1 s" in result.output
    assert "cannot connect" in result.output


def test_a_rejected_bundle_fails_and_shows_the_servers_operation_outcome(loaded, fhir_base, tmp_path):
    source = SCENARIOS[0]
    bundle = read_bundle(source)
    bad_id = f"kit-rejected-{tmp_path.name[-8:]}".replace("_", "-")
    for entry in bundle["entry"]:  # new ids, so that nothing real is touched
        res = entry["resource"]
        res["id"] = f"{bad_id}-{res['id']}"[:64]
        entry["request"]["url"] = f"{res['resourceType']}/{res['id']}"
    obs = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    obs["valueQuantity"] = {"value": "not-a-number", "unit": "mg/dL"}
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "broken.json").write_text(json.dumps(bundle))
    (tmp_path / "scenarios.yaml").write_text(yaml.safe_dump({"scenarios": [{"id": "broken", "patient": bad_id}]}))

    result = CliRunner().invoke(main, ["fixtures", "load", "--fhir-base", fhir_base, "--fixtures-dir", str(tmp_path)])

    assert result.exit_code == 1
    assert "Error: broken: the server rejected the transaction (HTTP 4" in result.output
    assert "[error]" in result.output  # the OperationOutcome issue, as the server worded it
    # atomic: nothing of the rejected bundle was stored
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    assert FixtureLoader(fhir_base).count("Patient", _id=patient["id"]) == 0


def test_bundles_that_are_not_idempotent_are_refused_before_sending():
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "x"}, "request": {"method": "POST", "url": "Patient"}}]}
    with pytest.raises(LoadError, match=r"entry 0 is POST 'Patient', expected PUT Patient/x"):
        put_entries(bundle, "s")
    assert put_entries(read_bundle(SCENARIOS[0]), SCENARIOS[0].id)[0][0] == "Patient"


def test_unknown_scenario_is_a_clear_error(fhir_base):
    result = CliRunner().invoke(main, ["fixtures", "load", "--fhir-base", fhir_base, "--scenario", "no-such-scenario"])
    assert result.exit_code == 1
    assert "no scenario 'no-such-scenario'" in result.output


def test_fixtures_list_names_every_scenario_and_its_expected_cards():
    result = CliRunner().invoke(main, ["fixtures", "list"])
    assert result.exit_code == 0, result.output
    for s in SCENARIOS:
        assert f"{s.id}  patient={s.patient_id}" in result.output
        line = [ln for ln in result.output.splitlines() if ln.strip().startswith("patient-view")][SCENARIOS.index(s)]
        assert line.split(None, 1)[1].strip() == (", ".join(sorted(s.expected["patient-view"])) or "(no cards)")


def test_fixtures_requests_writes_ready_requests(tmp_path):
    result = CliRunner().invoke(main, ["fixtures", "requests", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    files = sorted(Path(tmp_path).glob("*.json"))
    assert len(files) == len(SCENARIOS) * 3 * 2
    body = json.loads((tmp_path / f"{SCENARIOS[0].id}.patient-view.no-prefetch.json").read_text())
    assert body["hook"] == "patient-view" and "fhirServer" in body and "prefetch" not in body
