"""High magnesium (patient level; on order hooks when magnesium is drafted)."""
from __future__ import annotations

from .base import ASSESSMENT, TODO, VALUES, Action, Finding, RuleContext, Suggestion, lab_fact_line, shown_pair, with_action
from .common import (
    GENERAL_OVERRIDES,
    high_limit,
    kidney_line,
    magnesium_high,
    mg_mmol,
    obstetric_magnesium,
    order_magnesium,
    within_advice_window,
)
from .medications import active_with_class, drafts_with_class, med_line


def hypermagnesemia(ctx: RuleContext) -> Finding | None:
    """Latest serum magnesium above range (the lab's range, else 2.5 mg/dL), never worded 'not low'.

    Graded with the magnesium sulfate label (fda-mgso4-warnings): deep tendon reflexes diminish above 4 mEq/L
    (4.86 mg/dL) and may be lost at 10 mEq/L (12.15 mg/dL, respiratory paralysis). Critical when magnesium is
    drafted or active, kidney function is below the guidance's cut-off, or the value is at the reflex threshold;
    else a warning. On order hooks a drafted magnesium is critical, with a suggestion to remove each draft.
    Obstetric magnesium sulfate (pregnancy, pre-eclampsia, eclampsia or preterm labour recorded, with magnesium
    sulfate active or drafted): the label's 3-6 mg/dL is the expected range (no card); above it, a critical
    toxicity warning. A value older than the advice window says 're-measure' only when magnesium is given.
    On order hooks: relevant when a drafted order in scope is a magnesium product.
    """
    r = ctx.record.latest("magnesium")
    if r is None or not magnesium_high(ctx, r):
        return None
    drafts = drafts_with_class(ctx, "magnesium-supplement")
    active = active_with_class(ctx, "magnesium-supplement")
    given = drafts + active
    limit, limit_source = high_limit(ctx, r, "magnesium_high")
    reflexes = ctx.threshold("magnesium_reflexes_diminish")
    paralysis = ctx.threshold("magnesium_respiratory_paralysis")
    obstetric = obstetric_magnesium(ctx)
    ob_max = ctx.threshold("magnesium_obstetric_max")
    facts = [r.to_fact()] + [m.to_fact() for m in given]
    fresh = within_advice_window(ctx, r)
    if not fresh:
        if not given:
            return None
        days = (ctx.now - r.effective).days
        summary = (f"Last magnesium was high ({r.value:.2f} mg/dL) {days} days ago, on {r.effective.date()}: "
                   "re-measure before giving more magnesium")
        window = ctx.policy("magnesium_advice_max_age_days")
        lines = [ASSESSMENT, f"The latest magnesium is above range but older than {window} days, and magnesium is "
                 "being given or drafted: whether it is still high is not known.", "",
                 VALUES, lab_fact_line(r, "magnesium", now=ctx.now)] + [med_line(ctx, m, with_class=False) for m in given]
        lines += ["", TODO, "Measure magnesium again before giving more; if it is still high, stop magnesium-containing "
                  "products."]
        return Finding(rule="hypermagnesemia", indicator=ctx.indicator("hypermagnesemia", "stale"), summary=summary,
                       detail="\n".join(lines), facts=tuple(facts), source="fda-mgso4-warnings", override_reasons=GENERAL_OVERRIDES,
                       suggestions=order_magnesium(ctx, "Last magnesium high but not recent, magnesium given"))
    if obstetric is not None and r.value <= ob_max:
        return None  # obstetric magnesium sulfate in the label's therapeutic range: expected
    value, shown_limit = shown_pair(r.value, limit, 2)
    mmol, _ = shown_pair(mg_mmol(ctx, r.value), mg_mmol(ctx, limit), 2)
    reasons: list[str] = []
    if obstetric is not None:
        reasons.append(f"above the obstetric therapeutic range (3-{ob_max:g} mg/dL, label) during magnesium sulfate")
    if r.value >= reflexes:
        reasons.append(f"at or above {reflexes:g} mg/dL (4 mEq/L), where deep tendon reflexes diminish")
    if drafts:
        reasons.append("magnesium is drafted")
    if active:
        reasons.append("magnesium is being given")
    if ctx.kidney.below:
        reasons.append(f"kidney function is below {ctx.kidney.limit:g} mL/min")
    critical = bool(reasons)
    summary = (f"{'Magnesium toxicity risk' if obstetric is not None else 'Hypermagnesemia'}: magnesium {value} mg/dL "
               f"({mmol} mmol/L) on {r.effective.date()}"
               + ("; stop the drafted magnesium" if drafts and ctx.order_hook else
                  "; stop magnesium" if given else ""))
    if not given:
        summary = with_action(summary, "stop magnesium-containing products", "; ")
    lines = [f"Latest serum magnesium is above the upper limit {shown_limit} mg/dL ({limit_source}).", "",
             lab_fact_line(r, "magnesium", now=ctx.now, cutoffs=(limit, reflexes))]
    if reasons:
        lines += ["", "Critical because: " + "; ".join(reasons) + "."]
    if obstetric is not None:
        conds, _ = obstetric
        lines += ["", "Obstetric context: " + ", ".join(f"{c.label} ({c.source.reference})" for c in conds) + "."]
    if given:
        lines += ["", "Magnesium orders:"] + [med_line(ctx, m, with_class=False) for m in given]
    lines += ["", kidney_line(ctx), "",
              "Stop magnesium-containing products; check patellar reflexes, respiratory rate, blood pressure and heart "
              f"rate; reflexes may be lost at {paralysis:g} mg/dL (10 mEq/L) with a risk of respiratory paralysis. An "
              "injectable calcium salt reverses toxicity; dialysis may be needed with kidney failure."]
    suggestions = tuple(
        Suggestion(f"Remove the draft order for {m.label}",
                   (Action("delete", f"Remove the draft order {m.source.reference}", resource_id=m.source.reference),),
                   is_recommended=True, key=f"delete-{m.source.reference}")
        for m in drafts if m.source.id
    ) if ctx.order_hook else ()
    return Finding(rule="hypermagnesemia", indicator=ctx.indicator("hypermagnesemia", "critical" if critical else "high"),
                   summary=summary,
                   detail="\n".join(lines), facts=tuple(facts) + ctx.kidney.facts(), source="fda-mgso4-warnings",
                   suggestions=suggestions, override_reasons=GENERAL_OVERRIDES, selection_behavior="any")
