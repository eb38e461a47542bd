"""The FHIR JSON media type, written once: resources asked for, OperationOutcomes and resources sent."""
from __future__ import annotations

FHIR_JSON = "application/fhir+json"
