"""Integration fixtures: the real FHIR server (CDS_TEST_FHIR_BASE) with every scenario loaded, a recording proxy.

Point CDS_TEST_FHIR_BASE at any FHIR R4 server (e.g. a HAPI sandbox) and the same suite runs there.
"""
from __future__ import annotations

import pytest

from cds_service.fixtures import list_scenarios, read_bundle
from cds_service.kit.loader import FixtureLoader, ScenarioLoad
from cds_service.prefetch.gateway import FhirGateway
from tests.helpers.env import fhir_base_url
from tests.integration.integration_support import RecordingAdapter, RecordingProxy


@pytest.fixture(scope="session")
def fhir_base() -> str:
    return fhir_base_url()


@pytest.fixture(scope="session")
def scenarios():
    return list_scenarios()


@pytest.fixture(scope="session")
def loaded(fhir_base, scenarios) -> dict[str, ScenarioLoad]:
    """Every scenario PUT into the real server once per session, through the project's own loader."""
    loader = FixtureLoader(fhir_base)
    loader.wait_for_metadata(30)
    return {s.id: loader.load(s.id, read_bundle(s)) for s in scenarios}


@pytest.fixture(scope="session")
def proxy(fhir_base):
    with RecordingProxy(fhir_base) as p:
        yield p


@pytest.fixture
def outbound() -> list[str]:
    return []


@pytest.fixture
def kit_app(app_factory, outbound):
    """The service in-process, fixed clock, whose FHIR gateway records every outbound URL (real HTTP)."""
    gateway = FhirGateway(call_timeout=5.0, retries=2, page_limit=5)
    for prefix, adapter in list(gateway.session.adapters.items()):
        gateway.session.mount(prefix, RecordingAdapter(adapter, outbound))
    return app_factory(gateway=gateway, fetch_deadline_seconds=10.0, fetch_call_timeout_seconds=5.0)
