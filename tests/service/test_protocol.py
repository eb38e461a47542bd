"""The CDS Hooks 2.0 HTTP contract: discovery, request validation, every error code as an OperationOutcome."""
from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cds_service.definitions import PREFETCH_SETS, TOKEN
from cds_service.errors import ConfigurationError
from tests.helpers.fhir import (
    HOOKS,
    PREFETCH_KEYS,
    assert_outcome,
    full_prefetch,
    hook_request,
    magnesium,
    rules_of,
)

REPO = Path(__file__).resolve().parents[2]
SERVICE_URL = "/cds-services/{}"
CDS_HOOKS_2_TOKENS = {"context.patientId", "context.encounterId", "context.userId", "userPractitionerId",
                      "userPractitionerRoleId", "userPatientId", "userRelatedPersonId"}
REQUIRED_CONTEXT = {
    "magnesium-patient-view": ("userId", "patientId"),
    "magnesium-order-select": ("userId", "patientId", "selections", "draftOrders"),
    "magnesium-order-sign": ("userId", "patientId", "draftOrders"),
}
NORMAL_MG = [magnesium("mg-normal", 2.1)]


# ---------------------------------------------------------------------------- discovery
def test_discovery_lists_exactly_the_three_services(client):
    resp = client.get("/cds-services")
    assert resp.status_code == 200
    services = resp.get_json()["services"]
    assert {s["id"]: s["hook"] for s in services} == HOOKS
    for s in services:
        for key in ("hook", "title", "description", "id", "prefetch"):
            assert key in s, (s["id"], key)
        assert s["title"].strip() and s["description"].strip()
        assert set(s["prefetch"]) == set(PREFETCH_KEYS)


def test_discovery_prefetch_uses_only_cds_hooks_tokens_and_the_magnesium_value_set(client, knowledge, now):
    services = client.get("/cds-services").get_json()["services"]
    mg_codes = [c.code for c in knowledge.model.analytes["magnesium"].codes]
    assert mg_codes, "the knowledge must define magnesium LOINC codes"
    lookback_start = (now - timedelta(days=int(knowledge.policy("lookback_days")))).date().isoformat()
    for s in services:
        for key, template in s["prefetch"].items():
            assert "knowledge." not in template, (s["id"], key, template)
            assert set(TOKEN.findall(template)) <= CDS_HOOKS_2_TOKENS, (s["id"], key, template)
            assert "{{context.patientId}}" in template
        obs = s["prefetch"]["observations"]
        assert obs.startswith("Observation?")
        for code in mg_codes:
            assert f"http://loinc.org|{code}" in obs, (s["id"], code)
        assert "_sort=-date" in obs
        assert f"date=ge{lookback_start}&" in obs + "&"


def test_discovery_lookback_start_follows_the_clock(app_factory, knowledge):
    later = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
    client = app_factory(clock=lambda: later).test_client()
    obs = client.get("/cds-services").get_json()["services"][0]["prefetch"]["observations"]
    expected = (later - timedelta(days=int(knowledge.policy("lookback_days")))).date().isoformat()
    assert f"date=ge{expected}" in obs
    assert "date=ge2025-11-25" not in obs  # the fixed test clock's value must not leak in


def _broken_hooks_dir(tmp_path: Path, breakage: str) -> tuple[Path, Path]:
    hooks = tmp_path / "hooks"
    shutil.copytree(REPO / "hooks", hooks)
    # the templates live in the prefetch set the definitions share (hooks/prefetch.yaml)
    in_shared_prefetch = breakage in ("unknown-token", "host-in-template")
    target = hooks / (PREFETCH_SETS if in_shared_prefetch else "magnesium-patient-view.yaml")
    text = target.read_text()
    if breakage == "unknown-token":
        text = text.replace("{{context.patientId}}", "{{context.patientIdentifier}}", 1)
    elif breakage == "wrong-hook":
        text = text.replace("hook: patient-view", "hook: encounter-start")
    elif breakage == "not-yaml":
        text = "id: magnesium-patient-view\nhook: [patient-view\n  title: : :\n"
    elif breakage == "not-a-mapping":
        text = "- just\n- a list\n"
    elif breakage == "host-in-template":
        text = text.replace('template: "Patient/{{context.patientId}}"',
                            'template: "https://evil.example/fhir/Patient/{{context.patientId}}"')
    elif breakage == "unknown-field":
        text += "\nsecretKnob: true\n"
    elif breakage == "unknown-prefetch-set":
        text = text.replace("prefetch: standard", "prefetch: nonesuch")
    assert text != target.read_text(), f"breakage {breakage} changed nothing"
    target.write_text(text)
    return hooks, target


