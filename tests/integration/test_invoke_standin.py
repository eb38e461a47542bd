"""`cds-service invoke` in EHR stand-in mode against the real FHIR server: in-process and against a running
service (`cds-service serve`), table and JSON output, with and without prefetch, with a signed client JWT."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds_service.cli import main
from cds_service.fixtures import get_scenario
from cds_service.kit.standin import EhrStandIn, topic_codes

pytestmark = pytest.mark.integration

THREE = ("mg-refractory-01", "mg-gitelman-02", "mg-ppi-03")
NOW = "2026-11-25T12:00:00Z"  # the fixtures' today (tests/conftest.py FIXED_NOW)
CLI = str(Path(sys.executable).with_name("cds-service"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(scenario, hook: str, fhir_base: str, *extra: str) -> list[str]:
    args = ["invoke", "--hook", hook, "--patient", scenario.patient_id, "--fhir-base", fhir_base, "--now", NOW]
    if hook != "patient-view":
        args += ["--draft-orders", str(scenario.drafts_path)]
    return args + list(extra)


def _table_codes(output: str) -> tuple[list[str], int]:
    """Rule column of the card table, and the card count line."""
    lines = output.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("INDICATOR"))
    rows = [ln for ln in lines[header + 2:] if re.match(r"^(info|warning|critical)\s", ln)]
    count = int(re.search(r"^(\d+) card\(s\)$", output, re.M).group(1)) if "card(s)" in output else 0
    return sorted(r.split()[1] for r in rows), count


@pytest.fixture
def cli_env(tmp_path):
    return {"CDS_AUTH_MODE": "off", "CDS_DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "CDS_LOG_LEVEL": "WARNING"}


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "no-prefetch"])
@pytest.mark.parametrize("hook", ["patient-view", "order-sign"])
@pytest.mark.parametrize("sid", THREE)
def test_invoke_table_shows_the_expected_cards(sid, hook, prefetch, loaded, fhir_base, cli_env):
    scenario = get_scenario(sid)
    extra = [] if prefetch else ["--no-prefetch"]

    result = CliRunner(env=cli_env).invoke(main, _args(scenario, hook, fhir_base, *extra))

    assert result.exit_code == 0, result.output
    mode = "prefetch 5 key(s)" if prefetch else "no prefetch (service fetches)"
    assert f"(({hook}) patient {sid}, {mode}: HTTP 200".replace("((", "(") in result.output
    codes, count = _table_codes(result.output)
    assert codes == sorted(scenario.expected[hook])
    assert count == len(scenario.expected[hook])


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "no-prefetch"])
@pytest.mark.parametrize("sid", THREE)
def test_invoke_json_is_the_service_response(sid, prefetch, loaded, fhir_base, cli_env):
    scenario = get_scenario(sid)
    extra = ["--json"] + ([] if prefetch else ["--no-prefetch"])

    result = CliRunner(env=cli_env).invoke(main, _args(scenario, "order-sign", fhir_base, *extra))

    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert set(topic_codes(body["cards"])) == set(scenario.expected["order-sign"])
    for card in body["cards"]:
        assert card["indicator"] in {"info", "warning", "critical"} and card["summary"] and card["source"]["label"]


def test_request_only_prints_the_built_request(loaded, fhir_base, cli_env):
    scenario = get_scenario("mg-gitelman-02")
    result = CliRunner(env=cli_env).invoke(main, _args(scenario, "order-select", fhir_base, "--request-only", "--no-prefetch",
                                                       "--selection", "MedicationRequest/x-1"))
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["hook"] == "order-select" and body["fhirServer"] == fhir_base
    assert body["context"]["selections"] == ["MedicationRequest/x-1"]
    assert body["context"]["draftOrders"]["resourceType"] == "Bundle"
    assert body["fhirAuthorization"]["token_type"] == "Bearer" and body["fhirAuthorization"]["access_token"]


def test_order_hooks_need_draft_orders(loaded, fhir_base, cli_env):
    result = CliRunner(env=cli_env).invoke(main, ["invoke", "--hook", "order-sign", "--patient", "mg-ppi-03",
                                                  "--fhir-base", fhir_base])
    assert result.exit_code == 1
    assert "order-sign needs draft orders (--draft-orders FILE)" in result.output


def test_invoke_without_request_or_hook_is_a_usage_error(cli_env):
    result = CliRunner(env=cli_env).invoke(main, ["invoke"])
    assert result.exit_code == 2
    assert "give REQUEST_FILE, or --hook, --patient and --fhir-base" in result.output


# ---------------------------------------------------------------------- signed client JWT
@pytest.fixture
def client_key(tmp_path):
    """An EC P-384 key pair: the private PEM for the stand-in, the trusted issuers file for the service."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = tmp_path / "client.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "kit-test-key", "use": "sig", "alg": "ES384"})
    issuers = tmp_path / "issuers.yaml"
    issuers.write_text(yaml.safe_dump({"issuers": [{"iss": "https://ehr.kit-test.example", "jwks": {"keys": [jwk]}}]}))
    return pem, issuers


