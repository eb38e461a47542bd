"""`cds-service serve` through a real process: a misconfiguration is one line with its fix and exit 2 before
gunicorn starts; a good start is short (no alembic lines, one auth-off warning, no control socket) and ends in a
ready line; JSON logs are one object per line."""
from __future__ import annotations

import json
import re
import socket

import pytest

from tests.ops.opskit import Served, free_port, request_file, run_serve, serve_env

pytestmark = pytest.mark.processes  # cds-service serve under gunicorn

ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def _one_line_refusal(proc, *expected: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr  # no traceback, no gunicorn "Worker failed to boot"
    line = lines[0]
    assert "Fix: " in line and "Traceback" not in line and "Listening at" not in line
    for text in expected:
        assert text in line, line
    return line


def test_auth_required_without_issuers(tmp_path):
    proc = run_serve(tmp_path, serve_env(tmp_path), "--port", str(free_port()))  # CDS_AUTH_MODE unset: required
    _one_line_refusal(proc, "CDS_AUTH_MODE=required needs CDS_TRUSTED_ISSUERS_FILE", "CDS_AUTH_MODE=off")
    assert not (tmp_path / "audit.sqlite3").exists()  # nothing was started, nothing created


def test_unreadable_issuers_file(tmp_path):
    bad = tmp_path / "issuers.yaml"
    bad.write_text("issuers:\n  - iss: https://ehr.example.org\n")  # no key source
    proc = run_serve(tmp_path, serve_env(tmp_path, CDS_AUTH_MODE="required", CDS_TRUSTED_ISSUERS_FILE=str(bad)),
                     "--port", str(free_port()))
    _one_line_refusal(proc, str(bad), "key source", "docs/security.md")


@pytest.mark.parametrize("make_dir, expected", [
    (lambda tmp: tmp / "no-such-dir", "is not a directory"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no CDS service definitions"),
    (lambda tmp: (tmp / "bad").mkdir() or (tmp / "bad" / "x.yaml").write_text("id: [unclosed") and tmp / "bad",
     "not valid YAML"),
])
def test_bad_hooks_directory(tmp_path, make_dir, expected):
    hooks = make_dir(tmp_path)
    proc = run_serve(tmp_path, serve_env(tmp_path, CDS_AUTH_MODE="off", CDS_HOOKS_DIR=str(hooks)),
                     "--port", str(free_port()))
    _one_line_refusal(proc, f"CDS_HOOKS_DIR={hooks}", expected, "hooks/")


@pytest.mark.parametrize("url, expected", [
    ("sqlite:////no/such/directory/audit.sqlite3", "cannot open the audit database"),
    ("nosuchdb://user:secret@host/db", "is not a database URL"),
    ("postgresql+psycopg://cds:secret@127.0.0.1:1/cds", "cannot open the audit database"),
])
def test_bad_database_url(tmp_path, url, expected):
    proc = run_serve(tmp_path, serve_env(tmp_path, CDS_AUTH_MODE="off", CDS_DATABASE_URL=url), "--port", str(free_port()))
    line = _one_line_refusal(proc, "CDS_DATABASE_URL=", expected, "postgresql+psycopg://")
    assert "secret" not in line  # the password is masked


def test_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_serve(tmp_path, serve_env(tmp_path, CDS_AUTH_MODE="off"), "--port", str(port))
    _one_line_refusal(proc, f"port {port} on 127.0.0.1 is already in use", "--port N or CDS_PORT")


def test_bad_setting_value(tmp_path):
    proc = run_serve(tmp_path, serve_env(tmp_path, CDS_AUTH_MODE="off", CDS_LOG_FORMAT="xml"), "--port", str(free_port()))
    _one_line_refusal(proc, "CDS_LOG_FORMAT must be text or json")


def test_start_up_is_short_and_ends_in_a_ready_line(tmp_path):
    served = Served(tmp_path, serve_env(tmp_path, CDS_AUTH_MODE="off"))
    try:
        resp = served.post("/cds-services/magnesium-patient-view", request_file("mg-gitelman-02.patient-view.prefetch.json"))
        assert resp.status_code == 200
    finally:
        assert served.stop() == 0
    lines = [ln for ln in served.log().splitlines() if ln.strip()]
    assert all(ISO_TIME.match(ln) for ln in lines), "\n".join(lines)  # one format, every line timestamped
    assert not [ln for ln in lines if "alembic" in ln]
    assert sum("CLIENT AUTHENTICATION IS OFF" in ln for ln in lines) == 1
    ready = [ln for ln in lines if "ready: " in ln]
    assert len(ready) == 1  # once per server, not once per worker
    from cds_service.knowledge import load_knowledge

    assert f"ready: {served.url}/cds-services; auth OFF" in ready[0]
    assert f"database sqlite:///{tmp_path}/audit.sqlite3" in ready[0]
    assert f"knowledge {load_knowledge().version}" in ready[0] and "3 services; 2 workers" in ready[0]
    access = [ln for ln in lines if "gunicorn.access" in ln]
    assert access and '"POST /cds-services/magnesium-patient-view" 200' in access[0]
    start_up = lines[: lines.index(ready[0]) + 1]
    assert len(start_up) <= 8, "\n".join(start_up)
    assert not (tmp_path / ".gunicorn").exists()  # gunicorn's control socket is off


def test_json_logs_are_one_object_per_line(tmp_path):
    served = Served(tmp_path, serve_env(tmp_path, CDS_AUTH_MODE="off", CDS_LOG_FORMAT="json"))
    body = request_file("mg-gitelman-02.patient-view.prefetch.json")
    try:
        resp = served.post("/cds-services/magnesium-patient-view", body)
        assert resp.status_code == 200
    finally:
        served.stop()
    records = [json.loads(ln) for ln in served.log().splitlines() if ln.strip()]  # every line parses
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    call = next(r for r in records if r["logger"] == "cds_service.api.hooks")
    assert call["service"] == "magnesium-patient-view" and call["status"] == 200
    assert call["hookInstance"] == json.loads(body)["hookInstance"]
    assert call["cards"] == len(resp.json()["cards"]) and isinstance(call["latencyMs"], float)
    ready = next(r for r in records if r["message"].startswith("ready: "))
    assert ready["authMode"] == "off" and ready["url"] == served.url
    assert any(r["logger"] == "gunicorn.access" and r["time"].endswith("Z") for r in records)
