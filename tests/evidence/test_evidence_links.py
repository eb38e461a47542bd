"""Evidence links on cards and the /evidence page's access rules, through the real app and audit store."""
from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from cds_service.config import Settings
from cds_service.evidence.tokens import AUDIENCE, EvidenceSigner, LinkRefused
from cds_service.services import get_services
from tests.audit.helpers import client_jwt, rows, trusted_issuers_file
from tests.evidence.conftest import KEY, card_of, fixture_call, path_of

REFRACTORY = ("mg-refractory-01", "patient-view")
ORDER_SIGN = ("mg-cisplatin-08", "order-sign")


def _claims(url: str) -> dict:
    token = url.split("token=", 1)[1]
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _points(html: str, analyte: str) -> list[str]:
    """The <circle class="point ..."> tags of one chart panel."""
    panel = html.split(f'data-analyte="{analyte}"', 1)[1].split("</g>", 1)[0]
    return re.findall(r'<circle class="point [^"]*"[^>]*>', panel)


@pytest.mark.parametrize("call", [REFRACTORY, ORDER_SIGN], ids=lambda c: f"{c[0]}.{c[1]}")
def test_every_card_has_one_absolute_evidence_link_without_patient_identifiers(evidence_app, call):
    body, response = fixture_call(evidence_app, *call)
    assert response["cards"]
    for card in response["cards"]:
        [link] = card["links"]
        assert link["label"] == "Magnesium trend and evidence" and link["type"] == "absolute"
        assert link["url"].startswith("http://localhost/evidence?token=")
        claims = _claims(link["url"])
        assert set(claims) == {"aud", "iat", "exp", "card", "at"} and claims["card"] == card["uuid"]
        assert claims["exp"] - claims["iat"] == 3600 and claims["aud"] == AUDIENCE
        text = link["url"] + json.dumps(claims)
        for identifier in (body["context"]["patientId"], body["hookInstance"], body["context"]["userId"]):
            assert identifier not in text


def test_audited_cards_keep_no_token(evidence_app):
    _, response = fixture_call(evidence_app, *REFRACTORY)
    [row] = rows(evidence_app)
    stored = json.dumps(row.cards)
    assert [c["uuid"] for c in row.cards] == [c["uuid"] for c in response["cards"]]
    assert "links" not in stored and "token" not in stored
    for card in response["cards"]:
        assert card["links"][0]["url"].split("token=")[1] not in json.dumps({"c": row.cards, "f": row.facts})


def test_without_a_key_cards_have_no_link_and_the_page_refuses(app_factory):
    app = app_factory()
    _, response = fixture_call(app, *REFRACTORY)
    assert response["cards"] and all("links" not in c for c in response["cards"])
    resp = app.test_client().get("/evidence?token=anything")
    assert resp.status_code == 403 and resp.headers["Cache-Control"] == "no-store"


def test_public_base_url_starts_the_link(app_factory):
    app = app_factory(evidence_key=KEY, public_base_url="https://cds.example.org/magnesium/")
    _, response = fixture_call(app, *REFRACTORY)
    assert all(c["links"][0]["url"].startswith("https://cds.example.org/magnesium/evidence?token=")
               for c in response["cards"])


def test_page_shows_the_card_its_rule_and_every_magnesium_value(evidence_app):
    _, response = fixture_call(evidence_app, *REFRACTORY)
    card = card_of(response, "refractory-hypomagnesemia")
    [row] = rows(evidence_app)
    resp = evidence_app.test_client().get(path_of(card["links"][0]["url"]))
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert card["summary"] in html and 'id="rule">refractory-hypomagnesemia<' in html
    assert f'id="knowledge-version">{row.knowledge_version}<' in html
    magnesium = row.record_snapshot["labs"]["magnesium"]
    points = _points(html, "magnesium")
    assert len(points) == len(magnesium) == 3
    assert sorted(re.search(r'data-date="([^"]+)"', p).group(1) for p in points) == \
        sorted(m["effective"][:10] for m in magnesium)
    for key in ("magnesium_low", "magnesium_severe", "magnesium_ctcae_g3", "magnesium_ctcae_g4"):
        value = get_services(evidence_app).knowledge.threshold(key).value
        assert f'data-key="{key}" data-value="{float(value)}"' in html
    # panels for what the card used: calcium (alfacalcidol step), creatinine and kidney function (Cockcroft-Gault)
    assert re.findall(r'<g class="panel" data-analyte="([^"]+)"', html) == ["magnesium", "calcium", "creatinine",
                                                                             "kidney-function"]
    assert 'data-name="kidney-function"' in html and "Cockcroft-Gault" in html  # the call's one kidney assessment
    assert "Mag-Ox 400 mg at bedtime" in html and "alfacalcidol" in html


