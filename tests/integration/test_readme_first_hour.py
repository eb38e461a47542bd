"""README's first hour: how to reach `cds-service` after the first command, the Docker-free walkthrough run for
real (the suite's FHIR server and a served instance stand in for the addresses it names), `docker compose`
syntax, and a scaling section that covers compose and Kubernetes."""
from __future__ import annotations

import re
import shlex
import subprocess
import time

import pytest
import requests

from tests.ops.opskit import CLI, REPO, Served, serve_env

TEXT = (REPO / "README.md").read_text()
README_FHIR = "http://127.0.0.1:8089/fhir"
README_SERVICE = "http://127.0.0.1:8080"


def _section(title: str) -> str:
    return TEXT.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _commands(section: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_readme_says_how_to_run_the_command_after_the_first_one():
    opening = TEXT.split("## What it does", 1)[0]
    assert "`.venv/bin/cds-service ...`" in opening and "`source .venv/bin/activate`" in opening
    assert "exit code 2" in opening and "ready line" in opening


def test_compose_syntax_and_scaling_section():
    commands = [c for title in ("Five-minute walkthrough", "Scaling out") for c in _commands(_section(title))]
    assert "docker compose up -d --build" in commands
    assert not re.search(r"^\s*docker-compose ", TEXT, re.M) and "`docker-compose " not in TEXT
    scaling = _section("Scaling out")
    assert "docker compose up -d --scale cds=" in scaling and "kubectl apply -k deploy/kubernetes" in scaling
    assert (REPO / "deploy" / "kubernetes" / "kustomization.yaml").exists()


@pytest.mark.processes
@pytest.mark.integration
def test_the_walkthrough_without_docker_runs(loaded, fhir_base, tmp_path):
    commands = _commands(_section("First hour without Docker"))
    assert commands[0] == "source .venv/bin/activate"
    assert commands[1].startswith("bash scripts/fhir-server.sh start") and commands[-1] == "bash scripts/fhir-server.sh stop"
    serve_line = next(c for c in commands if " cds-service serve" in c)
    words = shlex.split(serve_line, comments=True)
    env_of_line = dict(w.split("=", 1) for w in words[: words.index("cds-service")])
    env = serve_env(tmp_path, **env_of_line)
    env.pop("CDS_DATABASE_URL")  # the default: cds-audit.sqlite3 in serve's directory, where `audit list` runs
    served = Served(tmp_path, env, ready_within=60)
    try:
        ran = 0
        for line in commands[2:-1]:
            if line == serve_line:
                continue
            line = line.replace(README_FHIR, fhir_base).replace(README_SERVICE, served.url)
            if line.startswith("curl "):
                metrics = requests.get(f"{served.url}/metrics", timeout=10).text
                assert re.search(r"^cds_hook_calls_total\{", metrics, re.M), metrics[:500]
                continue
            args = shlex.split(line, comments=True)
            assert args[0] == "cds-service", line
            audit = args[1] == "audit"
            if audit:
                time.sleep(1.0)  # the writer is asynchronous
            done = subprocess.run([CLI, *args[1:]], cwd=tmp_path if audit else REPO, capture_output=True, text=True,
                                  timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            if args[1] == "invoke":
                assert "HTTP 200" in done.stdout and "card(s)" in done.stdout, done.stdout
            if args[1:3] == ["audit", "list"]:
                assert done.stdout.count("magnesium-") >= 3 and "audit database: sqlite:///cds-audit.sqlite3" in done.stderr
            if args[1:3] == ["fixtures", "load"]:
                assert "loaded " in done.stdout
            ran += 1
        assert ran >= 6
    finally:
        served.stop()
