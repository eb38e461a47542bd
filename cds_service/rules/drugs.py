"""Magnesium-wasting drugs: active while magnesium is low, and long use without a magnesium check."""
from __future__ import annotations

from datetime import timedelta

from ..knowledge import Monitoring
from ..record.model import MedicationUse
from .base import Action, Finding, RuleContext, Suggestion, lab_fact_line, short_value
from .common import (
    GENERAL_OVERRIDES,
    analyte_codes,
    days_since,
    drafted_test,
    lab_service_request,
    magnesium_is_low,
    policy_note,
    unreadable_facts,
    unreadable_note,
)
from .medications import (
    active_with_class,
    exposure_label,
    exposure_lines,
    group_by_ingredient,
    group_label,
    grouped_med_lines,
    local_route_lines,
    local_route_with_class,
    planned_with_class,
    recent_exposures,
    wasting_classes,
)


def _drug_lines(ctx: RuleContext, meds) -> list[str]:
    """Each drug once (its orders below it), its wasting classes with mechanism and source, long PPI use."""
    k = ctx.knowledge
    lines: list[str] = []
    for group in group_by_ingredient(meds):
        lines += grouped_med_lines(ctx, group)
        m = group[0]
        for cls in sorted(c for c in m.classes() if k.model.classes[c].wasting):
            c = k.model.classes[cls]
            lines.append(f"  - {c.display}: {c.mechanism} ({k.source(c.source).citation})")
        starts = [x.start for x in group if x.start is not None]
        if m.has_class("ppi") and starts:
            long_term = ctx.threshold("ppi_long_term_days")
            d = days_since(ctx, min(starts))
            if d is not None and d >= long_term:
                lines.append(f"  - on a PPI for {d} days (>= {long_term:g}): the FDA 2011 warning applies; "
                             "about a quarter of cases are not corrected by supplements alone, stopping the PPI may be needed")
    return lines


def magnesium_wasting_drug(ctx: RuleContext) -> Finding | None:
    """Magnesium-wasting drugs (knowledge classes with wasting: true) while the latest magnesium is low: the ones
    taken now by a systemic route, and recent exposure (a course on hold, or completed/stopped within its class's
    window: platinum, EGFR antibodies, amphotericin B, foscarnet, pentamidine), each drug once with its orders and
    dates. Planned (not started) drugs and local-route products (eye, ear, skin, airway, ...) are listed apart and
    are never named as the cause.

    On order hooks: relevant when a drafted order is a magnesium or potassium product or a systemic wasting drug.
    """
    mg = magnesium_is_low(ctx)
    if mg is None:
        return None
    wasting = wasting_classes(ctx)
    meds = active_with_class(ctx, *wasting)
    exposed = recent_exposures(ctx, *wasting)
    if not meds and not exposed:
        return None
    labels = [group_label(g) for g in group_by_ingredient(meds)] + [exposure_label(g) for g in group_by_ingredient(exposed)]
    names = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
    if meds:
        summary = f"Magnesium {short_value(mg)} on {mg.effective.date()} while on magnesium-wasting drug(s): {names}"
    else:
        summary = f"Magnesium {short_value(mg)} on {mg.effective.date()} after recent magnesium-wasting drug(s): {names}"
    lines = ["Latest magnesium is low:", "", lab_fact_line(mg, "magnesium", now=ctx.now), *unreadable_note(ctx, mg), ""]
    if meds:
        lines += [f"Active magnesium-wasting drug{'s' if len(group_by_ingredient(meds)) > 1 else ''}:", ""]
        lines += _drug_lines(ctx, meds)
    if exposed:
        if meds:
            lines.append("")
        lines += ["Recent exposure (on hold, or finished within the class's window; wasting can outlast the course):", ""]
        for group in group_by_ingredient(exposed):
            lines += exposure_lines(ctx, group)
            k = ctx.knowledge
            for cls in sorted(c for c in group[0].classes() if k.model.classes[c].wasting):
                c = k.model.classes[cls]
                lines.append(f"  - {c.display}: {c.mechanism} ({k.source(c.source).citation})")
    planned = planned_with_class(ctx, *wasting)
    if planned:
        lines += ["", "Planned, not started (not a cause of this low magnesium; check magnesium before it starts):", ""]
        lines += grouped_med_lines(ctx, planned)
    local = local_route_with_class(ctx, *wasting)
    if local:
        lines += ["", "Not counted (local route):", ""] + local_route_lines(ctx, local)
    lines += ["", "Review whether each is still needed, or whether an alternative without magnesium wasting exists; "
                  "if it must continue, monitor magnesium and replace it."]
    facts = (mg.to_fact(),) + tuple(m.to_fact() for m in meds + exposed + planned + local) + tuple(unreadable_facts(ctx, mg))
    return Finding(rule="magnesium-wasting-drug", indicator=ctx.indicator("magnesium-wasting-drug", "low"), summary=summary,
                   detail="\n".join(lines),
                   facts=facts, source="guidance", override_reasons=GENERAL_OVERRIDES)


