"""Errors gunicorn answers itself (before the app sees the request) as FHIR OperationOutcomes, not HTML.

gunicorn refuses oversized headers (431), request lines (414) and malformed requests (400) in its worker,
through ``gunicorn.util.write_error``; ``install()`` replaces that function, for every worker class. The text
is fixed per status: nothing the client sent is echoed back.
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import ERROR_CODE_SYSTEM
from ..media import FHIR_JSON

_TEXT = {
    400: ("bad-request", "invalid", "the HTTP request could not be parsed"),
    403: ("forbidden", "forbidden", "request forbidden"),
    414: ("uri-too-long", "too-costly", "the request line is too long"),
    417: ("expectation-failed", "not-supported", "the Expect header is not supported"),
    431: ("header-fields-too-large", "too-costly", "the request headers are too large or too many"),
    501: ("not-implemented", "not-supported", "the transfer coding is not supported"),
}


def outcome_bytes(status: int, reason: str) -> bytes:
    """A complete HTTP/1.1 response with an OperationOutcome body (the connection is closed after it)."""
    code, fhir_code, text = _TEXT.get(status, ("server-error" if status >= 500 else "bad-request",
                                              "exception" if status >= 500 else "invalid", reason.lower()))
    body = json.dumps({"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": fhir_code, "diagnostics": text,
        "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": code}], "text": text}}]}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: {FHIR_JSON}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    return head + body


def _write_outcome(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    from gunicorn import util

    util.write_nonblock(sock, outcome_bytes(int(status_int), reason))


def install() -> None:
    """Make gunicorn's own error answers OperationOutcomes (call before the workers start)."""
    from gunicorn import util

    util.write_error = _write_outcome
