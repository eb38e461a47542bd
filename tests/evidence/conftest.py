"""Evidence page fixtures: an app with an evidence key, fixture hook calls, the PostgreSQL database of the audit tests."""
from __future__ import annotations

import logging

import pytest

from cds_service.fixtures import SERVICE_FOR_HOOK, build_request
from cds_service.services import get_services
from tests.audit.conftest import postgres_url  # noqa: F401  (a fresh PostgreSQL database per test)
from tests.helpers.env import FIXED_NOW

KEY = "evidence-test-key-0123456789-abcdefghij"


@pytest.fixture(autouse=True)
def _quiet_werkzeug():
    """The threaded test server logs request lines (tokens in query strings); production uses gunicorn's format."""
    logger = logging.getLogger("werkzeug")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.fixture
def evidence_app(app_factory):
    return app_factory(evidence_key=KEY)


def fixture_call(app, scenario: str, hook: str) -> tuple[dict, dict]:
    """(request body, response JSON) of a fixture scenario's hook call through the app's HTTP layer."""
    s = get_services(app)
    body = build_request(scenario, hook, s.catalog, FIXED_NOW)
    resp = app.test_client().post(f"/cds-services/{SERVICE_FOR_HOOK[hook]}", json=body)
    assert resp.status_code == 200, resp.get_json()
    return body, resp.get_json()


def card_of(response: dict, rule: str) -> dict:
    return next(c for c in response["cards"] if c["source"]["topic"]["code"] == rule)


def path_of(url: str) -> str:
    """The path and query of an absolute link (for the Flask test client)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"
