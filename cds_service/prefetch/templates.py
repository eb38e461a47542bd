"""Rendering CDS Hooks 2.0 prefetch tokens against a request's context."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..definitions import TOKEN


class TemplateError(ValueError):
    """A token whose value the request does not provide."""


def user_tokens(user_id: str | None) -> dict[str, str]:
    """userPractitionerId etc. from context.userId ("Practitioner/123")."""
    out: dict[str, str] = {}
    if not user_id or "/" not in user_id:
        return out
    rtype, _, rid = user_id.partition("/")
    name = {"Practitioner": "userPractitionerId", "PractitionerRole": "userPractitionerRoleId",
            "Patient": "userPatientId", "RelatedPerson": "userRelatedPersonId"}.get(rtype)
    if name and rid:
        out[name] = rid
    return out


def render(template: str, context: dict[str, Any]) -> str:
    values: dict[str, str] = {f"context.{k}": v for k, v in context.items() if isinstance(v, str)}
    values.update(user_tokens(context.get("userId")))

    def sub(m: Any) -> str:
        token = m.group(1)
        if token not in values:
            raise TemplateError(f"prefetch token {{{{{token}}}}} has no value in this request")
        if values[token].strip() in (".", ".."):  # quote() keeps dots: "Patient/.." would become the base URL
            raise TemplateError(f"prefetch token {{{{{token}}}}} is a dot segment, not an id")
        return quote(values[token], safe="")

    return TOKEN.sub(sub, template)