def _monitored_classes(ctx: RuleContext, m: MedicationUse) -> list[str]:
    """The classes of ``m`` whose label or guideline recommends magnesium monitoring (knowledge ``monitoring``)."""
    classes = ctx.knowledge.model.classes
    return sorted(c for c in m.classes() if c in classes and classes[c].monitoring is not None)


def _monitoring(ctx: RuleContext, cls: str) -> Monitoring:
    """The ``monitoring`` entry of a class ``_monitored_classes`` returned."""
    mon = ctx.knowledge.model.classes[cls].monitoring
    if mon is None:
        raise ValueError(f"class {cls!r} has no monitoring entry")
    return mon


def _time_on(ctx: RuleContext, m: MedicationUse) -> timedelta:
    """How long ``m`` has been taken (zero without a start date)."""
    return ctx.now - m.start if m.start is not None else timedelta(0)


def _past_min_days(ctx: RuleContext, m: MedicationUse) -> list[str]:
    """The monitored classes of ``m`` it has been taken longer than the class's min_days for."""
    return [c for c in _monitored_classes(ctx, m) if _time_on(ctx, m) > timedelta(days=_monitoring(ctx, c).min_days)]


def magnesium_monitoring_gap(ctx: RuleContext) -> Finding | None:
    """On a drug whose label or guideline recommends magnesium monitoring (knowledge classes with `monitoring`:
    PPI, platinum, EGFR antibodies, amphotericin B, foscarnet), taken longer than that class's `min_days`, with no
    magnesium result in the monitoring window: suggest checking magnesium (info). Classes without such a source
    (loop and thiazide diuretics among them) never get this card. Drugs without a recorded start date do not count
    (duration unknown); when labs could not be read at all the rule stays silent (the data-gaps card says so).

    On order hooks: relevant when a drafted order is a wasting drug or a magnesium/potassium product.
    """
    if ctx.record.available.get("labs") is False:
        return None
    window = float(ctx.policy("monitoring_window_days"))
    monitored = tuple(k for k, c in ctx.knowledge.model.classes.items() if c.monitoring is not None)
    long_users = [m for m in active_with_class(ctx, *monitored) if m.start is not None and _past_min_days(ctx, m)]
    if not long_users:
        return None
    latest = ctx.record.latest("magnesium")
    if latest is not None and ctx.now - latest.effective <= timedelta(days=window):
        return None
    longest = max(long_users, key=lambda m: _time_on(ctx, m))
    last = f"last magnesium {latest.effective.date()}" if latest is not None else "no magnesium result"
    summary = f"No magnesium check in {window:g} days ({last}) while on {longest.label} for {days_since(ctx, longest.start)} days"
    lines = [f"Drug{'s' if len(long_users) > 1 else ''} whose label or guideline recommends magnesium monitoring:", ""]
    lines += _drug_lines(ctx, long_users)
    lines += ["", "Why magnesium is checked on these drugs:", ""]
    k = ctx.knowledge
    for cls in sorted({c for m in long_users for c in _past_min_days(ctx, m)}):
        mon = _monitoring(ctx, cls)
        after = f"; counted after {mon.min_days} days on it" if mon.min_days else ""
        lines.append(f"- {k.model.classes[cls].display}: {mon.says} ({k.source(mon.source).citation}){after}")
    lines += ["", "Magnesium:"]
    lines.append(lab_fact_line(latest, "magnesium", now=ctx.now) + f" — older than {window:g} days" if latest is not None
                 else f"- no magnesium result in the record (labs are read back {ctx.policy('lookback_days')} days)")
    lines += ["", "Check serum magnesium (and replace it if low).", "",
              policy_note(ctx, "monitoring_window_days")]
    suggestions: tuple[Suggestion, ...] = ()
    if not drafted_test(ctx, analyte_codes(ctx, "magnesium")):
        sr = lab_service_request(ctx, "19123-9", "Monitoring on a magnesium-wasting drug")
        suggestions = (Suggestion("Order serum magnesium", (Action("create", "Order serum magnesium (LOINC 19123-9)", sr),),
                                  is_recommended=True, key="order-magnesium"),)
    facts = tuple(m.to_fact() for m in long_users) + ((latest.to_fact(),) if latest is not None else ())
    cited = _monitoring(ctx, _past_min_days(ctx, longest)[0]).source  # the card cites what recommends the check
    return Finding(rule="magnesium-monitoring-gap", indicator=ctx.indicator("magnesium-monitoring-gap", "gap"), summary=summary,
                   detail="\n".join(lines),
                   facts=facts, source=cited, suggestions=suggestions)
