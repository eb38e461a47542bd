"""Client JWT authentication (CDS Hooks 2.0 "Trusting CDS Clients"): every failure is a 401, success with ES384/RS384."""
from __future__ import annotations

import logging
import time

import pytest
from flask import g

from cds_service.errors import ConfigurationError
from tests.trust.trustkit import BASE, ISS, TENANT, Signer, bearer, jwks, write_issuers

DISCOVERY = f"{BASE}/cds-services"


@pytest.fixture(autouse=True)
def _auth_log(caplog):
    caplog.set_level(logging.WARNING, logger="cds_service.api.errors")
    _LOG[:] = [caplog]
    yield


_LOG: list = []


def assert_401(resp, why: str | None = None) -> None:
    """A generic 401 to the client; ``why`` must appear in the logged reason (the test fails for the right cause)."""
    if why is not None:
        reasons = [r.getMessage() for r in _LOG[0].records if "authentication failed" in r.getMessage()]
        assert reasons and why in reasons[-1], reasons
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="cds-services"')
    assert resp.mimetype == "application/fhir+json"
    outcome = resp.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"] == "client authentication failed"  # nothing that helps an attacker


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_valid_token_is_accepted_on_discovery_and_service_call(secure_app, es384, rs384, alg, patient_view_body):
    signer = es384 if alg == "ES384" else rs384
    app = secure_app()
    client = app.test_client()
    resp = client.get("/cds-services", headers=bearer(signer.token(DISCOVERY)))
    assert resp.status_code == 200
    assert {s["id"] for s in resp.get_json()["services"]} >= {"magnesium-patient-view"}
    url = f"{BASE}/cds-services/magnesium-patient-view"
    resp = client.post("/cds-services/magnesium-patient-view", json=patient_view_body, headers=bearer(signer.token(url)))
    assert resp.status_code == 200, resp.get_json()
    assert isinstance(resp.get_json()["cards"], list)


def test_verified_claims_are_kept_on_g(secure_app, es384):
    app = secure_app()
    with app.test_request_context("/cds-services", headers=bearer(es384.token(DISCOVERY, sub="client-42"))):
        app.preprocess_request()
        client = g.cds_client
    assert (client.iss, client.sub, client.tenant, client.kid) == (ISS, "client-42", TENANT, es384.kid)
    assert client.jti


def test_aud_as_one_element_array_is_accepted(secure_app, es384):
    resp = secure_app().test_client().get("/cds-services", headers=bearer(es384.token([DISCOVERY])))
    assert resp.status_code == 200


def test_missing_token_is_refused_in_required_mode(secure_app):
    resp = secure_app().test_client().get("/cds-services")
    assert_401(resp)
    assert "error=" not in resp.headers["WWW-Authenticate"]  # RFC 6750: no error code without a token


def test_not_a_bearer_token(secure_app):
    resp = secure_app().test_client().get("/cds-services", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_401(resp)


def test_garbage_token(secure_app):
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer("not.a.jwt")), "not a JWT")


def test_bad_signature(secure_app, es384):
    other = Signer("ES384", kid=es384.kid)  # same kid, different private key
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(other.token(DISCOVERY))), "InvalidSignatureError")


def test_tampered_payload(secure_app, es384):
    head, _, sig = es384.token(DISCOVERY).split(".")
    forged = es384.unsigned(DISCOVERY, {"alg": "ES384", "kid": es384.kid}).split(".")[1]
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(f"{head}.{forged}.{sig}")), "InvalidSignatureError")


def test_alg_none(secure_app, es384):
    token = es384.unsigned(DISCOVERY, {"alg": "none", "typ": "JWT", "kid": es384.kid})
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(token)), "algorithm 'none'")


def test_hs256_signed_with_the_public_key(secure_app, rs384, es384):
    for signer in (rs384, es384):
        token = signer.unsigned(DISCOVERY, {"alg": "HS256", "typ": "JWT", "kid": signer.kid}, secret=signer.public_pem)
        assert_401(secure_app().test_client().get("/cds-services", headers=bearer(token)), "algorithm 'HS256'")


def test_hs256_refused_even_when_configured(app_factory, issuers_file):
    with pytest.raises(ConfigurationError, match="HS256"):
        app_factory(auth_mode="required", trusted_issuers_file=issuers_file, jwt_algorithms=("ES384", "HS256"))


def test_algorithm_not_in_the_configured_list(secure_app, tmp_path):
    es256 = Signer("ES256", kid="k256")  # a sound asymmetric algorithm, but not in CDS_JWT_ALGORITHMS
    path = write_issuers(tmp_path / "i.yaml", [{"iss": ISS, "jwks": jwks(es256)}])
    token = es256.token(DISCOVERY)
    assert_401(secure_app(trusted_issuers_file=path).test_client().get("/cds-services", headers=bearer(token)), "algorithm 'ES256'")


