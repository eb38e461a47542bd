"""Kidney function before magnesium replacement (creatinine clearance < 20 mL/min)."""
from __future__ import annotations

from .base import Finding, RuleContext, lab_fact_line
from .common import (
    GENERAL_OVERRIDES,
    active_with_class,
    derived_line,
    drafts_with_class,
    kidney_function,
    magnesium_is_low,
    med_line,
)


def renal_replacement_caution(ctx: RuleContext) -> Finding | None:
    """Creatinine clearance below 20 mL/min (Cockcroft-Gault, else a de-indexed eGFR, said which) while
    magnesium replacement is in play (magnesium low, a magnesium product active, or one drafted): no
    aggressive replacement, at most 20 g magnesium sulfate per 48 h, frequent levels.

    When clearance cannot be computed the card says what is missing, but only when a magnesium order is
    drafted (where it matters); a recorded CKD 4/5 condition is named then.
    On order hooks: relevant when a drafted order in scope is a magnesium product.
    """
    drafts = drafts_with_class(ctx, "magnesium-supplement")
    active = active_with_class(ctx, "magnesium-supplement")
    mg = magnesium_is_low(ctx)
    if not (drafts or active or mg is not None):
        return None
    crcl, missing = kidney_function(ctx)
    limit = ctx.threshold("crcl_aggressive_replacement_min")
    ceiling = ctx.threshold("renal_mgso4_max_g_per_48h")
    mmol = ceiling * ctx.threshold("mgso4_mmol_per_g")
    context_lines = []
    if mg is not None:
        context_lines.append(lab_fact_line(mg, "magnesium (low)"))
    context_lines += [med_line(ctx, m, with_class=False) for m in drafts + active]
    facts = ([mg.to_fact()] if mg is not None else []) + [m.to_fact() for m in drafts + active]
    if crcl is None:
        if not drafts:
            return None
        ckd = [c for c in ctx.record.conditions if c.condition == "ckd_severe"]
        summary = (f"Kidney function unknown before magnesium replacement: no {missing[0]}"
                   + (f" (+{len(missing) - 1} more missing)" if len(missing) > 1 else ""))
        lines = ["A magnesium order is drafted but creatinine clearance could not be computed. Missing:", ""]
        lines += [f"- {m}" for m in missing]
        if ckd:
            lines += ["", "Recorded: " + ", ".join(f"{c.label} ({c.source.reference})" for c in ckd) +
                      " — treat as severe renal insufficiency until measured."]
            facts += [c.to_fact() for c in ckd]
        lines += ["", f"Check kidney function before any replacement: below {limit:g} mL/min no aggressive replacement, "
                      f"at most {ceiling:g} g magnesium sulfate per 48 h.", "", "Orders and data:"] + context_lines
        return Finding(rule="renal-replacement-caution", indicator="warning" if ckd else "info", summary=summary,
                       detail="\n".join(lines), facts=tuple(facts), source="guidance",
                       override_reasons=GENERAL_OVERRIDES if ckd else ())
    if crcl.value >= limit:
        return None
    method = "Cockcroft-Gault" if crcl.extra.get("method") == "cockcroft-gault" else "de-indexed eGFR"
    summary = (f"Creatinine clearance {crcl.value:.0f} mL/min ({method}): no aggressive magnesium replacement, "
               f"max {ceiling:g} g MgSO4 per 48 h")
    lines = [f"Creatinine clearance is below {limit:g} mL/min: magnesium is renally excreted and accumulates "
             "(hypermagnesemia risk).", "", derived_line(crcl, f"creatinine clearance ({method})", 0), "",
             f"- no aggressive replacement; in severe renal insufficiency at most **{ceiling:g} g magnesium sulfate per 48 h** "
             f"(≈ {mmol:.0f} mmol Mg), with frequent serum magnesium levels;",
             "- watch for toxicity: loss of patellar reflexes first, then respiratory depression, hypotension, bradycardia "
             "(calcium chloride reverses it).", "", "Relevant data:"] + context_lines
    return Finding(rule="renal-replacement-caution", indicator="warning", summary=summary, detail="\n".join(lines),
                   facts=(crcl.to_fact(),) + tuple(facts), source="fda-mgso4-label", override_reasons=GENERAL_OVERRIDES)