@pytest.mark.parametrize("breakage", ["unknown-token", "wrong-hook", "not-yaml", "not-a-mapping", "host-in-template",
                                      "unknown-field", "unknown-prefetch-set"])
def test_bad_definition_file_stops_start_up_naming_the_file(app_factory, tmp_path, breakage):
    hooks, target = _broken_hooks_dir(tmp_path, breakage)
    with pytest.raises(ConfigurationError) as info:
        app_factory(hooks_dir=str(hooks))
    assert str(target) in str(info.value)


def test_duplicate_service_id_stops_start_up(app_factory, tmp_path):
    hooks = tmp_path / "hooks"
    shutil.copytree(REPO / "hooks", hooks)
    shutil.copy(hooks / "magnesium-order-sign.yaml", hooks / "zz-copy-of-order-sign.yaml")
    with pytest.raises(ConfigurationError) as info:
        app_factory(hooks_dir=str(hooks))
    message = str(info.value)
    assert "duplicate" in message and "magnesium-order-sign" in message
    assert str(hooks) in message


def test_empty_definition_directory_stops_start_up(app_factory, tmp_path):
    with pytest.raises(ConfigurationError) as info:
        app_factory(hooks_dir=str(tmp_path))
    assert str(tmp_path) in str(info.value)


# ---------------------------------------------------------------------------- required context
@pytest.mark.parametrize(("service_id", "field"), [(s, f) for s, fields in REQUIRED_CONTEXT.items() for f in fields])
def test_missing_required_context_is_400_naming_the_field(client, service_id, field):
    body = hook_request(service_id, prefetch=full_prefetch(NORMAL_MG))
    del body["context"][field]
    resp = client.post(SERVICE_URL.format(service_id), json=body)
    out = assert_outcome(resp, 400, "invalid-request", mentions=f"context.{field}")
    assert any(f"context.{field}" in i.get("expression", []) for i in out["issue"])


@pytest.mark.parametrize(("service_id", "field"), [(s, f) for s, fields in REQUIRED_CONTEXT.items() for f in fields])
def test_null_required_context_is_400_naming_the_field(client, service_id, field):
    body = hook_request(service_id, prefetch=full_prefetch(NORMAL_MG))
    body["context"][field] = None
    assert_outcome(client.post(SERVICE_URL.format(service_id), json=body), 400, "invalid-request",
                   mentions=f"context.{field}")


@pytest.mark.parametrize("field", ["hook", "hookInstance", "context"])
def test_missing_top_level_field_is_400(client, field):
    body = hook_request(prefetch=full_prefetch(NORMAL_MG))
    del body[field]
    assert_outcome(client.post(SERVICE_URL.format("magnesium-patient-view"), json=body), 400, "invalid-request",
                   mentions=field)


@pytest.mark.parametrize("service_id", list(HOOKS))
def test_hook_mismatch_is_400(client, service_id):
    other = next(s for s in HOOKS if s != service_id)
    body = hook_request(other, prefetch=full_prefetch(NORMAL_MG))
    resp = client.post(SERVICE_URL.format(service_id), json=body)
    assert_outcome(resp, 400, "invalid-request", mentions="hook")
    assert HOOKS[other] in resp.get_data(as_text=True)


