"""Low magnesium (patient level)."""
from __future__ import annotations

import math

from .base import ASSESSMENT, TODO, VALUES, Finding, RuleContext, lab_fact_line, short_value, shown_pair, with_action
from .common import (
    GENERAL_OVERRIDES,
    below,
    low_limit,
    magnesium_is_low,
    mg_mmol,
    order_magnesium,
    stale_low_magnesium,
    unreadable_note,
)
from .regimens import iv_regimen_text, oral_regimen, paediatric_text


def ctcae_grade(ctx: RuleContext, value_mg_dl: float) -> int:
    """CTCAE v5 grade of a low magnesium (1: < LLN-1.2; 2: < 1.2-0.9; 3: < 0.9-0.7; 4: < 0.7 mg/dL)."""
    if value_mg_dl < ctx.threshold("magnesium_ctcae_g4"):
        return 4
    if value_mg_dl < ctx.threshold("magnesium_ctcae_g3"):
        return 3
    if value_mg_dl < ctx.threshold("magnesium_severe"):
        return 2
    return 1


def hypomagnesemia(ctx: RuleContext) -> Finding | None:
    """Latest serum magnesium below range; critical below the severe threshold (guidance: < 1.2 mg/dL).

    Low = below the Observation's own referenceRange (else the 1.8 mg/dL default), or below the
    severe threshold whatever the lab range. Treatment advice only from a value within the advice window
    (knowledge `magnesium_advice_max_age_days`); an older low value gives 're-measure' (info) instead. A child
    gets no adult dose. Suppressed by `refractory-hypomagnesemia` (registry).
    On order hooks: relevant when a drafted order is a magnesium, potassium or calcium product,
    an active vitamin D analogue or a magnesium-wasting drug (the prescriber is acting on it).
    """
    r = magnesium_is_low(ctx)
    if r is None:
        return _stale(ctx)
    limit, limit_source = low_limit(ctx, r, "magnesium_low")
    severe = ctx.threshold("magnesium_severe")
    critical = below(r, severe)
    # a censored "<0.9" lies below 0.9 (grade 3 at least): grade the largest value it allows, say "at least"
    grade = ctcae_grade(ctx, math.nextafter(r.value, 0.0) if r.comparator == "<" else r.value)
    at_least = "at least " if r.comparator in ("<", "<=") and grade < 4 else ""
    indicator = ctx.indicator("hypomagnesemia", "severe" if critical else "low")
    day = r.effective.date().isoformat()
    value, shown_limit = shown_pair(r.value, limit, 2)
    value = short_value(r) if r.comparator else f"{value} mg/dL"
    mmol, _ = shown_pair(mg_mmol(ctx, r.value), mg_mmol(ctx, limit), 2)
    summary = (f"{'Severe h' if critical else 'H'}ypomagnesemia: magnesium {value} "
               f"({r.comparator or ''}{mmol} mmol/L) on {day}")
    if ctx.child:
        action = "replace by weight (child)"
    elif critical:
        action = "IV magnesium if symptomatic" + (", reduced for the kidneys" if ctx.kidney.below else "")
    else:
        action = "replace orally at night" + (", within the renal ceiling" if ctx.kidney.below else "")
    summary = with_action(summary, action)
    lines = [
        ASSESSMENT,
        f"Latest serum magnesium is below the lower limit {shown_limit} mg/dL ({limit_source}); "
        f"CTCAE grade {at_least}{grade}.",
        "",
        VALUES,
        lab_fact_line(r, "magnesium", now=ctx.now, cutoffs=(limit, severe)),
        *unreadable_note(ctx, r),
        "",
        TODO,
    ]
    if ctx.child:
        lines += [paediatric_text(ctx)]
    elif critical:
        lines += [f"Below {severe:g} mg/dL is severe hypomagnesemia: if symptomatic, {iv_regimen_text(ctx)}; "
                  "check kidney function first."]
    else:
        oral = oral_regimen(ctx)
        assert oral is not None
        lines += [f"Check kidney function, then replace orally: {oral.text}. "
                  "Correct magnesium before treating low potassium or calcium."]
    return Finding(rule="hypomagnesemia", indicator=indicator, summary=summary, detail="\n".join(lines),
                   facts=(r.to_fact(),), source="guidance", override_reasons=GENERAL_OVERRIDES)


def _stale(ctx: RuleContext) -> Finding | None:
    """The latest magnesium was low but is too old to treat on: ask for a new one (info, no treatment advice)."""
    r = stale_low_magnesium(ctx)
    if r is None:
        return None
    days = (ctx.now - r.effective).days
    window = ctx.policy("magnesium_advice_max_age_days")
    summary = f"Last magnesium was low ({r.comparator or ''}{r.value:.2f} mg/dL) {days} days ago, on {r.effective.date()}: re-measure"
    lines = [ASSESSMENT, f"The latest magnesium result is low but older than {window} days.", "",
             VALUES, lab_fact_line(r, "magnesium", now=ctx.now), "", TODO,
             "Measure magnesium again before any treatment decision."]
    return Finding(rule="hypomagnesemia", indicator=ctx.indicator("hypomagnesemia", "stale"), summary=summary, detail="\n".join(lines),
                   facts=(r.to_fact(),), source="guidance", suggestions=order_magnesium(ctx, "Last magnesium low but not recent"))
