"""Decide: the rules over a built record, then the cards (one problem, one card).

Pure: the same record, knowledge, hook and ``now`` give the same decision. Used by the service for every
call and by audit replay over stored record snapshots.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .cards import GAP_RULE, build_card, gap_finding
from .cards.compose import CARD_NAME, compose, source_seen
from .knowledge import Knowledge
from .record.model import PatientRecord
from .rules import RULES
from .rules.base import Finding, Rule, RuleContext
from .rules.common import with_unreadable_named

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What the rules made of one record: the cards, and for the audit how they came about."""

    cards: list[dict[str, Any]]
    findings: list[Finding]
    rules_evaluated: list[str]
    rules_fired: list[str]
    rule_errors: dict[str, str]  # rule id -> the error it raised (the rule is skipped, never fatal)
    gaps: list[dict[str, Any]]  # the record's data gaps and notes (notes: audit only, no card)
    facts: dict[str, list[dict[str, Any]]]  # rule id -> the facts its finding stands on

    def response(self) -> dict[str, Any]:
        """The CDS Hooks response body."""
        return {"cards": self.cards}


def evaluate_rules(ctx: RuleContext, rules: tuple[Rule, ...] = RULES) -> tuple[list[Finding], list[str], dict[str, str]]:
    """Run every applicable rule; a failing rule is logged and reported, never fatal."""
    findings: list[Finding] = []
    evaluated: list[str] = []
    errors: dict[str, str] = {}
    for rule in rules:
        if not rule.applies(ctx):
            continue
        evaluated.append(rule.id)
        try:
            f = rule.evaluate(ctx)
        except Exception as exc:
            log.exception("rule %s failed", rule.id)
            errors[rule.id] = f"{type(exc).__name__}: {exc}"
            continue
        if f is not None:
            findings.append(with_unreadable_named(ctx, f))  # issue 10: newer unreadable results named on every card
    suppressed = {s for rule in rules if rule.id in {f.rule for f in findings} for s in rule.suppresses}
    return [f for f in findings if f.rule not in suppressed], evaluated, errors


def decide(record: PatientRecord, knowledge: Knowledge, hook: str, hook_instance: str, now: datetime) -> Decision:
    """Rules + cards over a built record."""
    ctx = RuleContext(record=record, knowledge=knowledge, now=now, hook=hook)
    findings, evaluated, errors = evaluate_rules(ctx)
    gap = gap_finding(record.gaps, ctx.indicator(GAP_RULE, "partial"))
    if gap is not None:
        findings.append(gap)
    findings = compose(ctx, findings, [r.id for r in RULES] + [GAP_RULE])  # one problem, one card
    cited = source_seen(findings)
    cards = [build_card(f, hook_instance, knowledge,
                        f"the {CARD_NAME.get(cited[id(f)].rule, cited[id(f)].rule)} card" if id(f) in cited else None)
             for f in findings]
    return Decision(
        cards=cards,
        findings=findings,
        rules_evaluated=evaluated + ([GAP_RULE] if gap else []),
        rules_fired=[f.rule for f in findings],
        rule_errors=errors,
        gaps=[g.to_json() for g in record.gaps + record.notes],
        facts={f.rule: list(f.facts) for f in findings},
    )
