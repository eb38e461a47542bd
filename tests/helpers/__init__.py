"""Small shared test utilities: FHIR resource builders and a recording FHIR stub server."""
