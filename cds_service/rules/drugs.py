"""Magnesium-wasting drugs: active while magnesium is low, and long use without a magnesium check."""
from __future__ import annotations

from datetime import timedelta

from .base import Action, Finding, RuleContext, Suggestion, lab_fact_line, short_value
from .common import (
    GENERAL_OVERRIDES,
    active_with_class,
    days_since,
    drafted_test,
    analyte_codes,
    lab_service_request,
    magnesium_is_low,
    med_line,
    policy_note,
    wasting_classes,
)


def _drug_lines(ctx: RuleContext, meds) -> list[str]:
    k = ctx.knowledge
    lines: list[str] = []
    for m in meds:
        lines.append(med_line(ctx, m))
        for cls in sorted(c for c in m.classes() if k.model.classes[c].wasting):
            c = k.model.classes[cls]
            lines.append(f"  - {c.display}: {c.mechanism} ({k.source(c.source).citation})")
        if m.has_class("ppi") and m.start is not None:
            long_term = ctx.threshold("ppi_long_term_days")
            d = days_since(ctx, m.start)
            if d is not None and d >= long_term:
                lines.append(f"  - on a PPI for {d} days (>= {long_term:g}): the FDA 2011 warning applies; "
                             "about a quarter of cases are not corrected by supplements alone, stopping the PPI may be needed")
    return lines


def magnesium_wasting_drug(ctx: RuleContext) -> Finding | None:
    """Active magnesium-wasting drugs (knowledge classes with wasting: true) while the latest magnesium is
    low: each drug, its class and mechanism, since when (and that a match came from text).

    On order hooks: relevant when a drafted order is a magnesium or potassium product or a wasting drug.
    """
    mg = magnesium_is_low(ctx)
    if mg is None:
        return None
    meds = active_with_class(ctx, *wasting_classes(ctx))
    if not meds:
        return None
    names = ", ".join(m.label for m in meds[:3]) + (f" and {len(meds) - 3} more" if len(meds) > 3 else "")
    summary = f"Magnesium {short_value(mg)} on {mg.effective.date()} while on magnesium-wasting drug(s): {names}"
    lines = ["Latest magnesium is low:", "", lab_fact_line(mg, "magnesium"), "",
             f"Active magnesium-wasting drug{'s' if len(meds) > 1 else ''}:", ""]
    lines += _drug_lines(ctx, meds)
    lines += ["", "Review whether each is still needed, or whether an alternative without magnesium wasting exists; "
                  "if it must continue, monitor magnesium and replace it."]
    return Finding(rule="magnesium-wasting-drug", indicator="warning", summary=summary, detail="\n".join(lines),
                   facts=(mg.to_fact(),) + tuple(m.to_fact() for m in meds), source="guidance",
                   override_reasons=GENERAL_OVERRIDES)


def magnesium_monitoring_gap(ctx: RuleContext) -> Finding | None:
    """On a wasting drug longer than the policy's minimum with no magnesium result in the monitoring window:
    suggest checking magnesium (info). Drugs without a recorded start date do not count (duration unknown);
    when labs could not be read at all the rule stays silent (the data-gaps card says so).

    On order hooks: relevant when a drafted order is a wasting drug or a magnesium/potassium product.
    """
    if ctx.record.available.get("labs") is False:
        return None
    min_days = float(ctx.policy("monitoring_min_drug_days"))
    window = float(ctx.policy("monitoring_window_days"))
    long_users = [m for m in active_with_class(ctx, *wasting_classes(ctx))
                  if m.start is not None and ctx.now - m.start > timedelta(days=min_days)]
    if not long_users:
        return None
    latest = ctx.record.latest("magnesium")
    if latest is not None and ctx.now - latest.effective <= timedelta(days=window):
        return None
    longest = max(long_users, key=lambda m: ctx.now - m.start)
    last = f"last magnesium {latest.effective.date()}" if latest is not None else "no magnesium result"
    summary = f"No magnesium check in {window:g} days ({last}) while on {longest.label} for {days_since(ctx, longest.start)} days"
    lines = [f"Magnesium-wasting drug{'s' if len(long_users) > 1 else ''} taken for more than {min_days:g} days:", ""]
    lines += _drug_lines(ctx, long_users)
    lines += ["", "Magnesium:"]
    lines.append(lab_fact_line(latest, "magnesium") + f" — older than {window:g} days" if latest is not None
                 else f"- no magnesium result in the record (labs are read back {ctx.policy('lookback_days')} days)")
    lines += ["", "Check serum magnesium (and replace it if low).", "",
              policy_note(ctx, "monitoring_min_drug_days", "monitoring_window_days")]
    suggestions = ()
    if not drafted_test(ctx, analyte_codes(ctx, "magnesium")):
        sr = lab_service_request(ctx, "19123-9", "Monitoring on a magnesium-wasting drug")
        suggestions = (Suggestion("Order serum magnesium", (Action("create", "Order serum magnesium (LOINC 19123-9)", sr),),
                                  is_recommended=True, key="order-magnesium"),)
    facts = tuple(m.to_fact() for m in long_users) + ((latest.to_fact(),) if latest is not None else ())
    return Finding(rule="magnesium-monitoring-gap", indicator="info", summary=summary, detail="\n".join(lines),
                   facts=facts, source="guidance", suggestions=suggestions)
