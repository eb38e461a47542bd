"""Liveness and readiness (never depends on an EHR's FHIR server)."""
from __future__ import annotations

import logging

from flask import Blueprint, Flask, jsonify, request

from ..media import FHIR_JSON
from ..services import get_services

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def _may_see_details() -> bool:
    """Check details (writer errors, versions) only for a verified client, or anyone when auth is off (development).

    The endpoint is public, so a token is verified here, not before the request; a bad one just hides the details."""
    s = get_services()
    if s.settings.auth_mode == "off":
        return True
    authenticator = s.authenticator
    if authenticator is None or not request.headers.get("Authorization"):
        return False
    from ..auth import bearer_token, endpoint_url
    from ..errors import CDSError

    try:
        token = bearer_token()
        return token is not None and authenticator.verify(token, endpoint_url(s.settings)) is not None
    except CDSError as exc:
        log.info("/readyz: details withheld (%s)", getattr(exc, "reason", "") or exc.message)
        return False


@bp.get("/readyz")
def readyz():
    s = get_services()
    if not _may_see_details():
        ready = bool(s.catalog.services) and s.store.ping()
        if ready:
            return jsonify({"status": "ready"})
        outcome = {"resourceType": "OperationOutcome",
                   "issue": [{"severity": "error", "code": "transient", "diagnostics": "not ready"}]}
        return jsonify(outcome), 503, {"Content-Type": FHIR_JSON}
    definitions, store = bool(s.catalog.services), s.store.ping()
    checks = {
        "definitions": definitions,
        "knowledge": s.knowledge.version,
        "store": store,
        "auditWriter": s.store.stats(),  # written/failed/dropped/queued: a store outage shows here
    }
    ready = definitions and store
    body = {"status": "ready" if ready else "not-ready", "checks": checks}
    if ready:
        return jsonify(body)
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "transient", "diagnostics": f"not ready: {checks}"}],
    }
    return jsonify(outcome), 503, {"Content-Type": FHIR_JSON}
