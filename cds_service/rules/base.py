"""Rule plumbing: the context a rule reads, the finding it returns, and the registry.

Rules are pure functions over a PatientRecord, the knowledge and an explicit ``now``:
no Flask, no requests, no clock reads.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from ..definitions import ORDER_HOOKS
from ..knowledge import Knowledge
from ..record.kidney import KidneyFunction, assess_kidney
from ..record.model import LabResult, MedicationUse, PatientRecord

Indicator = Literal["info", "warning", "critical"]

# Section markers a rule may put among its detail lines: every line after one goes to that section of the card
# (cards/sections.py; lines before any marker are placed by what they are).
VALUES, ASSESSMENT, TODO = "§values", "§assessment", "§todo"
INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class RuleContext:
    record: PatientRecord
    knowledge: Knowledge
    now: datetime
    hook: str  # patient-view | order-select | order-sign

    @cached_property
    def kidney(self) -> KidneyFunction:
        """The call's one kidney assessment (record/kidney.py), shared by every rule."""
        return assess_kidney(self.record, self.knowledge, self.now)

    @cached_property
    def age(self) -> int | None:
        return self.record.age(self.now.date())

    @property
    def child(self) -> bool:
        """Under the knowledge's adult age: no adult dose on any card or suggestion."""
        return self.age is not None and self.age < float(self.knowledge.policy("adult_age_years"))

    @property
    def order_hook(self) -> bool:
        return self.hook in ORDER_HOOKS

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

    def indicator(self, rule: str, case: str) -> Indicator:
        """The knowledge's indicator policy for ``rule`` in ``case`` (knowledge.yaml ``indicators``)."""
        return self.knowledge.indicator(rule, case)  # type: ignore[return-value]


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


def with_action(summary: str, action: str, sep: str = ": ") -> str:
    """A summary that says what to do, when it still fits the card's summary limit (< 140 characters)."""
    longer = f"{summary}{sep}{action}"
    return longer if len(longer) < 140 else summary


def days_ago_text(now: datetime | None, when: datetime) -> str:
    """'today' / '1 day ago' / '12 days ago' (or '' without a ``now``)."""
    if now is None:
        return ""
    days = (now - when).days
    if days <= 0:
        return "today" if days == 0 else "dated after now"
    return "1 day ago" if days == 1 else f"{days} days ago"


def digits_for(value: float, digits: int, *cutoffs: float) -> int:
    """The decimals to show ``value`` with so that, rounded, it sits on the same side of every cut-off as the
    exact value (never '1.80 ... below 1.80'); at least ``digits``, at most 4."""
    d = digits
    while d < 4:
        r = round(value, d)
        if all((r < c) == (value < c) and (r > c) == (value > c) for c in cutoffs):
            break
        d += 1
    return d


def shown_pair(value: float, limit: float, digits: int) -> tuple[str, str]:
    """A value and its cut-off written with one precision at which their order is the exact order."""
    d = max(digits_for(value, digits, limit), digits_for(limit, digits, value))
    return f"{value:.{d}f}", f"{limit:.{d}f}"


# units as people write them (UCUM codes are for machines)
_UNIT_DISPLAY = {"mL/min/{1.73_m2}": "mL/min/1.73 m²", "{pill}": "tablet", "{tbl}": "tablet", "{capsule}": "capsule",
                 "mg/(24.h)": "mg/24 h", "mmol/(24.h)": "mmol/24 h", "[lb_av]": "lb", "[in_i]": "in", "meq": "mEq",
                 "meq/L": "mEq/L", "ug": "µg"}


def display_unit(unit: str) -> str:
    return _UNIT_DISPLAY.get(unit, unit)


def short_value(r: LabResult, digits: int = 2, cutoffs: tuple[float, ...] = ()) -> str:
    """The value in the canonical unit for summaries: '1.10 mg/dL'; a censored value keeps its comparator (and the
    lab's own digits when the unit is unchanged): '<0.5 mg/dL', never '0.50'. Near a cut-off, enough digits."""
    cmp = r.comparator or ""
    if cmp and r.original_unit == r.unit:
        return f"{cmp}{r.original_value:g} {display_unit(r.unit)}"
    d = digits_for(r.value, digits, *cutoffs)
    return f"{cmp}{r.value:.{d}f} {display_unit(r.unit)}"


def value_text(r: LabResult, digits: int = 2, cutoffs: tuple[float, ...] = ()) -> str:
    """The value as reported, for card details: ``short_value`` plus the reported value after a unit conversion
    ('<0.49 mg/dL (reported <0.2 mmol/L)')."""
    shown = short_value(r, digits, cutoffs)
    if r.original_unit != r.unit:
        shown += f" (reported {r.comparator or ''}{r.original_value:g} {display_unit(r.original_unit)})"
    return shown


def fmt_lab(r: LabResult, digits: int = 2, now: datetime | None = None, cutoffs: tuple[float, ...] = (),
            reference: bool = False) -> str:
    """'1.10 mg/dL (reported 0.45 mmol/L) on 2026-11-20 (5 days ago)' style text for cards (comparators kept);
    with ``reference`` the Observation follows the age: '(5 days ago; Observation/x)'. The one lab formatter."""
    notes = [n for n in (days_ago_text(now, r.effective), r.source.reference if reference else "") if n]
    return f"{value_text(r, digits, cutoffs)} on {r.effective.date().isoformat()}" + (f" ({'; '.join(notes)})" if notes else "")


def lab_fact_line(r: LabResult, label: str | None = None, digits: int = 2, now: datetime | None = None,
                  cutoffs: tuple[float, ...] = ()) -> str:
    name = label or r.analyte.replace("_", " ")
    return f"- {name}: **{fmt_lab(r, digits, now, cutoffs)}** ({r.source.reference})"