def test_signed_invoke_passes_required_client_authentication(loaded, fhir_base, cli_env, client_key):
    pem, issuers = client_key
    env = {**cli_env, "CDS_AUTH_MODE": "required", "CDS_TRUSTED_ISSUERS_FILE": str(issuers)}
    scenario = get_scenario("mg-gitelman-02")
    sign = ["--sign-with", str(pem), "--issuer", "https://ehr.kit-test.example", "--kid", "kit-test-key"]

    unsigned = CliRunner(env=env).invoke(main, _args(scenario, "patient-view", fhir_base, "--json"))
    signed = CliRunner(env=env).invoke(main, _args(scenario, "patient-view", fhir_base, "--json", *sign))

    assert unsigned.exit_code == 1
    assert "answered HTTP 401" in unsigned.output and '"resourceType": "OperationOutcome"' in unsigned.output
    assert signed.exit_code == 0, signed.output
    assert set(topic_codes(json.loads(signed.output)["cards"])) == set(scenario.expected["patient-view"])


# ---------------------------------------------------------------------- a running service
def _start_service(tmp_path: Path, port: int, **env: str) -> subprocess.Popen:
    full = {**os.environ, "CDS_DATABASE_URL": f"sqlite:///{tmp_path}/served-{port}.sqlite3", "CDS_ALLOW_HTTP_FHIR": "true",
            "CDS_WORKERS": "1", "CDS_LOG_LEVEL": "WARNING", **env}
    with open(tmp_path / f"serve-{port}.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([CLI, "serve", "--host", "127.0.0.1", "--port", str(port)], env=full,
                                stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cds-service serve exited {proc.returncode}: {(tmp_path / f'serve-{port}.log').read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise AssertionError("cds-service serve did not answer /healthz within 30 s")


@pytest.fixture(scope="module")
def running_service(tmp_path_factory):
    """`cds-service serve` (gunicorn), client authentication required, trusting one test issuer."""
    tmp = tmp_path_factory.mktemp("served")
    key = ec.generate_private_key(ec.SECP384R1())
    pem = tmp / "client.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "served-key", "use": "sig", "alg": "ES384"})
    issuers = tmp / "issuers.yaml"
    issuers.write_text(yaml.safe_dump({"issuers": [{"iss": "https://ehr.served.example", "jwks": {"keys": [jwk]}}]}))
    port = _free_port()
    proc = _start_service(tmp, port, CDS_AUTH_MODE="required", CDS_TRUSTED_ISSUERS_FILE=str(issuers))
    yield f"http://127.0.0.1:{port}", pem
    proc.terminate()
    proc.wait(15)


@pytest.mark.processes
@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "no-prefetch"])
@pytest.mark.parametrize("sid", THREE)
def test_invoke_against_a_running_service_matches_in_process(sid, prefetch, loaded, fhir_base, running_service, app_factory):
    """The served service and the in-process app (both on the real clock) give the same cards."""
    url, pem = running_service
    scenario = get_scenario(sid)
    args = ["invoke", "--hook", "order-sign", "--patient", sid, "--fhir-base", fhir_base, "--draft-orders",
            str(scenario.drafts_path), "--service-url", url, "--json", "--sign-with", str(pem),
            "--issuer", "https://ehr.served.example", "--kid", "served-key"] + ([] if prefetch else ["--no-prefetch"])

    result = CliRunner().invoke(main, args)

    assert result.exit_code == 0, result.output
    served = topic_codes(json.loads(result.output)["cards"])
    app = app_factory(clock=None)  # the real clock, like the served process
    local = EhrStandIn(fhir_base=fhir_base, app=app)
    built = local.build_request("order-sign", sid, draft_orders=json.loads(scenario.drafts_path.read_text()), prefetch=prefetch)
    in_process = local.call(built)
    assert in_process.status == 200
    assert served == topic_codes(in_process.body["cards"])


@pytest.mark.processes
def test_a_running_service_refuses_an_unsigned_stand_in(loaded, fhir_base, running_service):
    url, _ = running_service
    result = CliRunner().invoke(main, ["invoke", "--hook", "patient-view", "--patient", "mg-ppi-03",
                                       "--fhir-base", fhir_base, "--service-url", url])
    assert result.exit_code == 1
    assert "HTTP 401" in result.output and "OperationOutcome" in result.output


@pytest.mark.processes
def test_a_token_for_another_audience_is_refused(loaded, fhir_base, running_service):
    """aud is the endpoint called: a JWT minted for another service URL does not pass."""
    from cds_service.kit.standin import sign_client_jwt

    url, pem = running_service
    def sign(audience: str) -> str:
        return sign_client_jwt(pem, issuer="https://ehr.served.example", kid="served-key", audience=audience)

    standin = EhrStandIn(fhir_base=fhir_base, service_url=url, signer=sign)  # discovery is signed too
    built = standin.build_request("patient-view", "mg-ppi-03", prefetch=False)
    wrong = sign("https://elsewhere.example/cds-services/magnesium-patient-view")
    right = sign(standin.endpoint(built.service["id"]))
    assert standin.call(built, client_jwt=wrong).status == 401
    assert standin.call(built, client_jwt=right).status == 200
