"""Test-wide constants and environment lookups (importable from any test module)."""
from __future__ import annotations

from datetime import UTC, datetime

FIXED_NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # the fixtures' "today"


def fhir_base_url() -> str:
    """The FHIR server the integration suite talks to (CDS_TEST_FHIR_BASE)."""
    from tests.helpers.lanes import require_env  # here, not above: tests/conftest.py loads lanes as a plugin after this

    base = require_env("CDS_TEST_FHIR_BASE", "run the suite with `bash scripts/test.sh`, or point CDS_TEST_FHIR_BASE "
                       "at a FHIR R4 server (e.g. a HAPI sandbox)")
    return base.rstrip("/")
