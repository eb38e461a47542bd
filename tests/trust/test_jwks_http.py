"""Issuer keys over real HTTP (a JWK Set served on 127.0.0.1): caching, refresh once on an unknown kid, jku allowlist."""
from __future__ import annotations

import logging
import socket
import time

import pytest

from tests.trust.trustkit import BASE, ISS, Signer, bearer, jwks, write_issuers

DISCOVERY = f"{BASE}/cds-services"


@pytest.fixture(autouse=True)
def _auth_log(caplog):
    caplog.set_level(logging.INFO)


def reasons(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]


@pytest.fixture
def url_app(app_factory, tmp_path, jwks_server):
    def make(**overrides):
        path = write_issuers(tmp_path / "issuers.yaml", [{
            "iss": ISS,
            "jwks_url": jwks_server.url("/jwks.json"),
            "jku": [jwks_server.url("/jku.json")],
        }])
        return app_factory(auth_mode="required", trusted_issuers_file=path, **overrides)
    return make


def test_jwks_url_is_cached(url_app, jwks_server, es384):
    jwks_server.sets["/jwks.json"] = jwks(es384)
    client = url_app().test_client()
    for _ in range(3):
        assert client.get("/cds-services", headers=bearer(es384.token(DISCOVERY))).status_code == 200
    assert jwks_server.hits == {"/jwks.json": 1}


def test_rotated_key_is_found_by_one_refresh(url_app, jwks_server, es384, rs384):
    jwks_server.sets["/jwks.json"] = jwks(es384)
    client = url_app().test_client()
    assert client.get("/cds-services", headers=bearer(es384.token(DISCOVERY))).status_code == 200
    jwks_server.sets["/jwks.json"] = jwks(es384, rs384)  # the EHR adds a key
    assert client.get("/cds-services", headers=bearer(rs384.token(DISCOVERY))).status_code == 200
    assert jwks_server.hits["/jwks.json"] == 2


def test_unknown_kid_after_refresh_is_refused_and_refresh_is_rate_limited(url_app, jwks_server, es384, caplog):
    jwks_server.sets["/jwks.json"] = jwks(es384)
    client = url_app().test_client()
    ghost = Signer("ES384", kid="ghost")
    resp = client.get("/cds-services", headers=bearer(ghost.token(DISCOVERY)))
    assert resp.status_code == 401 and "unknown kid 'ghost'" in reasons(caplog)[-1]
    assert jwks_server.hits["/jwks.json"] == 1  # the first load (just fetched: not fetched again at once)
    for kid in ("ghost", "ghost-2", "ghost-3"):  # an attacker cycling kids cannot make us hammer the URL
        assert client.get("/cds-services", headers=bearer(Signer("ES384", kid=kid).token(DISCOVERY))).status_code == 401
    assert jwks_server.hits["/jwks.json"] == 2  # one refresh for an unknown kid, then rate-limited
    assert client.get("/cds-services", headers=bearer(es384.token(DISCOVERY))).status_code == 200


@pytest.mark.slow
def test_refresh_allowed_again_after_the_minimum_gap(url_app, jwks_server, es384):
    jwks_server.sets["/jwks.json"] = jwks(es384)
    client = url_app(jwks_refresh_min_seconds=0.2).test_client()
    ghost = Signer("ES384", kid="ghost")
    assert client.get("/cds-services", headers=bearer(ghost.token(DISCOVERY))).status_code == 401
    assert client.get("/cds-services", headers=bearer(ghost.token(DISCOVERY))).status_code == 401
    assert jwks_server.hits["/jwks.json"] == 2  # the first load, one refresh
    assert client.get("/cds-services", headers=bearer(ghost.token(DISCOVERY))).status_code == 401
    assert jwks_server.hits["/jwks.json"] == 2  # within the minimum gap: no refresh
    time.sleep(0.3)
    assert client.get("/cds-services", headers=bearer(ghost.token(DISCOVERY))).status_code == 401
    assert jwks_server.hits["/jwks.json"] == 3


def test_allowed_jku_is_used(url_app, jwks_server, rs384):
    jwks_server.sets["/jku.json"] = jwks(rs384)
    client = url_app().test_client()
    token = rs384.token(DISCOVERY, headers={"jku": jwks_server.url("/jku.json")})
    assert client.get("/cds-services", headers=bearer(token)).status_code == 200
    assert jwks_server.hits == {"/jku.json": 1}


def test_jku_not_on_the_list_is_never_fetched(url_app, jwks_server, rs384, caplog):
    jwks_server.sets["/evil.json"] = jwks(rs384)
    client = url_app().test_client()
    token = rs384.token(DISCOVERY, headers={"jku": jwks_server.url("/evil.json")})
    resp = client.get("/cds-services", headers=bearer(token))
    assert resp.status_code == 401 and "not on its allowlist" in reasons(caplog)[-1]
    assert jwks_server.hits == {}


def test_jwks_url_down_is_a_quick_401(app_factory, tmp_path, es384, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_issuers(tmp_path / "issuers.yaml", [{"iss": ISS, "jwks_url": f"http://127.0.0.1:{port}/jwks.json"}])
    client = app_factory(auth_mode="required", trusted_issuers_file=path, jwks_timeout_seconds=0.5).test_client()
    started = time.monotonic()
    resp = client.get("/cds-services", headers=bearer(es384.token(DISCOVERY)))
    assert resp.status_code == 401 and "keys unavailable" in reasons(caplog)[-1]
    assert time.monotonic() - started < 3.0


def test_jwks_answering_404_is_a_401(url_app, jwks_server, es384):
    client = url_app().test_client()  # nothing served at /jwks.json
    assert client.get("/cds-services", headers=bearer(es384.token(DISCOVERY))).status_code == 401
