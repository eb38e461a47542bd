"""CDS Hooks 2.0 request validation (hook call and feedback) with clear 400 messages."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..definitions import REQUIRED_CONTEXT, ServiceDefinition
from ..errors import InvalidFeedback, InvalidRequest, UnprocessableRequest
from ..record.dates import parse_fhir_datetime


@dataclass(frozen=True)
class FhirAuthorization:
    access_token: str
    token_type: str
    scope: str
    subject: str
    expires_in: int | None = None

    def __repr__(self) -> str:  # never print the token
        return f"FhirAuthorization(token_type={self.token_type!r}, scope={self.scope!r}, subject={self.subject!r})"


@dataclass(frozen=True)
class HookRequest:
    hook: str
    hook_instance: str
    context: dict[str, Any]
    prefetch: dict[str, Any]
    fhir_server: str | None
    fhir_authorization: FhirAuthorization | None

    @property
    def patient_id(self) -> str:
        return self.context["patientId"]

    @property
    def user_id(self) -> str:
        return self.context["userId"]

    @property
    def encounter_id(self) -> str | None:
        v = self.context.get("encounterId")
        return v if isinstance(v, str) else None


def _req_str(obj: dict, key: str, where: str, exc: type[Exception] = InvalidRequest) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v.strip():
        raise exc(f"{where}{key} is required and must be a non-empty string", expression=[f"{where}{key}"])  # type: ignore[call-arg]
    return v.strip()


def _str_or_empty(obj: dict, key: str) -> str:
    """An optional string member; anything else (absent, a number, ...) reads as ''."""
    v = obj.get(key)
    return v if isinstance(v, str) else ""


def parse_hook_request(body: Any, service: ServiceDefinition) -> HookRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    hook = _req_str(body, "hook", "")
    if hook != service.hook:
        raise InvalidRequest(f"service {service.id} answers hook {service.hook!r}, not {hook!r}", expression=["hook"])
    hook_instance = _req_str(body, "hookInstance", "")
    context = body.get("context")
    if not isinstance(context, dict):
        raise InvalidRequest("context is required and must be an object", expression=["context"])
    for key in REQUIRED_CONTEXT[hook]:
        if key not in context or context[key] is None:
            raise InvalidRequest(f"context.{key} is required for {hook}", expression=[f"context.{key}"])
    for key in ("userId", "patientId"):
        if not isinstance(context[key], str) or not context[key].strip():
            raise InvalidRequest(f"context.{key} must be a non-empty string", expression=[f"context.{key}"])
    if "/" in context["patientId"].strip():
        raise InvalidRequest("context.patientId must be a FHIR id, not a reference", expression=["context.patientId"])
    if context["patientId"].strip() in (".", ".."):  # a dot segment would turn Patient/{id} into another URL
        raise InvalidRequest("context.patientId must be a FHIR id, not a dot segment", expression=["context.patientId"])
    if "encounterId" in context and context["encounterId"] is not None and not isinstance(context["encounterId"], str):
        raise InvalidRequest("context.encounterId must be a string", expression=["context.encounterId"])
    if "draftOrders" in REQUIRED_CONTEXT[hook]:
        draft = context["draftOrders"]
        if not isinstance(draft, dict) or draft.get("resourceType") != "Bundle":
            raise InvalidRequest("context.draftOrders must be a FHIR Bundle", expression=["context.draftOrders"])
        entries = draft.get("entry", [])
        if entries is not None and not isinstance(entries, list):
            raise InvalidRequest("context.draftOrders.entry must be an array", expression=["context.draftOrders.entry"])
    if "selections" in REQUIRED_CONTEXT[hook]:
        sel = context["selections"]
        if not isinstance(sel, list) or not all(isinstance(s, str) for s in sel):
            raise InvalidRequest("context.selections must be an array of strings", expression=["context.selections"])
        drafted = {f"{r.get('resourceType')}/{r.get('id')}" for e in (context["draftOrders"].get("entry") or [])
                   if isinstance(e, dict) and isinstance(r := e.get("resource"), dict)}
        unknown = [x for x in sel if x.strip() not in drafted]
        if unknown:
            raise UnprocessableRequest(
                f"context.selections names {', '.join(unknown[:5])}, not among context.draftOrders "
                f"(the draft orders are: {', '.join(sorted(drafted)[:20]) or 'none'})",
                expression=["context.selections"])
    fhir_server = body.get("fhirServer")
    if fhir_server is not None and (not isinstance(fhir_server, str) or urlsplit(fhir_server).scheme not in ("http", "https")
                                    or not urlsplit(fhir_server).netloc):
        raise InvalidRequest("fhirServer must be an absolute http(s) URL", expression=["fhirServer"])
    auth = body.get("fhirAuthorization")
    fhir_auth = None
    if auth is not None:
        if not isinstance(auth, dict):
            raise InvalidRequest("fhirAuthorization must be an object", expression=["fhirAuthorization"])
        token = _req_str(auth, "access_token", "fhirAuthorization.")
        token_type = _req_str(auth, "token_type", "fhirAuthorization.")
        if token_type.lower() != "bearer":
            raise InvalidRequest("fhirAuthorization.token_type must be Bearer", expression=["fhirAuthorization.token_type"])
        expires = auth.get("expires_in")
        if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)):
            raise InvalidRequest("fhirAuthorization.expires_in must be an integer", expression=["fhirAuthorization.expires_in"])
        fhir_auth = FhirAuthorization(token, "Bearer", _str_or_empty(auth, "scope"), _str_or_empty(auth, "subject"), expires)
        if fhir_server is None:
            raise InvalidRequest("fhirAuthorization was given without fhirServer", expression=["fhirServer"])
    prefetch = body.get("prefetch")
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, dict):
        raise InvalidRequest("prefetch must be an object", expression=["prefetch"])
    return HookRequest(hook, hook_instance, context, prefetch, fhir_server, fhir_auth)


FEEDBACK_OUTCOMES = {"accepted", "overridden"}


def parse_feedback(body: Any) -> list[dict[str, Any]]:
    """Validate a CDS Hooks 2.0 feedback body; returns the feedback items."""
    if not isinstance(body, dict):
        raise InvalidFeedback("the feedback body must be a JSON object")
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        raise InvalidFeedback("feedback must be a non-empty array", expression=["feedback"])
    out = []
    for i, item in enumerate(items):
        where = f"feedback[{i}]."
        if not isinstance(item, dict):
            raise InvalidFeedback(f"feedback[{i}] must be an object", expression=[f"feedback[{i}]"])
        card = _req_str(item, "card", where, InvalidFeedback)
        outcome = _req_str(item, "outcome", where, InvalidFeedback)
        if outcome not in FEEDBACK_OUTCOMES:
            raise InvalidFeedback(f"{where}outcome must be accepted or overridden", expression=[f"{where}outcome"])
        ts = _req_str(item, "outcomeTimestamp", where, InvalidFeedback)
        accepted = item.get("acceptedSuggestions")
        if accepted is not None and (not isinstance(accepted, list)
                                     or not all(isinstance(a, dict) and isinstance(a.get("id"), str) for a in accepted)):
            raise InvalidFeedback(f"{where}acceptedSuggestions must be an array of {{id}} objects",
                                  expression=[f"{where}acceptedSuggestions"])
        if outcome == "accepted" and not accepted:
            # spec: acceptedSuggestions required when accepted (for cards with suggestions); tolerate absence
            accepted = []
        override = item.get("overrideReason")
        if override is not None:
            if not isinstance(override, dict):
                raise InvalidFeedback(f"{where}overrideReason must be an object", expression=[f"{where}overrideReason"])
            reason = override.get("reason")
            if reason is not None and not isinstance(reason, dict):
                raise InvalidFeedback(f"{where}overrideReason.reason must be a Coding", expression=[f"{where}overrideReason.reason"])
            comment = override.get("userComment")
            if comment is not None and not isinstance(comment, str):
                raise InvalidFeedback(f"{where}overrideReason.userComment must be a string",
                                      expression=[f"{where}overrideReason.userComment"])
        if parse_fhir_datetime(ts) is None or len(ts) < 10:
            raise InvalidFeedback(f"{where}outcomeTimestamp must be an ISO 8601 instant", expression=[f"{where}outcomeTimestamp"])
        out.append({"card": card, "outcome": outcome, "outcomeTimestamp": ts, "acceptedSuggestions": accepted or [],
                    "overrideReason": override})
    return out