def test_page_of_an_order_sign_card_marks_the_value_that_did_not_count(evidence_app):
    _, response = fixture_call(evidence_app, *ORDER_SIGN)
    card = card_of(response, "order-iv-magnesium")
    html = evidence_app.test_client().get(path_of(card["links"][0]["url"])).get_data(as_text=True)
    points = _points(html, "magnesium")
    assert [("not-counted" in p, re.search(r'data-date="([^"]+)"', p).group(1)) for p in points] == \
        [(True, "2026-10-26"), (False, "2026-11-24")]
    assert "superseded: the card used the later result of 2026-11-24" in html
    assert html.count('class="bar ') == 3 and "drafted in this call" in html


def test_security_headers_allow_a_top_level_page_and_forbid_framing(evidence_app):
    _, response = fixture_call(evidence_app, *REFRACTORY)
    client = evidence_app.test_client()
    for path in (path_of(response["cards"][0]["links"][0]["url"]), "/evidence?token=x", "/evidence/static/evidence.css"):
        resp = client.get(path, headers={"Origin": "https://sandbox.cds-hooks.org"})
        assert resp.headers["Cache-Control"] == "no-store", path
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.status_code in (200, 403)


def _forge(url: str, **changes) -> str:
    """The link's token with claims changed and re-signed with another key (a foreign token)."""
    claims = {**_claims(url), **changes}
    key = EvidenceSigner("another-service-key-0123456789-abcdef")._key
    return jwt.encode(claims, key, algorithm="HS256")


def test_tampered_foreign_expired_and_missing_tokens_get_a_403_page_without_patient_data(evidence_app):
    body, response = fixture_call(evidence_app, *REFRACTORY)
    card = card_of(response, "refractory-hypomagnesemia")
    url = card["links"][0]["url"]
    token = url.split("token=", 1)[1]
    header, payload, sig = token.split(".")
    other = card_of(response, "femg-needed")
    tampered_payload = base64.urlsafe_b64encode(json.dumps({**_claims(url), "card": other["uuid"]}).encode()).decode().rstrip("=")
    unsigned = jwt.encode(_claims(url), key=None, algorithm="none")
    signer: EvidenceSigner = get_services(evidence_app).evidence_signer
    expired = signer.token(card["uuid"], rows(evidence_app)[0].received_at.replace(tzinfo=UTC),
                           now=time.time() - 3601)
    cases = {
        "tampered claims": f"{header}.{tampered_payload}.{sig}",
        "tampered signature": f"{header}.{payload}.{sig[:-3]}{'AAA' if sig[-3:] != 'AAA' else 'BBB'}",
        "foreign key": _forge(url),
        "alg none": unsigned,
        "other audience": jwt.encode({**_claims(url), "aud": "something-else"}, signer._key, algorithm="HS256"),
        "expired": expired,
        "garbage": "not-a-token",
        "too long": "x" * 5000,
    }
    client = evidence_app.test_client()
    for name, bad in cases.items():
        resp = client.get(f"/evidence?token={bad}")
        html = resp.get_data(as_text=True)
        assert resp.status_code == 403, name
        assert resp.headers["Cache-Control"] == "no-store"
        assert ("expired" in html) == (name == "expired"), name
        for private in (body["context"]["patientId"], card["summary"][:30], "Magnesium, serum", "Mag-Ox"):
            assert private not in html, (name, private)
    assert client.get("/evidence").status_code == 403
    assert client.get(f"/evidence?token={token}").status_code == 200  # the genuine link still opens


