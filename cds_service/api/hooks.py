"""CDS Hooks endpoints: discovery, service calls, feedback (thin: all logic is in the engine)."""
from __future__ import annotations

import logging
import time

from flask import Blueprint, current_app, jsonify, request

from ..engine import Invocation
from ..errors import CDSError, UnknownService
from ..protocol.request import parse_feedback
from .body import read_json

bp = Blueprint("cds", __name__)
log = logging.getLogger(__name__)


def services():
    return current_app.extensions["cds"]


@bp.get("/cds-services")
def discovery():
    s = services()
    return jsonify(s.catalog.discovery(s.engine.clock()))


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str):
    s = services()
    started = time.monotonic()
    inv = Invocation(service_id=service_id)
    try:
        body = read_json(request, s.settings.max_body_bytes, s.settings.max_json_depth)
        response = s.engine.handle(service_id, body, inv)
        status = 200
        result = jsonify(response)
    except CDSError as exc:
        inv.status, inv.error_code, inv.error = exc.status, exc.code, exc.message
        inv.latency_ms = (time.monotonic() - started) * 1000
        if not isinstance(exc, UnknownService):
            s.store.record_invocation(inv)
        raise
    inv.status = status
    inv.latency_ms = (time.monotonic() - started) * 1000
    s.store.record_invocation(inv)
    log.info("hook %s hookInstance=%s patient=%s cards=%d %.1fms", service_id, inv.hook_instance, inv.patient_id,
             len(inv.cards), inv.latency_ms)
    return result


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    s = services()
    if s.catalog.get(service_id) is None:
        raise UnknownService(f"no CDS service with id {service_id!r}")
    body = read_json(request, s.settings.max_body_bytes, s.settings.max_json_depth)
    items = parse_feedback(body)
    results = s.store.record_feedback(service_id, items)
    return jsonify({"feedback": results})