def test_wrong_aud(secure_app, es384):
    client = secure_app().test_client()
    for aud in (f"{BASE}/cds-services/magnesium-patient-view", "https://cds.example.org/cds-services",
                f"{BASE}/cds-services/", [DISCOVERY, "https://other.example.org/cds-services"]):
        assert_401(client.get("/cds-services", headers=bearer(es384.token(aud))), "aud")


def test_aud_of_a_service_call_must_be_that_service(secure_app, es384, patient_view_body):
    client = secure_app().test_client()
    resp = client.post("/cds-services/magnesium-patient-view", json=patient_view_body,
                       headers=bearer(es384.token(f"{BASE}/cds-services/magnesium-order-sign")))
    assert_401(resp, "aud")


def test_aud_uses_public_base_url_behind_a_proxy(secure_app, es384):
    client = secure_app(public_base_url="https://cds.example.org/magnesium/").test_client()
    assert_401(client.get("/cds-services", headers=bearer(es384.token(DISCOVERY))))
    ok = client.get("/cds-services", headers=bearer(es384.token("https://cds.example.org/magnesium/cds-services")))
    assert ok.status_code == 200


def test_expired(secure_app, es384):
    now = int(time.time())
    token = es384.token(DISCOVERY, iat=now - 900, exp=now - 120)  # beyond the 60 s leeway
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(token)), "ExpiredSignatureError")


def test_expiry_within_leeway_is_accepted(secure_app, es384):
    now = int(time.time())
    token = es384.token(DISCOVERY, iat=now - 300, exp=now - 10)
    assert secure_app().test_client().get("/cds-services", headers=bearer(token)).status_code == 200


def test_future_iat(secure_app, es384):
    now = int(time.time())
    token = es384.token(DISCOVERY, iat=now + 600, exp=now + 700)
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(token)), "not yet valid (iat)")


@pytest.mark.parametrize("claim", ["exp", "iat", "jti", "aud"])
def test_required_claims(secure_app, es384, claim):
    token = es384.token(None) if claim == "aud" else es384.token(DISCOVERY, **{claim: None})
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(token)), f'missing the "{claim}" claim')


def test_lifetime_longer_than_allowed(secure_app, es384):
    now = int(time.time())
    token = es384.token(DISCOVERY, exp=now + 86400)
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(token)), "CDS_JWT_MAX_LIFETIME_SECONDS")


def test_replayed_jti(secure_app, es384):
    client = secure_app().test_client()
    token = es384.token(DISCOVERY)
    assert client.get("/cds-services", headers=bearer(token)).status_code == 200
    assert_401(client.get("/cds-services", headers=bearer(token)), "jti replayed")
    assert client.get("/cds-services", headers=bearer(es384.token(DISCOVERY, jti="fixed-jti"))).status_code == 200
    assert_401(client.get("/cds-services", headers=bearer(es384.token(DISCOVERY, jti="fixed-jti"))), "jti replayed")  # new token, old jti


def test_replay_is_refused_across_two_instances_sharing_the_database(app_factory, issuers_file, tmp_path, es384):
    shared = f"sqlite:///{tmp_path}/shared.sqlite3"
    first = app_factory(auth_mode="required", trusted_issuers_file=issuers_file, database_url=shared)
    second = app_factory(auth_mode="required", trusted_issuers_file=issuers_file, database_url=shared)
    token = es384.token(DISCOVERY)
    assert first.test_client().get("/cds-services", headers=bearer(token)).status_code == 200
    assert_401(second.test_client().get("/cds-services", headers=bearer(token)), "jti replayed")


def test_unknown_issuer(secure_app, es384):
    stranger = Signer("ES384", kid=es384.kid, iss="https://evil.example.com")
    stranger.private = es384.private  # even with a trusted key, the issuer must be on the list
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(stranger.token(DISCOVERY))), "is not trusted")


def test_unknown_kid_with_static_keys(secure_app, es384):
    token = es384.token(DISCOVERY, headers={"kid": "nobody"})
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(token)), "unknown kid")


def test_missing_kid(secure_app, es384):
    import jwt as pyjwt

    token = pyjwt.encode(es384.claims(DISCOVERY), es384.private, algorithm="ES384")
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(token)), "no kid")


def test_jku_not_on_the_allowlist(secure_app, es384):
    token = es384.token(DISCOVERY, headers={"jku": "https://attacker.example.com/jwks.json"})
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(token)), "not on its allowlist")


def test_tenant_mismatch(secure_app, es384):
    assert_401(secure_app().test_client().get("/cds-services", headers=bearer(es384.token(DISCOVERY, tenant="other"))), "tenant")


