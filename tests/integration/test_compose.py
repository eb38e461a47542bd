"""docker-compose.yml and Dockerfile: structure checked by parsing, and `docker-compose config -q` (offline)."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cds_service.cli import fixtures_load, serve

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _depends(service: dict) -> dict[str, str]:
    dep = service.get("depends_on") or {}
    return {k: "service_started" for k in dep} if isinstance(dep, list) else {k: v.get("condition") for k, v in dep.items()}


@pytest.mark.processes
def test_docker_compose_config_validates_offline():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: `apt-get install --no-install-recommends docker-compose` "
                    "(scripts/test.sh does this) to validate docker-compose.yml")
    done = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_services_present(compose):
    assert {"hapi", "postgres", "cds", "lb", "fixtures"} <= set(compose["services"])


def test_hapi_is_pinned_r4_without_a_shell_healthcheck(compose):
    hapi = compose["services"]["hapi"]
    assert re.fullmatch(r"hapiproject/hapi:v\d+\.\d+\.\d+", hapi["image"]), hapi["image"]
    assert _env(hapi)["hapi.fhir.fhir_version"] == "R4"
    assert "healthcheck" not in hapi  # the image has no shell or curl: the loader waits instead


def test_service_replicas_share_postgres_and_have_a_healthcheck(compose):
    cds = compose["services"]["cds"]
    assert cds["build"]["dockerfile"] == "Dockerfile"
    assert cds["deploy"]["replicas"] == 2
    assert "ports" not in cds  # replicas are reached through the load balancer, not one host port each
    test = " ".join(cds["healthcheck"]["test"])
    assert "/healthz" in test and "curl" not in test
    env = _env(cds)
    assert env["CDS_DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env["CDS_DATABASE_URL"]
    assert _depends(cds) == {"postgres": "service_healthy"}
    pg = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)?-alpine", pg["image"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_one_port_for_both_replicas(compose):
    lb = compose["services"]["lb"]
    assert lb["ports"] == ["8080:8080"]
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+-alpine", lb["image"])
    script = " ".join(lb["command"])
    assert "proxy_pass http://cds;" in script and "server cds:8080" in script
    assert _depends(lb) == {"cds": "service_healthy"}


def test_the_proxy_buffers_whole_requests_within_bounded_times(compose):
    """Slow clients stop at nginx (issue 12): request bodies buffered before the service sees them, header and
    body read deadlines; the service's audit spool is on a volume."""
    script = " ".join(compose["services"]["lb"]["command"])
    for directive in ("proxy_request_buffering on;", "client_header_timeout 10s;", "client_body_timeout 10s;",
                      "client_body_buffer_size 1m;"):
        assert directive in script
    cds = compose["services"]["cds"]
    assert _env(cds)["CDS_AUDIT_SPOOL_DIR"].startswith("/app/data/") and "cds-spool:/app/data" in cds["volumes"]


def test_fixture_loader_is_a_one_shot_that_waits_for_hapi(compose):
    fx = compose["services"]["fixtures"]
    assert fx["command"][:3] == ["cds-service", "fixtures", "load"]
    # the arguments are accepted by the real command-line parser
    ctx = fixtures_load.make_context("load", list(fx["command"][3:]))
    assert ctx.params["fhir_base"] == "http://hapi:8080/fhir"
    assert ctx.params["wait_seconds"] == 180
    assert fx["restart"] == "no"
    assert "hapi" in _depends(fx)
    assert fx["image"] == compose["services"]["cds"]["image"]


def test_dockerfile_runs_gunicorn_as_a_non_root_user_with_a_healthcheck():
    text = DOCKERFILE.read_text()
    instructions = [ln for ln in re.sub(r"\\\n", " ", text).splitlines() if ln and not ln.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    user = [ln.split()[1] for ln in instructions if ln.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    assert any(ln.startswith("RUN pip install '.") for ln in instructions)
    assert "COPY hooks ./hooks" in instructions and re.search(r"CDS_HOOKS_DIR=/app/hooks", text)
    health = next(ln for ln in instructions if ln.startswith("HEALTHCHECK"))
    assert "python" in health and "/healthz" in health and "curl" not in health
    cmd = next(ln for ln in instructions if ln.startswith("CMD "))
    args = [a.strip('",[]') for a in shlex.split(cmd[4:].replace(",", " "))]
    assert args[:2] == ["cds-service", "serve"]
    assert serve.make_context("serve", args[2:]).params["host"] == "0.0.0.0"


def test_dockerignore_keeps_local_state_out():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".cache", "*.pem"} <= ignored