@pytest.mark.parametrize("service_id", list(HOOKS))
def test_unknown_fields_and_extension_are_accepted(client, service_id):
    plain = hook_request(service_id, prefetch=full_prefetch([magnesium("mg-low", 1.4)]))
    body = hook_request(service_id, prefetch=full_prefetch([magnesium("mg-low", 1.4)]))
    body["extension"] = {"com.example.ehr": {"tenant": "north", "flags": [1, 2]}}
    body["someFutureField"] = {"nested": True}
    body["context"]["encounterId"] = "enc-1"
    body["context"]["somethingElse"] = ["x"]
    resp = client.post(SERVICE_URL.format(service_id), json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json() == client.post(SERVICE_URL.format(service_id), json=plain).get_json()
    if service_id == "magnesium-patient-view":
        assert "hypomagnesemia" in rules_of(resp.get_json())


def test_patient_with_nothing_abnormal_gets_empty_cards(client):
    resp = client.post(SERVICE_URL.format("magnesium-patient-view"),
                       json=hook_request(prefetch=full_prefetch(NORMAL_MG)))
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    assert resp.get_json() == {"cards": []}


def test_low_magnesium_card_comes_back(client):
    resp = client.post(SERVICE_URL.format("magnesium-patient-view"),
                       json=hook_request(prefetch=full_prefetch([magnesium("mg-low", 1.4, when="2026-11-21T07:15:00Z")])))
    assert resp.status_code == 200
    card = next(c for c in resp.get_json()["cards"] if c["source"]["topic"]["code"] == "hypomagnesemia")
    assert "1.40" in card["summary"] and "2026-11-21" in card["summary"]


# ---------------------------------------------------------------------------- error codes
def test_malformed_json_is_400(client):
    resp = client.post(SERVICE_URL.format("magnesium-patient-view"), data=b'{"hook": "patient-view",',
                       content_type="application/json")
    assert_outcome(resp, 400, "malformed-json")


@pytest.mark.parametrize("payload", [b"[]", b'"patient-view"', b"42", b"null"])
def test_json_that_is_not_an_object_is_400(client, payload):
    resp = client.post(SERVICE_URL.format("magnesium-patient-view"), data=payload, content_type="application/json")
    assert_outcome(resp, 400)


def test_unknown_service_is_404(client):
    resp = client.post(SERVICE_URL.format("magnesium-encounter-start"), json=hook_request(prefetch=full_prefetch()))
    assert_outcome(resp, 404, "unknown-service", mentions="magnesium-encounter-start")


def test_feedback_to_unknown_service_is_404(client):
    resp = client.post("/cds-services/no-such-service/feedback", json=_feedback())
    assert_outcome(resp, 404, "unknown-service")


def test_get_on_a_service_url_is_405(client):
    resp = client.get(SERVICE_URL.format("magnesium-patient-view"))
    assert_outcome(resp, 405, "method-not-allowed")
    assert "POST" in resp.headers["Allow"]


def test_post_on_discovery_is_405(client):
    resp = client.post("/cds-services", json={})
    assert_outcome(resp, 405, "method-not-allowed")
    assert "GET" in resp.headers["Allow"]


def test_text_plain_is_415(client):
    body = '{"hook": "patient-view"}'
    resp = client.post(SERVICE_URL.format("magnesium-patient-view"), data=body, content_type="text/plain")
    assert_outcome(resp, 415, "unsupported-media-type")


def test_selection_not_among_the_draft_orders_is_422(client):
    body = hook_request("magnesium-order-select", prefetch=full_prefetch(NORMAL_MG))
    body["context"]["selections"] = ["MedicationRequest/draft-1", "MedicationRequest/not-drafted"]
    resp = client.post(SERVICE_URL.format("magnesium-order-select"), json=body)
    assert_outcome(resp, 422, "unprocessable", mentions="MedicationRequest/not-drafted")


def test_unknown_path_is_404(client):
    assert_outcome(client.get("/cds-services/magnesium-patient-view/elsewhere"), 404)


def test_required_data_neither_prefetched_nor_fetchable_is_412(client):
    resp = client.post(SERVICE_URL.format("magnesium-patient-view"), json=hook_request())
    out = assert_outcome(resp, 412, "prefetch-unavailable", mentions="observations")
    assert "no fhirServer" in "\n".join(i["diagnostics"] for i in out["issue"])


# ---------------------------------------------------------------------------- feedback
def _feedback(**item):
    base = {"card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "overridden",
            "overrideReason": {"reason": {"code": "not-relevant", "system": "https://example.org/override"},
                               "userComment": "seen by nephrology"},
            "outcomeTimestamp": "2026-11-25T12:01:00Z"}
    base.update(item)
    return {"feedback": [base]}


def test_feedback_valid_body_is_200(client):
    resp = client.post("/cds-services/magnesium-patient-view/feedback", json=_feedback())
    assert resp.status_code == 200, resp.get_data(as_text=True)
    accepted = _feedback(outcome="accepted", acceptedSuggestions=[{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}])
    del accepted["feedback"][0]["overrideReason"]
    assert client.post("/cds-services/magnesium-patient-view/feedback", json=accepted).status_code == 200


@pytest.mark.parametrize("bad", [
    {},
    {"feedback": []},
    {"feedback": "accepted"},
    {"feedback": [{"outcome": "accepted", "outcomeTimestamp": "2026-11-25T12:01:00Z"}]},
    _feedback(outcome="ignored"),
    _feedback(outcomeTimestamp="yesterday"),
    _feedback(acceptedSuggestions="all"),
    _feedback(overrideReason="because"),
])
def test_feedback_bad_body_is_400(client, bad):
    resp = client.post("/cds-services/magnesium-patient-view/feedback", json=bad)
    assert_outcome(resp, 400, "invalid-feedback")


def test_feedback_malformed_json_is_400(client):
    resp = client.post("/cds-services/magnesium-patient-view/feedback", data=b"{feedback", content_type="application/json")
    assert_outcome(resp, 400, "malformed-json")