def test_sub_allowlist(app_factory, tmp_path, es384):
    path = write_issuers(tmp_path / "i.json", [{"iss": ISS, "jwks": jwks(es384), "sub": ["ehr-client"]}], as_json=True)
    client = app_factory(auth_mode="required", trusted_issuers_file=path).test_client()
    assert client.get("/cds-services", headers=bearer(es384.token(DISCOVERY))).status_code == 200
    assert_401(client.get("/cds-services", headers=bearer(es384.token(DISCOVERY, sub="someone-else"))))


def test_feedback_needs_a_token(secure_app, es384):
    client = secure_app().test_client()
    body = {"feedback": [{"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-11-25T12:00:00Z"}]}
    url = "/cds-services/magnesium-patient-view/feedback"
    assert_401(client.post(url, json=body))
    resp = client.post(url, json=body, headers=bearer(es384.token(BASE + url)))
    assert resp.status_code == 200


def test_audit_pages_need_a_token(secure_app, es384):
    client = secure_app(audit_ui=True).test_client()
    assert_401(client.get("/audit/"))
    assert client.get("/audit/", headers=bearer(es384.token(f"{BASE}/audit/"))).status_code == 200


def test_public_endpoints_need_no_token(secure_app):
    client = secure_app().test_client()
    for path in ("/healthz", "/readyz", "/openapi.yaml", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_unknown_paths_and_methods_keep_their_status(secure_app):
    client = secure_app().test_client()
    assert client.get("/nowhere").status_code == 404
    resp = client.delete("/cds-services")
    assert resp.status_code == 405 and "GET" in resp.headers["Allow"]


def test_failure_reason_is_logged_without_the_token(secure_app, es384, caplog):
    token = es384.token(f"{BASE}/somewhere-else")
    with caplog.at_level(logging.INFO):
        assert_401(secure_app().test_client().get("/cds-services", headers=bearer(token)))
    text = caplog.text
    assert "aud" in text and "authentication failed" in text
    assert token not in text and token.split(".")[2] not in text and token.split(".")[1] not in text


# ---------------------------------------------------------------- modes
def test_optional_mode_accepts_anonymous_and_verifies_presented_tokens(secure_app, es384):
    client = secure_app(auth_mode="optional").test_client()
    assert client.get("/cds-services").status_code == 200
    assert client.get("/cds-services", headers=bearer(es384.token(DISCOVERY))).status_code == 200
    assert_401(client.get("/cds-services", headers=bearer(es384.token("https://wrong.example.org/cds-services"))))


def test_off_mode_ignores_tokens(app_factory, es384, caplog):
    client = app_factory(auth_mode="off").test_client()
    assert client.get("/cds-services").status_code == 200
    assert client.get("/cds-services", headers=bearer("garbage")).status_code == 200


def test_off_mode_warns_only_where_a_server_listens(app_factory, caplog):
    """An in-process app (invoke, tests) says nothing; `cds-service serve` warns once (tests/ops/test_serve.py)."""
    with caplog.at_level(logging.WARNING):
        app_factory(auth_mode="off")
    assert "CLIENT AUTHENTICATION IS OFF" not in caplog.text


def test_required_mode_without_issuers_file_stops_start_up(app_factory):
    with pytest.raises(ConfigurationError, match="CDS_TRUSTED_ISSUERS_FILE"):
        app_factory(auth_mode="required", trusted_issuers_file="")


@pytest.mark.parametrize("entry, message", [
    ({"iss": ISS}, "key source"),
    ({"iss": ISS, "jwks_url": "http://keys.example.org/jwks"}, "https"),
    ({"iss": ISS, "jwks": {"keys": [{"kty": "EC", "kid": "k", "crv": "P-384", "x": "a", "y": "b", "d": "secret"}]}},
     "private key"),
    ({"iss": ISS, "jwks": {"keys": []}, "unknown_field": 1}, "unknown_field"),
])
def test_bad_issuers_file_stops_start_up(app_factory, tmp_path, entry, message):
    path = write_issuers(tmp_path / "bad.yaml", [entry])
    with pytest.raises(ConfigurationError, match=message):
        app_factory(auth_mode="required", trusted_issuers_file=path)


def test_static_keys_from_a_jwks_file(app_factory, tmp_path, rs384):
    import json

    (tmp_path / "ehr-keys.json").write_text(json.dumps(jwks(rs384)))
    path = write_issuers(tmp_path / "issuers.yaml", [{"iss": ISS, "jwks_file": "ehr-keys.json"}])
    client = app_factory(auth_mode="required", trusted_issuers_file=path).test_client()
    assert client.get("/cds-services", headers=bearer(rs384.token(DISCOVERY))).status_code == 200
