"""`cds-service invoke` run as a real process: FILE mode honours --service-url and --json and reads a plain-http
FHIR server as stand-in mode does; a wrong --fhir-base is named first; a 401 says how to sign."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cds_service.fixtures import get_scenario
from cds_service.kit.standin import topic_codes
from tests.ops.opskit import CLI, Served, free_port, request_file, serve_env
from tests.trust.trustkit import ISS, Signer, jwks, write_issuers

pytestmark = pytest.mark.processes  # cds-service serve and cds-service invoke as processes

NOW = "2026-11-25T12:00:00Z"
PV = "mg-gitelman-02.patient-view.prefetch.json"


def invoke(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd or "/tmp")}
    return subprocess.run([CLI, "invoke", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def open_service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("invoke-open")
    served = Served(tmp, serve_env(tmp, CDS_AUTH_MODE="off", CDS_WORKERS="1"))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def locked_service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("invoke-locked")
    issuers = write_issuers(tmp / "issuers.yaml", [{"iss": ISS, "jwks": jwks(Signer("ES384", kid="k"))}])
    served = Served(tmp, serve_env(tmp, CDS_AUTH_MODE="required", CDS_TRUSTED_ISSUERS_FILE=issuers, CDS_WORKERS="1"))
    yield served
    served.stop()


def test_file_mode_calls_the_running_service_and_prints_a_table(open_service, tmp_path):
    path = tmp_path / PV
    path.write_bytes(request_file(PV))
    table = invoke(str(path), "--service-url", open_service.url)
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith(f"magnesium-patient-view (patient-view) {path}: HTTP 200") and "card(s)" in table.stdout
    as_json = invoke(str(path), "--service-url", open_service.url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    served_cards = json.loads(as_json.stdout)["cards"]
    hook_instance = json.loads(request_file(PV))["hookInstance"]
    assert hook_instance in open_service.log()  # the call went to the running service, not in-process
    in_process = invoke(str(path), "--json", "--now", NOW)
    assert in_process.returncode == 0, in_process.stderr
    assert topic_codes(served_cards) == topic_codes(json.loads(in_process.stdout)["cards"])


@pytest.mark.integration
def test_file_mode_reads_a_plain_http_fhir_server_like_stand_in_mode(loaded, fhir_base, tmp_path):
    body = json.loads(request_file("mg-gitelman-02.patient-view.no-prefetch.json"))
    body["fhirServer"] = fhir_base  # http://127.0.0.1:PORT/fhir: the file names it, so it is allowed
    path = tmp_path / "no-prefetch.json"
    path.write_text(json.dumps(body))
    done = invoke(str(path), "--json", "--now", NOW)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = get_scenario("mg-gitelman-02").expected["patient-view"]
    assert set(topic_codes(json.loads(done.stdout)["cards"])) == set(expected)


def test_a_wrong_fhir_base_is_named_before_anything_else(open_service):
    dead = f"http://127.0.0.1:{free_port()}/fhir"
    done = invoke("--hook", "patient-view", "--patient", "mg-ppi-03", "--fhir-base", dead)
    assert done.returncode == 1
    assert f"FHIR server {dead}: cannot connect" in done.stderr and "--fhir-base" in done.stderr
    not_fhir = f"{open_service.url}/fhir"  # answers HTTP, but is no FHIR server
    done = invoke("--hook", "patient-view", "--patient", "mg-ppi-03", "--fhir-base", not_fhir,
                  "--service-url", open_service.url)
    assert done.returncode == 1
    assert f"FHIR server {not_fhir}: GET /metadata answered HTTP 404" in done.stderr and "--fhir-base" in done.stderr


def test_a_401_says_how_to_sign(locked_service, tmp_path):
    path = tmp_path / PV
    path.write_bytes(request_file(PV))
    done = invoke(str(path), "--service-url", locked_service.url)
    assert done.returncode == 1
    assert "HTTP 401" in done.stderr
    assert "--sign-with KEY.pem --issuer ISS --kid KID" in done.stderr and "CDS_AUTH_MODE=off" in done.stderr
