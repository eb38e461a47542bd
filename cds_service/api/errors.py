"""Every error becomes an OperationOutcome: CDSError by its stable code, HTTP errors by status."""
from __future__ import annotations

import logging

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import metrics
from ..errors import AuthUnavailable, CDSError, MethodNotAllowed, MissingToken, NotFound, PayloadTooLarge, Unauthorized
from ..media import FHIR_JSON

log = logging.getLogger(__name__)


def outcome_response(exc: CDSError) -> Response:
    resp = Response(json.dumps(exc.to_operation_outcome()), status=exc.status, mimetype=FHIR_JSON)
    for k, v in exc.headers().items():
        resp.headers[k] = v
    return resp


def init_app(app: Flask) -> None:
    @app.errorhandler(CDSError)
    def _cds_error(exc: CDSError):
        if isinstance(exc, Unauthorized):
            log.warning("authentication failed: %s", exc.reason or exc.message)
            metrics.auth_refused(exc.reason or exc.message, isinstance(exc, MissingToken))
        elif isinstance(exc, AuthUnavailable):
            metrics.AUTH_REFUSALS.labels("unavailable").inc()
        elif exc.status >= 400:
            log.info("client error %s (%s): %s", exc.status, exc.code, exc.message)
        return outcome_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if isinstance(exc, RequestEntityTooLarge):
            return outcome_response(PayloadTooLarge("request body is too large"))
        if exc.code == 404:
            return outcome_response(NotFound("no such endpoint; the service answers GET /cds-services (discovery), "
                                             "POST /cds-services/{id}, /healthz, /readyz and /openapi.yaml"))
        if exc.code == 405:
            allowed = exc.valid_methods or []  # type: ignore[attr-defined]
            return outcome_response(MethodNotAllowed("method not allowed on this endpoint", allowed))
        err = CDSError(exc.description or exc.name)
        err.status = exc.code or 400
        return outcome_response(err)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):  # a bug of ours, never the client's fault: no stack trace leaves
        log.exception("unexpected error")
        err = CDSError("internal error; the incident was logged")
        err.status, err.code, err.fhir_code = 500, "internal-error", "exception"
        return outcome_response(err)
