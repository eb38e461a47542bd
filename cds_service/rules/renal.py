"""Kidney function before magnesium replacement (creatinine clearance < 20 mL/min)."""
from __future__ import annotations

from .base import Finding, RuleContext, lab_fact_line
from .common import GENERAL_OVERRIDES, estimate_text, kidney_line, kidney_summary, magnesium_high_now, magnesium_is_low, sentence_case
from .medications import active_with_class, drafts_with_class, med_line
from .regimens import renal_ceiling_text


def renal_replacement_caution(ctx: RuleContext) -> Finding | None:
    """The call's kidney assessment (record/kidney.py: measured clearance, Cockcroft-Gault exact or bounded,
    de-indexed eGFR, coded kidney failure or dialysis) below 20 mL/min while magnesium replacement is in play
    (magnesium low, a magnesium product active, or one drafted): no aggressive replacement, at most 20 g
    magnesium sulfate per 48 h, frequent levels.

    Silent when magnesium is high now (the `hypermagnesemia` card owns that response).
    When nothing allows a conclusion the card says what is missing, but only when a magnesium order is drafted
    (where it matters); a recorded CKD stage 4 makes that a warning.
    On order hooks: relevant when a drafted order in scope is a magnesium product.
    """
    drafts = drafts_with_class(ctx, "magnesium-supplement")
    active = active_with_class(ctx, "magnesium-supplement")
    mg = magnesium_is_low(ctx)
    if not (drafts or active or mg is not None) or magnesium_high_now(ctx) is not None:
        return None  # a high magnesium is the hypermagnesemia card's (stop magnesium), not a replacement question
    kf = ctx.kidney
    context_lines = []
    if mg is not None:
        context_lines.append(lab_fact_line(mg, "magnesium (low)", now=ctx.now))
    context_lines += [med_line(ctx, m, with_class=False) for m in drafts + active]
    facts = list(kf.facts()) + ([mg.to_fact()] if mg is not None else []) + [m.to_fact() for m in drafts + active]
    if kf.status == "unknown":
        if not drafts:
            return None
        ckd4 = [c for c in ctx.record.conditions if c.condition == "ckd_stage_4"]
        if kf.estimate is not None:
            summary = (f"Kidney function unknown before magnesium replacement: {estimate_text(kf.estimate, kf.limit)}, "
                       "record a weight or measure clearance")
        else:
            summary = "Kidney function unknown before magnesium replacement: no recent creatinine or eGFR, measure it"
        lines = ["A magnesium order is drafted but kidney function could not be placed against "
                 f"{kf.limit:g} mL/min:", "", kidney_line(ctx)]
        if ckd4:
            lines += ["", "Recorded: " + ", ".join(f"{c.label} ({c.source.reference})" for c in ckd4) +
                      " (15-29 mL/min/1.73 m²): replace cautiously until measured."]
            facts += [c.to_fact() for c in ckd4]
        lines += ["", f"Check kidney function before any replacement: below {kf.limit:g} mL/min no aggressive "
                      f"replacement, {renal_ceiling_text(ctx)}.", "", "Orders and data:"] + context_lines
        return Finding(rule="renal-replacement-caution",
                       indicator=ctx.indicator("renal-replacement-caution", "unknown-ckd4" if ckd4 else "unknown"), summary=summary[:140],
                       detail="\n".join(lines), facts=tuple(facts), source="guidance",
                       override_reasons=GENERAL_OVERRIDES if ckd4 else ())
    if kf.status != "below":
        return None
    limit_text = "dose by weight with paediatric advice" if ctx.child else "max 20 g MgSO4 per 48 h"
    summary = f"{sentence_case(kidney_summary(ctx))}{' (child)' if ctx.child else ''}: no aggressive magnesium replacement, {limit_text}"
    if ctx.kidney.estimate is None or len(summary) > 140:
        summary = f"Kidney function below {kf.limit:g} mL/min: no aggressive magnesium replacement, {limit_text}"
    lines = [f"Kidney function is below {kf.limit:g} mL/min: magnesium is renally excreted and accumulates "
             "(hypermagnesemia risk).", "", kidney_line(ctx), ""]
    if ctx.child:
        lines.append("- no aggressive replacement; child: dose magnesium by weight with paediatric pharmacy or nephrology "
                     "advice, with frequent serum magnesium levels;")
    else:
        lines.append(f"- no aggressive replacement; in severe renal insufficiency {renal_ceiling_text(ctx)};")
    lines.append("- watch for toxicity: loss of patellar reflexes first, then respiratory depression, hypotension, "
                 "bradycardia (calcium chloride reverses it).")
    lines += ["", "Relevant data:"] + context_lines
    return Finding(rule="renal-replacement-caution", indicator=ctx.indicator("renal-replacement-caution", "below"), summary=summary,
                   detail="\n".join(lines), facts=tuple(facts), source="fda-mgso4-label", override_reasons=GENERAL_OVERRIDES)
