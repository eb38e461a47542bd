"""Findings -> CDS Hooks 2.0 cards: deterministic uuids, cited source and topic, validated suggestions."""
from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterable
from typing import Any

from ..knowledge import Knowledge
from ..record.model import DataGap
from ..rules.base import Finding, Indicator
from .sections import render as render_sections

CARD_NAMESPACE = uuid.UUID("6f1c2a9e-4f0b-4c55-9d59-0b1e7c3d2a10")
SUMMARY_MAX = 140  # spec: "<140 characters"
GAP_RULE = "data-gaps"


class InvalidSuggestion(ValueError):
    """A resource that does not validate as FHIR R4: in a suggestion, a bug in a rule (never client input)."""


def card_uuid(hook_instance: str, rule: str, part: str = "") -> str:
    return str(uuid.uuid5(CARD_NAMESPACE, f"{hook_instance}|{rule}|{part}"))


def _summary(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) < SUMMARY_MAX else text[: SUMMARY_MAX - 2].rstrip() + "…"


def validate_fhir_r4(resource: dict[str, Any]) -> None:
    """Validate a resource with the full fhir.resources R4B model (R4-compatible): every suggestion we emit,
    and with CDS_STRICT_VALIDATION every resource we read."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype.isalpha():
        raise InvalidSuggestion(f"resource has no valid resourceType: {rtype!r}")
    try:
        module = importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}")
        model = getattr(module, rtype)
        model.model_validate(resource)
    except Exception as exc:  # pydantic ValidationError or import error: both a rule bug
        raise InvalidSuggestion(f"{rtype} is not valid FHIR R4: {exc}") from exc


def build_card(finding: Finding, hook_instance: str, knowledge: Knowledge, cited_on: str | None = None) -> dict[str, Any]:
    """One card; ``cited_on`` names the earlier card of the response that already cites the same source (the
    footer then points to it instead of repeating the citation; ``source`` still carries label and url)."""
    src = knowledge.source(finding.source)
    card: dict[str, Any] = {
        "uuid": card_uuid(hook_instance, finding.rule),
        "summary": _summary(finding.summary),
        "detail": render_sections(finding.detail, _source_line(knowledge, finding, cited_on), finding.summary),
        "indicator": finding.indicator,
        "source": {
            "label": src.title,
            "url": src.url,
            "topic": {"system": knowledge.topic_system, "code": finding.rule, "display": finding.rule.replace("-", " ")},
        },
    }
    if finding.suggestions:
        suggestions = []
        for i, s in enumerate(finding.suggestions):
            actions = []
            for a in s.actions:
                action: dict[str, Any] = {"type": a.type, "description": a.description}
                if a.resource is not None:
                    validate_fhir_r4(a.resource)
                    action["resource"] = a.resource
                if a.resource_id is not None:
                    action["resourceId"] = a.resource_id
                actions.append(action)
            sug: dict[str, Any] = {"label": s.label, "uuid": card_uuid(hook_instance, finding.rule, s.key or str(i))}
            if s.is_recommended:
                sug["isRecommended"] = True
            if actions:
                sug["actions"] = actions
            suggestions.append(sug)
        card["suggestions"] = suggestions
        card["selectionBehavior"] = finding.selection_behavior
    if finding.override_reasons:
        card["overrideReasons"] = [{"system": o.system, "code": o.code, "display": o.display} for o in finding.override_reasons]
    return card


def _source_line(knowledge: Knowledge, finding: Finding, cited_on: str | None = None) -> str:
    """The citation once per response (later cards citing the same source point to the first), the knowledge
    version and the rule."""
    src = knowledge.source(finding.source)
    cited = f"As on {cited_on}" if cited_on else src.citation
    return f"_{cited.rstrip('.')}. Knowledge version {knowledge.version}; rule `{finding.rule}`._"


def gap_finding(gaps: Iterable[DataGap], indicator: Indicator, max_items: int = 12) -> Finding | None:
    """One card naming what could not be read (never guessed around); ``indicator`` from the knowledge's
    indicator policy (``data-gaps``: ``partial``)."""
    gaps = list(gaps)
    if not gaps:
        return None
    unavailable = [g for g in gaps if g.kind == "prefetch-unavailable"]
    lines = ["Some data could not be read, so advice that depends on it may be missing:", ""]
    for g in gaps[:max_items]:
        lines.append(f"- {g.what}")
    if len(gaps) > max_items:
        lines.append(f"- … and {len(gaps) - max_items} more")
    what = "data sources" if unavailable else "entries"
    n = len(unavailable) if unavailable else len(gaps)
    return Finding(
        rule=GAP_RULE,
        indicator=indicator,
        summary=f"Magnesium advice is based on partial data: {n} {what} could not be read",
        detail="\n".join(lines),
        facts=tuple({"kind": "gap", **g.to_json()} for g in gaps),
        source="local-policy",
    )
