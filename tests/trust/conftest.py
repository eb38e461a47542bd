"""Trust fixtures: client signing keys made in the test, a trusted issuers file, a JWKS over real HTTP."""
from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.trust.trustkit import ISS, TENANT, JwksServer, Signer, jwks, write_issuers


@pytest.fixture
def jwks_server():
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def es384() -> Signer:
    return Signer("ES384", kid="ehr-es384")


@pytest.fixture(scope="session")
def rs384() -> Signer:
    return Signer("RS384", kid="ehr-rs384")


@pytest.fixture
def issuers_file(tmp_path, es384, rs384) -> str:
    """One trusted issuer with both keys inline."""
    return write_issuers(tmp_path / "issuers.yaml", [{"iss": ISS, "tenant": TENANT, "jwks": jwks(es384, rs384)}])


@pytest.fixture
def secure_app(app_factory, issuers_file):
    """auth_mode=required with the inline-key issuer."""
    def make(**overrides):
        config = {"auth_mode": "required", "trusted_issuers_file": issuers_file}
        config.update(overrides)
        return app_factory(**config)
    return make


@pytest.fixture
def patient_view_body() -> dict[str, Any]:
    """A minimal valid patient-view call with everything prefetched (no FHIR server needed)."""
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": "p1"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-05-01"},
            "observations": {"resourceType": "Bundle", "type": "searchset", "entry": []},
            "medicationRequests": {"resourceType": "Bundle", "type": "searchset", "entry": []},
            "medicationStatements": {"resourceType": "Bundle", "type": "searchset", "entry": []},
            "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": []},
        },
    }
