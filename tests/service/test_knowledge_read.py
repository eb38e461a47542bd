"""Every knowledge threshold, policy and indicator case is read by the service: a key nothing reads is dead
knowledge (or a rule that forgot it), and a reviewer would trust a number or a grading no card ever uses.

The check runs the service, it does not grep: the app's knowledge records each threshold and policy looked up
while discovery is served, every ready fixture request (``fixtures/requests/*.prefetch.json``) is answered with
the scenario tests' fixed clock, and every card's evidence page is drawn. A key only read on a path no fixture
reaches goes in ``NOT_REACHED_BY_FIXTURES`` with the reason; that list is checked too (each entry must exist,
must really be unreached and must be named in the code), so it cannot go stale. Indicator cases are named
``rule.case``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from cds_service import create_app
from cds_service.config import Settings
from cds_service.fixtures import SERVICE_FOR_HOOK
from cds_service.services import get_services
from tests.helpers.env import FIXED_NOW

REPO = Path(__file__).resolve().parents[2]
REQUESTS = sorted((REPO / "fixtures" / "requests").glob("*.prefetch.json"))
GROUPS = ("thresholds", "policies", "indicators")
EVIDENCE_KEY = "knowledge-read-test-key-0123456789-abcdef"
# key -> why no fixture reaches the code that reads it (the code is named so a reader can check)
NOT_REACHED_BY_FIXTURES: dict[str, str] = {}
# key -> why no code reads it yet (each must still be unread: once it is read, take it off)
NOT_YET_READ: dict[str, str] = {}


class ReadTracking(dict):
    """A knowledge table that records every key looked up (iteration alone does not count as reading); keys of
    a nested table (an indicator's cases) are recorded as ``outer.inner``."""

    def __init__(self, table: dict[str, Any], seen: set[str], prefix: str = ""):
        super().__init__(table)
        self.seen, self.prefix = seen, prefix

    def __getitem__(self, key: str) -> Any:
        self.seen.add(self.prefix + key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(self.prefix + key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.seen.add(self.prefix + str(key))
        return super().__contains__(key)


def _tracked(group: str, table: dict[str, Any], seen: set[str]) -> ReadTracking:
    if group == "indicators":  # rule -> case -> grading: what counts is the case read
        return ReadTracking({rule: ReadTracking(cases, seen, f"{rule}.") for rule, cases in table.items()}, set())
    return ReadTracking(table, seen)


def _keys(group: str, table: dict[str, Any]) -> set[str]:
    if group == "indicators":
        return {f"{rule}.{case}" for rule, cases in table.items() for case in cases}
    return set(table)


@contextmanager
def reads_tracked(app) -> Iterator[dict[str, set[str]]]:
    """The app's knowledge records the threshold and policy keys looked up (into the yielded sets) until exit."""
    model = get_services(app).knowledge.model
    tables = {group: getattr(model, group) for group in GROUPS}
    seen: dict[str, set[str]] = {group: set() for group in GROUPS}
    for group in GROUPS:  # the model is frozen: set the attribute underneath pydantic
        object.__setattr__(model, group, _tracked(group, tables[group], seen[group]))
    try:
        yield seen
    finally:
        for group in GROUPS:
            object.__setattr__(model, group, tables[group])


def serve_fixtures(app, requests: list[Path]) -> int:
    """Discovery, every request in ``requests`` and the evidence page of every card; returns the pages drawn."""
    client = app.test_client()
    assert client.get("/cds-services").status_code == 200
    links: list[str] = []
    for path in requests:
        hook = path.name.split(".")[1]
        resp = client.post(f"/cds-services/{SERVICE_FOR_HOOK[hook]}", json=json.loads(path.read_bytes()))
        assert resp.status_code == 200, (path.name, resp.get_json())
        links += [link["url"] for card in resp.get_json()["cards"] for link in card.get("links") or []
                  if "/evidence?" in link["url"]]
    assert get_services(app).store.flush(), "the audit writer did not store the calls"
    for url in links:
        parts = urlsplit(url)
        resp = client.get(f"{parts.path}?{parts.query}")
        assert resp.status_code == 200, (url, resp.status_code)
    return len(links)


def unread(app, seen: dict[str, set[str]]) -> dict[str, list[str]]:
    model = get_services(app).knowledge.model
    return {group: sorted(_keys(group, getattr(model, group)) - seen[group]) for group in GROUPS}


@pytest.fixture(scope="module")
def fixtures_run(tmp_path_factory):
    """One app answering every fixture request (building and running it takes a few seconds)."""
    db = tmp_path_factory.mktemp("knowledge-read") / "audit.sqlite3"
    settings = Settings.from_env(database_url=f"sqlite:///{db}", auth_mode="off", evidence_key=EVIDENCE_KEY)
    app = create_app(settings, clock=lambda: FIXED_NOW)  # its own knowledge: the tracking wraps it
    app.config["TESTING"] = True
    try:
        with reads_tracked(app) as seen:
            pages = serve_fixtures(app, REQUESTS)
            yield app, seen, pages
    finally:
        get_services(app).store.close()


def test_every_threshold_and_policy_is_read_when_the_fixtures_are_served(fixtures_run):
    app, seen, pages = fixtures_run
    assert len(REQUESTS) >= 100 and pages >= 100, (len(REQUESTS), pages)  # the fixtures really ran
    model = get_services(app).knowledge.model
    source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "cds_service").rglob("*.py"))
    for key, reason in NOT_REACHED_BY_FIXTURES.items():  # the exceptions must stay true
        assert reason.strip() and any(key in _keys(group, getattr(model, group)) for group in GROUPS), key
        assert all(key not in seen[group] for group in GROUPS), f"{key}: the fixtures read it, take it off the list"
        for name in key.split("."):  # an indicator case: its rule and its case
            assert re.search(rf"['\"]{re.escape(name)}['\"]", source), f"{key}: no code names {name}"
    for key in NOT_YET_READ:
        assert any(key in _keys(group, getattr(model, group)) for group in GROUPS), key
        assert all(key not in seen[group] for group in GROUPS), f"{key}: it is read now, take it off NOT_YET_READ"
    exempt = NOT_REACHED_BY_FIXTURES.keys() | NOT_YET_READ.keys()
    missing = {group: [k for k in keys if k not in exempt] for group, keys in unread(app, seen).items()}
    assert missing == {group: [] for group in GROUPS}, (
        "knowledge keys no code read while every fixture was served: delete them, wire them in, or (if only a path "
        "no fixture reaches reads them) list them in NOT_REACHED_BY_FIXTURES with the reason")


def test_a_key_nobody_reads_is_reported(app_factory):
    """The check itself: a policy added to the knowledge and read by no code shows up as unread."""
    app = app_factory(evidence_key=EVIDENCE_KEY)
    policies = get_services(app).knowledge.model.policies
    policies["never_read_anywhere"] = policies["lookback_days"]  # this app's own knowledge (create_app loads it)
    with reads_tracked(app) as seen:
        serve_fixtures(app, REQUESTS[:3])
        assert "never_read_anywhere" in unread(app, seen)["policies"]
        assert "lookback_days" not in unread(app, seen)["policies"]
