"""Shared pytest fixtures: app/client/runner (Flask tutorial style), a fixed clock, the knowledge."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cds_service import create_app
from cds_service.audit.store import AuditStore
from cds_service.config import Settings
from cds_service.knowledge import load_knowledge
from cds_service.services import get_services
from tests.helpers.env import FIXED_NOW, fhir_base_url  # noqa: F401  (fhir_base_url re-exported)

REPO = Path(__file__).resolve().parents[1]
# the lane markers (integration, postgres, browser, processes): applied from the fixtures a test uses, and enforced;
# pytester runs pytest inside tests/test_lanes.py
pytest_plugins = ("tests.helpers.lanes", "pytester")


@pytest.fixture(scope="session")
def knowledge():
    return load_knowledge()


@pytest.fixture
def now():
    return FIXED_NOW


@pytest.fixture(scope="session")
def audit_template(tmp_path_factory) -> Path:
    """An empty SQLite audit database already migrated to head: each app of ``app_factory`` starts from a copy
    (about 35 ms less per app than running the migrations again; tests/audit/test_migrations runs them for real)."""
    path = tmp_path_factory.mktemp("audit-template") / "audit.sqlite3"
    AuditStore(f"sqlite:///{path}", background=False).close()
    return path


@pytest.fixture
def app_factory(tmp_path, knowledge, audit_template):
    """Build an app with Settings overrides (keywords), the session's knowledge (unless ``knowledge_dir`` is
    overridden), the fixed clock (``clock=None``: the wall clock) and an optional FHIR ``gateway``; each app
    gets its own SQLite audit file."""
    made = []

    def make(*, clock=lambda: FIXED_NOW, gateway=None, **overrides):
        database = tmp_path / f"audit-{len(made)}.sqlite3"
        if "database_url" not in overrides:
            shutil.copyfile(audit_template, database)
        settings = Settings.from_env().with_overrides(**{
            "database_url": f"sqlite:///{database}", "auth_mode": "off", "allow_http_fhir": True, **overrides})
        app = create_app(settings, knowledge=None if "knowledge_dir" in overrides else knowledge, clock=clock, gateway=gateway)
        app.config["TESTING"] = True
        made.append(app)
        return app

    yield make
    for app in made:
        get_services(app).store.close()


@pytest.fixture
def app(app_factory):
    return app_factory()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()