def test_link_expires_after_its_lifetime(evidence_app):
    _, response = fixture_call(evidence_app, *REFRACTORY)
    path = path_of(response["cards"][0]["links"][0]["url"])
    signer: EvidenceSigner = get_services(evidence_app).evidence_signer
    client = evidence_app.test_client()
    issued = _claims(path)["iat"]
    rows(evidence_app)
    signer.clock = lambda: issued + 3599
    assert client.get(path).status_code == 200
    signer.clock = lambda: issued + 3600
    resp = client.get(path)
    assert resp.status_code == 403 and "This link has expired" in resp.get_data(as_text=True)


def test_page_needs_no_client_jwt_while_the_hooks_still_do(app_factory, tmp_path):
    app = app_factory(evidence_key=KEY, auth_mode="required", trusted_issuers_file=trusted_issuers_file(tmp_path))
    from cds_service.fixtures import build_request

    s = get_services(app)
    body = build_request("mg-refractory-01", "patient-view", s.catalog, s.engine.clock())
    client = app.test_client()
    assert client.post("/cds-services/magnesium-patient-view", json=body).status_code == 401
    token = client_jwt("http://localhost/cds-services/magnesium-patient-view")
    resp = client.post("/cds-services/magnesium-patient-view", json=body, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    rows(app)
    page = client.get(path_of(resp.get_json()["cards"][0]["links"][0]["url"]))  # no Authorization header
    assert page.status_code == 200 and "Magnesium" in page.get_data(as_text=True)


@pytest.mark.slow
def test_call_still_in_the_writer_queue_gets_a_reload_page_then_the_evidence(app_factory, tmp_path):
    """The audit write is asynchronous: with the real writer held up by a SQLite write lock, the page waits briefly,
    then answers 503 "still being recorded" (no patient data, reloads itself); once written, the evidence."""
    db = tmp_path / "held.sqlite3"
    app = app_factory(evidence_key=KEY, database_url=f"sqlite:///{db}")
    lock = sqlite3.connect(db, timeout=1, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the writer thread now waits (busy_timeout) for this lock
        body, response = fixture_call(app, *REFRACTORY)
        path = path_of(response["cards"][0]["links"][0]["url"])
        pending = app.test_client().get(path)
        html = pending.get_data(as_text=True)
        assert pending.status_code == 503 and pending.headers["Retry-After"] == "2"
        assert "Still being recorded" in html and 'http-equiv="refresh"' in html
        assert body["context"]["patientId"] not in html and pending.headers["Cache-Control"] == "no-store"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert len(rows(app)) == 1  # the writer went on once the lock was released
    assert app.test_client().get(path).status_code == 200


def test_valid_link_to_a_record_no_longer_stored_is_a_404_page_at_once(evidence_app):
    signer: EvidenceSigner = get_services(evidence_app).evidence_signer
    gone = signer.token("0b6e3f57-5d1a-5a57-9d7b-5a7e0b1c2d3e", datetime.now(UTC) - timedelta(minutes=30))
    started = time.monotonic()
    resp = evidence_app.test_client().get(f"/evidence?token={gone}")
    assert resp.status_code == 404 and "not available" in resp.get_data(as_text=True)
    assert time.monotonic() - started < 1.0  # an old call is not waited for (the wait is for recent calls only)


@pytest.mark.postgres
def test_link_opens_from_the_postgresql_audit_store(app_factory, postgres_url):
    app = app_factory(evidence_key=KEY, database_url=postgres_url)
    _, response = fixture_call(app, *REFRACTORY)
    rows(app)
    for card in response["cards"]:
        resp = app.test_client().get(path_of(card["links"][0]["url"]))
        assert resp.status_code == 200 and card["summary"] in resp.get_data(as_text=True)


def test_signer_refuses_what_it_did_not_make():
    signer = EvidenceSigner(KEY, 60, clock=lambda: 1_800_000_000)
    at = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    ref = signer.verify(signer.token("card-1", at))
    assert (ref.card_uuid, ref.received_at) == ("card-1", at)
    with pytest.raises(LinkRefused):
        EvidenceSigner(KEY + "x", 60, clock=lambda: 1_800_000_000).verify(signer.token("card-1", at))
    signer_later = EvidenceSigner(KEY, 60, clock=lambda: 1_800_000_060)
    with pytest.raises(LinkRefused) as exc:
        signer_later.verify(signer.token("card-1", at))
    assert exc.value.expired
    with pytest.raises(ValueError):
        EvidenceSigner("short")


def test_settings_refuse_a_short_evidence_key_and_odd_lifetimes():
    with pytest.raises(ValueError, match="CDS_EVIDENCE_KEY"):
        Settings(evidence_key="too-short").validate()
    with pytest.raises(ValueError, match="CDS_EVIDENCE_LINK_SECONDS"):
        Settings(evidence_link_seconds=5).validate()
    assert "evidence_key" not in repr(Settings(evidence_key=KEY))


def test_odd_audit_rows_render_a_page_not_a_500(evidence_app):
    """Rows written by older versions or by hand: junk facts, an unreadable snapshot, no snapshot at all."""
    from cds_service.audit.invocation import Invocation

    store = get_services(evidence_app).store
    card = {"uuid": "8d3c2f8e-1111-4c55-9d59-0b1e7c3d2a10", "summary": "odd row", "indicator": "warning",
            "detail": "**d** <script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)>",
            "source": {"label": "x", "topic": {"code": "refractory-hypomagnesemia"}}}
    odd = Invocation(
        service_id="magnesium-patient-view", hook="patient-view", hook_instance="odd-1", patient_id="p-odd",
        evaluated_at=datetime(2026, 11, 25, 12, tzinfo=UTC), cards=[card],
        facts={"refractory-hypomagnesemia": [
            {"kind": "lab", "analyte": "magnesium", "value": "low", "source": "x"}, 5,
            {"kind": "derived", "name": "egfr", "value": None, "inputs": "none"},
            {"kind": "medication", "label": "m", "ingredients": [{"classes": [["nested"]]}, "x"]}]},
        record_snapshot={"labs": {"magnesium": [{"value": 1.1, "effective": "garbage"},
                                                {"value": 1.2, "effective": "2026-11-20T00:00:00Z", "source": None}],
                                  "potassium": "x"},
                         "medications": [{"start": "nope", "ingredients": "x"}, "y"],
                         "gaps": [{"kind": "unit-unknown", "what": "Observation/o1 (magnesium) unit 'foo' cannot be interpreted"}]})
    bare = Invocation(service_id="magnesium-patient-view", hook_instance="odd-2", cards=[{**card, "uuid": "c-2"}],
                      facts=None, record_snapshot=None)  # type: ignore[arg-type]
    for inv in (odd, bare):
        store.record_invocation(inv)
    signer: EvidenceSigner = get_services(evidence_app).evidence_signer
    rows(evidence_app)
    client = evidence_app.test_client()
    html = client.get(f"/evidence?token={signer.token(card['uuid'], odd.received_at)}").get_data(as_text=True)
    assert len(_points(html, "magnesium")) == 1 and "unit &#39;foo&#39; cannot be interpreted" in html
    assert "<strong>d</strong>" in html and "<script" not in html and "<img" not in html and 'href="javascript' not in html
    resp = client.get(f"/evidence?token={signer.token('c-2', bare.received_at)}")
    assert resp.status_code == 200 and "no result in the audit record" in resp.get_data(as_text=True)


def test_compose_replicas_share_one_valid_evidence_key():
    """docker-compose runs two replicas behind one port: a link made by one must open on the other."""
    from pathlib import Path

    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    service = compose["services"]["cds"]
    env = {k: str(v) for k, v in service["environment"].items()}
    assert service["deploy"]["replicas"] > 1
    settings = Settings.from_env(env)
    assert len(settings.evidence_key) >= 32


def test_a_failing_link_never_costs_the_cards(evidence_app):
    class BrokenSigner:
        def token(self, *args, **kwargs):
            raise RuntimeError("signing failed")

    get_services(evidence_app).evidence_signer = BrokenSigner()
    _, response = fixture_call(evidence_app, *REFRACTORY)
    assert {c["source"]["topic"]["code"] for c in response["cards"]} == {"refractory-hypomagnesemia", "femg-needed"}
    assert all("links" not in c for c in response["cards"])
