"""README.md: the two opening commands, the generated tables in sync with the code, and the walkthrough
commands that can run here (fixtures, invoke, the ready requests) run against the real FHIR server."""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from cds_service.cli import main
from cds_service.config import Settings
from cds_service.fixtures import get_scenario
from cds_service.kit import readme
from cds_service.kit.standin import topic_codes
from cds_service.rules import RULES

REPO = Path(__file__).resolve().parents[2]
TEXT = (REPO / "README.md").read_text()
CLI = str(Path(sys.executable).with_name("cds-service"))
COMPOSE_FHIR = "http://localhost:8090/fhir"
COMPOSE_SERVICE = "http://localhost:8080"


def _blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def _commands(block: str) -> list[str]:
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _section(title: str) -> str:
    return TEXT.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_opens_with_exactly_the_two_commands():
    first_lines = [ln for ln in TEXT.splitlines() if ln.strip()][:2]
    assert first_lines[0].startswith("# ") and first_lines[1] == "```bash"
    commands = _commands(_blocks(TEXT)[0])
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && CDS_AUTH_MODE=off .venv/bin/cds-service serve",
        "bash scripts/test.sh",
    ]
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_generated_tables_match_the_code():
    assert readme.render(TEXT) == TEXT, "README.md is out of date: run python -m cds_service.kit.readme"


def test_every_setting_and_every_rule_is_documented():
    config = _section("Configuration")
    from dataclasses import fields

    for f in fields(Settings):
        assert f"| `CDS_{f.name.upper()}` |" in config
    rules = _section("Rules and their cards")
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", rules, re.M))
    assert documented == {r.id for r in RULES} | {"data-gaps"}


def test_hand_written_sections_are_filled():
    for title in ("Client authentication", "Audit", "Performance", "Limits: what the service does not do"):
        section = _section(title)
        assert "Placeholder" not in section and len(section.split()) > 80, title


@pytest.fixture(scope="module")
def readme_service(tmp_path_factory):
    """The README's first command, minus the install: `CDS_AUTH_MODE=off cds-service serve` (port from CDS_PORT)."""
    tmp = tmp_path_factory.mktemp("readme-serve")
    port = _free_port()
    env = {**os.environ, "CDS_AUTH_MODE": "off", "CDS_PORT": str(port), "CDS_ALLOW_HTTP_FHIR": "true",
           "CDS_DATABASE_URL": f"sqlite:///{tmp}/audit.sqlite3", "CDS_LOG_LEVEL": "WARNING"}
    with open(tmp / "serve.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([CLI, "serve"], env=env, cwd=tmp, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, (tmp / "serve.log").read_text()[-2000:]
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "cds-service serve did not come up in 30 s"
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(15)


@pytest.mark.processes
def test_first_command_serves_discovery(readme_service):
    body = requests.get(f"{readme_service}/cds-services", timeout=5).json()
    assert sorted(s["id"] for s in body["services"]) == [
        "magnesium-order-select", "magnesium-order-sign", "magnesium-patient-view"]
    assert requests.get(f"{readme_service}/readyz", timeout=5).status_code == 200


@pytest.mark.processes
@pytest.mark.integration
def test_walkthrough_commands_run_here(loaded, fhir_base, readme_service, tmp_path, monkeypatch):
    """Every `cds-service` line of the walkthrough, with the compose addresses replaced by this machine's
    FHIR server and a served instance (docker-compose itself cannot run here: no Docker engine)."""
    monkeypatch.chdir(REPO)
    requests_dir = tmp_path / "requests"
    lines = [c for b in _blocks(_section("Five-minute walkthrough")) for c in _commands(b) if c.startswith("cds-service ")]
    assert len(lines) >= 7
    ran = []
    for line in lines:
        line = (line.replace(COMPOSE_FHIR, fhir_base).replace("http://hapi:8080/fhir", fhir_base)
                .replace(COMPOSE_SERVICE, readme_service).replace("fixtures/requests", str(requests_dir)))
        args = shlex.split(line, comments=True)[1:]
        result = CliRunner(env={"CDS_AUTH_MODE": "off", "CDS_DATABASE_URL": f"sqlite:///{tmp_path}/cli.sqlite3"}).invoke(main, args)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        ran.append((args, result.output))

    by_start = {" ".join(a[:2]): out for a, out in ran}
    assert "loaded " in by_start["fixtures load"] and "via transaction" in by_start["fixtures load"]
    assert "mg-gitelman-02  patient=mg-gitelman-02" in by_start["fixtures list"]
    tables = [out for a, out in ran if a[0] == "invoke" and "--json" not in a and "--service-url" in a]
    assert len(tables) == 2 and all("card(s)" in t and "HTTP 200" in t for t in tables)
    served_json = next(out for a, out in ran if a[0] == "invoke" and "--json" in a)
    assert json.loads(served_json)["cards"], "order-sign for mg-ppi-03 returned no card"
    in_process = next(out for a, out in ran if a[0] == "invoke" and a[1].endswith(".json"))
    scenario = get_scenario("mg-gitelman-02")
    assert set(topic_codes(json.loads(in_process)["cards"])) == set(scenario.expected["patient-view"])


@pytest.mark.processes
@pytest.mark.integration
def test_ready_request_posted_like_curl(readme_service, tmp_path, loaded):
    """The walkthrough's curl line: POST a ready request file to the served instance."""
    result = CliRunner().invoke(main, ["fixtures", "requests", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    body = (tmp_path / "mg-gitelman-02.patient-view.prefetch.json").read_bytes()
    resp = requests.post(f"{readme_service}/cds-services/magnesium-patient-view", data=body,
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 200
    assert resp.json()["cards"], "a low-magnesium patient got no card"
