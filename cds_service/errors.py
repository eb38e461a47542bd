"""One exception hierarchy with stable codes, mapped to HTTP status and a FHIR OperationOutcome in one place."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class CDSError(Exception):
    """Base of every error the service reports to a client.

    ``code`` is stable (documented in README, counted in the audit); ``status`` is the HTTP status;
    ``fhir_code`` is the OperationOutcome ``issue.code``.
    """

    status = 400
    code = "bad-request"
    fhir_code = "invalid"
    severity = "error"

    def __init__(self, message: str, *, expression: Iterable[str] | None = None, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.expression = list(expression or [])
        self.details = list(details or [])

    def to_operation_outcome(self) -> dict[str, Any]:
        issues = [_issue(self.severity, self.fhir_code, self.code, self.message, self.expression)]
        issues.extend(_issue(self.severity, self.fhir_code, self.code, d, []) for d in self.details)
        return {"resourceType": "OperationOutcome", "issue": issues}

    def headers(self) -> dict[str, str]:
        return {}


def _issue(severity: str, fhir_code: str, code: str, text: str, expression: list[str]) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": severity,
        "code": fhir_code,
        "details": {
            "coding": [{"system": ERROR_CODE_SYSTEM, "code": code}],
            "text": text,
        },
        "diagnostics": text,
    }
    if expression:
        issue["expression"] = expression
    return issue


ERROR_CODE_SYSTEM = "urn:cds-magnesium:error"


class MalformedJSON(CDSError):
    code = "malformed-json"
    fhir_code = "structure"


class InvalidRequest(CDSError):
    code = "invalid-request"
    fhir_code = "required"


class InvalidFeedback(CDSError):
    code = "invalid-feedback"
    fhir_code = "invalid"


class Unauthorized(CDSError):
    status = 401
    code = "unauthorized"
    fhir_code = "login"

    def __init__(self, message: str = "client authentication failed", *, reason: str = ""):
        super().__init__(message)
        self.reason = reason  # for the log only; never sent to the client

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="cds-services", error="invalid_token"'}


class MissingToken(Unauthorized):
    """401 without a token: per RFC 6750 the challenge carries no error code."""

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="cds-services"'}


class AuthUnavailable(CDSError):
    """503: the replay cache (service database) cannot be consulted, so no token is accepted."""

    status = 503
    code = "auth-unavailable"
    fhir_code = "transient"


class UnknownService(CDSError):
    status = 404
    code = "unknown-service"
    fhir_code = "not-found"


class NotFound(CDSError):
    status = 404
    code = "not-found"
    fhir_code = "not-found"


class MethodNotAllowed(CDSError):
    status = 405
    code = "method-not-allowed"
    fhir_code = "not-supported"

    def __init__(self, message: str, allowed: Iterable[str] = ()):
        super().__init__(message)
        self.allowed = sorted(set(allowed))

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)} if self.allowed else {}


class PayloadTooLarge(CDSError):
    status = 413
    code = "payload-too-large"
    fhir_code = "too-costly"


class UnsupportedMediaType(CDSError):
    status = 415
    code = "unsupported-media-type"
    fhir_code = "not-supported"


class PrefetchUnavailable(CDSError):
    """412: data the service needs could be neither prefetched nor fetched."""

    status = 412
    code = "prefetch-unavailable"
    fhir_code = "incomplete"


class UnprocessableRequest(CDSError):
    status = 422
    code = "unprocessable"
    fhir_code = "processing"


class ConfigurationError(Exception):
    """A bad hook definition, knowledge file or setting: stops the service at start-up."""
