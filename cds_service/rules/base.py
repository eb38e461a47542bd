"""Rule plumbing: the context a rule reads, the finding it returns, and the registry.

Rules are pure functions over a PatientRecord, the knowledge and an explicit ``now``:
no Flask, no requests, no clock reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Literal

from ..knowledge import Knowledge
from ..record.model import LabResult, MedicationUse, PatientRecord

Indicator = Literal["info", "warning", "critical"]
INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class RuleContext:
    record: PatientRecord
    knowledge: Knowledge
    now: datetime
    hook: str  # patient-view | order-select | order-sign

    @property
    def order_hook(self) -> bool:
        return self.hook in ("order-select", "order-sign")

    def orders_in_scope(self) -> list[MedicationUse]:
        """order-select: the selected draft orders; order-sign: every draft order."""
        drafts = self.record.draft_medications
        if self.hook == "order-select":
            return [m for m in drafts if m.selected]
        if self.hook == "order-sign":
            return list(drafts)
        return []

    def threshold(self, key: str) -> float:
        return float(self.knowledge.threshold(key).value)

    def policy(self, key: str) -> Any:
        return self.knowledge.policy(key)


@dataclass(frozen=True)
class Action:
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resource_id: str | None = None  # for delete: relative reference, e.g. "MedicationRequest/123"


@dataclass(frozen=True)
class Suggestion:
    label: str
    actions: tuple[Action, ...] = ()
    is_recommended: bool = False
    key: str = ""  # stable part of the suggestion uuid


@dataclass(frozen=True)
class OverrideReason:
    code: str
    display: str
    system: str = "https://cds-magnesium.example.org/CodeSystem/override-reason"


@dataclass(frozen=True)
class Finding:
    """What a rule concluded; cards/ turns it into a CDS Hooks card."""

    rule: str
    indicator: Indicator
    summary: str
    detail: str  # Markdown
    facts: tuple[dict[str, Any], ...] = ()  # normalised evidence (audit + replay)
    source: str = "guidance"  # knowledge source id cited by the card
    suggestions: tuple[Suggestion, ...] = ()
    override_reasons: tuple[OverrideReason, ...] = ()
    selection_behavior: Literal["at-most-one", "any"] = "at-most-one"


RuleFn = Callable[[RuleContext], "Finding | None"]


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    scope: Literal["patient", "order"]
    evaluate: RuleFn
    # patient-level rules: evaluated on order hooks only when this says the drafted orders make them relevant
    relevant_to_orders: Callable[[RuleContext], bool] | None = None
    suppresses: tuple[str, ...] = ()

    def applies(self, ctx: RuleContext) -> bool:
        if self.scope == "order":
            return ctx.order_hook
        if not ctx.order_hook:
            return True
        return self.relevant_to_orders is not None and self.relevant_to_orders(ctx)


def short_value(r: LabResult, digits: int = 2) -> str:
    """The value in the canonical unit for summaries: '1.10 mg/dL'; a censored value keeps its comparator (and the
    lab's own digits when the unit is unchanged): '<0.5 mg/dL', never '0.50'."""
    cmp = r.comparator or ""
    if cmp and r.original_unit == r.unit:
        return f"{cmp}{r.original_value:g} {r.unit}"
    return f"{cmp}{r.value:.{digits}f} {r.unit}"


def value_text(r: LabResult, digits: int = 2) -> str:
    """The value as reported, for card details: ``short_value`` plus the reported value after a unit conversion
    ('<0.49 mg/dL (reported <0.2 mmol/L)')."""
    shown = short_value(r, digits)
    if r.original_unit != r.unit:
        shown += f" (reported {r.comparator or ''}{r.original_value:g} {r.original_unit})"
    return shown


def fmt_lab(r: LabResult, digits: int = 2) -> str:
    """'1.10 mg/dL (reported 0.45 mmol/L) on 2026-11-20' style text for cards (comparators kept: '<0.5 mg/dL')."""
    return f"{value_text(r, digits)} on {r.effective.date().isoformat()}"


def lab_fact_line(r: LabResult, label: str | None = None, digits: int = 2) -> str:
    name = label or r.analyte.replace("_", " ")
    return f"- {name}: **{fmt_lab(r, digits)}** ({r.source.reference})"
