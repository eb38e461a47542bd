"""CDS Hooks endpoints: discovery, service calls, feedback (thin: all logic is in the engine)."""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from .. import metrics
from ..audit.invocation import Invocation
from ..errors import CDSError, PayloadTooLarge, UnknownService
from ..protocol.identity import CallIdentity, identify
from ..protocol.request import parse_feedback
from ..services import get_services as services  # the one accessor; `services()` in the views below
from . import evidence_page
from .body import read_json

bp = Blueprint("cds", __name__)
log = logging.getLogger(__name__)
REFUSED_SERVICE_ID_CHARS = 64  # a refused call's row keeps at most this much of the path's service id


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.get("/cds-services", strict_slashes=False)
def discovery():
    s = services()
    return jsonify(s.catalog.discovery(s.engine.clock()))


@bp.post("/cds-services/<service_id>", strict_slashes=False)
def call_service(service_id: str):
    s = services()
    inv = g.cds_invocation = Invocation(service_id=service_id)
    g.cds_started = time.monotonic()
    body = None
    try:
        body = read_json(request, s.settings.max_body_bytes, typed=not s.settings.strict_validation)
        _known_service(s.catalog, service_id)
        outcome = g.cds_outcome = s.engine.handle(service_id, body)  # the audit record is made from it (_record)
        response = evidence_page.add_links(outcome.response(), inv)  # copies: the audited cards keep no token
    except CDSError as exc:
        inv.status, inv.error_code, inv.error = exc.status, exc.code, exc.message
        if isinstance(exc, UnknownService):
            _identify(inv, identify(body))
        raise
    except HTTPException as exc:  # e.g. werkzeug's 413 on a chunked body over MAX_CONTENT_LENGTH
        inv.status, inv.error_code, inv.error = exc.code or 400, f"http-{exc.code}", exc.name
        raise
    except Exception as exc:  # a bug: the 500 is still audited (type only; the log has the trace)
        inv.status, inv.error_code, inv.error = 500, "internal-error", type(exc).__name__
        raise
    inv.status = 200
    return jsonify(response)


@bp.after_request
def _audit_invocation(response):
    """One audit row per hook call, whatever the outcome (also a 401 raised before the view ran)."""
    if request.endpoint != "cds.call_service":
        return response
    try:
        _record(response)
    except Exception:  # the audit never changes the response
        log.exception("could not hand the invocation to the audit store")
    return response


def _record(response) -> None:
    s = services()
    inv = g.get("cds_invocation")
    if inv is None:  # the view never ran (authentication failed first): a compact row, the body never read
        inv = Invocation(service_id=(request.view_args or {}).get("service_id", "")[:REFUSED_SERVICE_ID_CHARS])
    outcome = g.get("cds_outcome")
    if outcome is not None:  # what the engine's steps produced, success or not
        for name, value in outcome.audit_fields().items():
            setattr(inv, name, value)
    started = g.get("cds_started")
    inv.latency_ms = (time.monotonic() - started) * 1000 if started is not None else 0.0
    inv.status = response.status_code
    if response.status_code != 200 and inv.error_code is None:
        inv.error_code, inv.error = _outcome_code(response)
    if response.status_code == 401:  # refused: what was refused and when, nothing the caller sent beyond the path
        inv.error = None
    client = g.get("cds_client")
    if client is not None:
        inv.client = " ".join(p for p in (client.iss, client.sub and f"sub={client.sub}",
                                          client.tenant and f"tenant={client.tenant}") if p)
    s.store.record_invocation(inv)
    metrics.observe_call(inv, s.catalog.get(inv.service_id) is not None)
    metrics.sync_audit(s.store)
    log.info("hook %s hookInstance=%s patient=%s status=%d cards=%d %.1fms", inv.service_id, inv.hook_instance,
             inv.patient_id, inv.status, len(inv.cards), inv.latency_ms,
             extra={"service": inv.service_id, "hookInstance": inv.hook_instance, "patientId": inv.patient_id,
                    "status": inv.status, "latencyMs": round(inv.latency_ms, 1), "cards": len(inv.cards)})


def _known_service(catalog, service_id: str) -> None:
    """404 naming the services there are, so that a typo is a one-look fix."""
    if catalog.get(service_id) is None:
        ids = ", ".join(sorted(catalog.services))
        raise UnknownService(f"no CDS service with id {service_id[:200]!r}; the services here are: {ids} "
                             "(GET /cds-services)")


def _identify(inv: Invocation, identity: CallIdentity) -> None:
    """The identity of a call the engine did not take (unknown service) into its audit record."""
    for name, value in vars(identity).items():
        setattr(inv, name, value)


def _outcome_code(response) -> tuple[str | None, str | None]:
    """The stable error code and text of an OperationOutcome response."""
    try:
        issue = (response.get_json(silent=True) or {}).get("issue", [{}])[0]
        coding = (issue.get("details") or {}).get("coding") or [{}]
        return coding[0].get("code"), issue.get("diagnostics")
    except (AttributeError, IndexError, TypeError):
        return f"http-{response.status_code}", None


@bp.post("/cds-services/<service_id>/feedback", strict_slashes=False)
def feedback(service_id: str):
    s = services()
    _known_service(s.catalog, service_id)
    body = read_json(request, s.settings.max_body_bytes)
    items = body.get("feedback") if isinstance(body, dict) else None
    if isinstance(items, list) and len(items) > s.settings.feedback_max_items:
        raise PayloadTooLarge(f"feedback holds {len(items)} items; the limit is {s.settings.feedback_max_items} "
                              "(CDS_FEEDBACK_MAX_ITEMS)", expression=["feedback"])
    items = parse_feedback(body)
    results = s.store.record_feedback(service_id, items)
    return jsonify({"feedback": results})
