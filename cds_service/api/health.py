"""Liveness and readiness (never depends on an EHR's FHIR server)."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    s = current_app.extensions["cds"]
    checks = {
        "definitions": bool(s.catalog.services),
        "knowledge": s.knowledge.version,
        "store": s.store.ping(),
        "auditWriter": s.store.stats(),  # written/failed/dropped/queued: a store outage shows here
    }
    ready = checks["definitions"] and checks["store"]
    body = {"status": "ready" if ready else "not-ready", "checks": checks}
    if ready:
        return jsonify(body)
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "transient", "diagnostics": f"not ready: {checks}"}],
    }
    return jsonify(outcome), 503, {"Content-Type": "application/fhir+json"}
