"""The rule registry: every rule the service evaluates, with its topic code (= rule id)."""
from __future__ import annotations

from .base import Finding, Rule, RuleContext
from .hypomagnesemia import hypomagnesemia

RULES: tuple[Rule, ...] = (
    Rule("hypomagnesemia", "Low magnesium", "patient", hypomagnesemia,
         relevant_to_orders=lambda ctx: bool(ctx.orders_in_scope()),
         suppresses=()),
)

RULES_BY_ID = {r.id: r for r in RULES}

__all__ = ["RULES", "RULES_BY_ID", "Finding", "Rule", "RuleContext"]
