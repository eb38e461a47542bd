"""Low magnesium (patient level)."""
from __future__ import annotations

import math

from .base import Finding, RuleContext, lab_fact_line, short_value
from .common import GENERAL_OVERRIDES, below, low_limit, magnesium_is_low, mg_mmol, unreadable_note


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
    severe threshold whatever the lab range. Suppressed by `refractory-hypomagnesemia` (registry).
    On order hooks: relevant when a drafted order is a magnesium, potassium or calcium product,
    an active vitamin D analogue or a magnesium-wasting drug (the prescriber is acting on it).
    """
    r = magnesium_is_low(ctx)
    if r is None:
        return None
    limit, limit_source = low_limit(ctx, r, "magnesium_low")
    severe = ctx.threshold("magnesium_severe")
    critical = below(r, severe)
    # a censored "<0.9" lies below 0.9 (grade 3 at least): grade the largest value it allows, say "at least"
    grade = ctcae_grade(ctx, math.nextafter(r.value, 0.0) if r.comparator == "<" else r.value)
    at_least = "at least " if r.comparator in ("<", "<=") and grade < 4 else ""
    indicator = "critical" if critical else "warning"
    day = r.effective.date().isoformat()
    summary = (f"{'Severe h' if critical else 'H'}ypomagnesemia: magnesium {short_value(r)} "
               f"({r.comparator or ''}{mg_mmol(ctx, r.value):.2f} mmol/L) on {day}")
    lines = [
        f"Latest serum magnesium is below range ({limit:.2f} mg/dL, {limit_source}); CTCAE grade {at_least}{grade}.",
        "",
        lab_fact_line(r, "magnesium"),
        *unreadable_note(ctx, r),
        "",
        f"Low below the lab range (or below {severe} mg/dL, the guidance's severe threshold).",
    ]
    if critical:
        lines += [
            "",
            f"Below {severe} mg/dL is severe hypomagnesemia: if symptomatic, magnesium sulfate "
            f"{ctx.threshold('iv_mgso4_loading_min_g'):g}-{ctx.threshold('iv_mgso4_loading_max_g'):g} g IV over "
            f"{ctx.threshold('iv_mgso4_loading_minutes'):g} min, then {ctx.threshold('iv_mgso4_infusion_min_g'):g}-"
            f"{ctx.threshold('iv_mgso4_infusion_max_g'):g} g in {ctx.threshold('iv_mgso4_infusion_ml'):g} mL over "
            f"{ctx.threshold('iv_mgso4_infusion_hours'):g} h, after checking kidney function.",
        ]
    else:
        lines += ["", "Check kidney function, then replace orally (magnesium oxide at night); "
                      "correct magnesium before treating low potassium or calcium."]
    return Finding(rule="hypomagnesemia", indicator=indicator, summary=summary, detail="\n".join(lines),
                   facts=(r.to_fact(),), source="guidance", override_reasons=GENERAL_OVERRIDES)
