"""The service against a real FHIR server: no prefetch (the service fetches everything over HTTP with the
EHR's bearer token) and prefetch rendered from discovery by the EHR stand-in. Cards must equal each
scenario's declared expected topics; the token must reach the FHIR server and nothing may go elsewhere."""
from __future__ import annotations

import secrets
from urllib.parse import unquote

import pytest

from cds_service.fixtures import list_scenarios
from cds_service.kit.standin import EhrStandIn, topic_codes
from cds_service.prefetch.templates import render
from tests.integration.integration_support import HOOKS_UNDER_TEST, scenario_context

pytestmark = pytest.mark.integration

SCENARIOS = list_scenarios()
PREFETCH_TYPES = {"Patient", "Observation", "MedicationRequest", "MedicationStatement", "Condition"}


def _relative(proxy, path: str) -> str:
    """A path the proxy saw, relative to the FHIR base, percent-decoded."""
    assert path.startswith(proxy.prefix + "/"), path
    return unquote(path[len(proxy.prefix) + 1:])


def _about_patient(query: str, patient_id: str) -> bool:
    if "?" in query:
        return f"patient={patient_id}&" in query + "&" or f"patient={patient_id}" == query.split("?", 1)[1]
    rtype, _, rid = query.partition("/")
    return (rtype, rid) == ("Patient", patient_id) or rtype == "Medication"


@pytest.mark.parametrize("hook", HOOKS_UNDER_TEST)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_no_prefetch_fetches_everything_over_http_with_the_token(scenario, hook, loaded, proxy, kit_app, outbound):
    token = f"it-{secrets.token_hex(12)}"
    standin = EhrStandIn(fhir_base=proxy.base, app=kit_app, fhir_token=token)
    built = standin.build_request(hook, scenario.patient_id, prefetch=False, **scenario_context(scenario, hook))
    assert "prefetch" not in built.body and built.body["fhirServer"] == proxy.base
    proxy.clear()

    result = standin.call(built)

    assert result.status == 200, result.body
    assert set(topic_codes(result.body["cards"])) == set(scenario.expected[hook])
    seen = proxy.requests()
    queries = [_relative(proxy, s.path) for s in seen]
    # every prefetch template was fetched by the service, for this patient, through the proxy
    assert {q.split("?")[0].split("/")[0] for q in queries} >= PREFETCH_TYPES
    assert all(_about_patient(q, scenario.patient_id) for q in queries), queries
    assert {s.method for s in seen} == {"GET"}
    # the EHR's bearer token reached the FHIR server on every call
    assert [s.authorization for s in seen] == [f"Bearer {token}"] * len(seen)
    # and the service reached nothing but the fhirServer it was given
    assert outbound, "the service made no outbound call"
    assert all(url.startswith(proxy.base + "/") for url in outbound), outbound
    assert len(outbound) == len(seen)


@pytest.mark.parametrize("hook", HOOKS_UNDER_TEST)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_prefetch_rendered_from_discovery_gives_the_same_cards(scenario, hook, loaded, proxy, kit_app, outbound):
    token = f"it-{secrets.token_hex(12)}"
    standin = EhrStandIn(fhir_base=proxy.base, app=kit_app, fhir_token=token)
    proxy.clear()
    built = standin.build_request(hook, scenario.patient_id, prefetch=True, **scenario_context(scenario, hook))

    service = standin.service_for(hook)
    assert sorted(built.prefetched) == sorted(service["prefetch"]) and not built.not_prefetched
    # the stand-in GETs exactly the discovery templates rendered against the context
    rendered = {unquote(render(t, built.body["context"])) for t in service["prefetch"].values()}
    got = {_relative(proxy, s.path) for s in proxy.requests()}
    assert rendered <= got, rendered - got
    assert all(s.authorization == f"Bearer {token}" for s in proxy.requests())
    proxy.clear()

    result = standin.call(built)

    assert result.status == 200, result.body
    assert set(topic_codes(result.body["cards"])) == set(scenario.expected[hook])
    # with complete prefetch the service re-fetches no search; at most the Medications entries reference
    assert all(url.startswith(proxy.base + "/Medication/") for url in outbound), outbound


def test_loaded_scenarios_are_readable_through_the_proxy(loaded, proxy, fhir_base):
    """The proxy is transparent: a read through it equals a read from the server itself."""
    import requests

    sid = SCENARIOS[0].patient_id
    direct = requests.get(f"{fhir_base}/Patient/{sid}", headers={"Accept": "application/fhir+json"}, timeout=10).json()
    via = requests.get(f"{proxy.base}/Patient/{sid}", headers={"Accept": "application/fhir+json"}, timeout=10).json()
    assert via["id"] == direct["id"] == sid
    assert via.get("birthDate") == direct.get("birthDate")
