"""Refractory low magnesium (the stepwise pathway), and potassium/calcium made refractory by low magnesium."""
from __future__ import annotations

from ..record.model import MedicationUse
from .base import ASSESSMENT, TODO, VALUES, Finding, RuleContext, days_ago_text, lab_fact_line, short_value, with_action
from .calcium import CalciumStatus, calcium_from_result, calcium_series, calcium_status
from .common import (
    GENERAL_OVERRIDES,
    has_night_dosing,
    kidney_line,
    magnesium_low,
    magnesium_low_or_unmeasured,
    mg_mmol,
    persistent_low,
    policy_note,
    unreadable_facts,
    unreadable_note,
    within_advice_window,
)
from .doses import administrations_per_48h, magnesium_dose
from .medications import active_with_class, med_line, wasting_classes
from .regimens import iv_regimen_text, paediatric_text

PARENTERAL = ("intravenous", "subcutaneous", "intramuscular")


def _oral_magnesium(ctx: RuleContext) -> list[MedicationUse]:
    """Active magnesium supplements not given parenterally (route oral or not recorded), started before now."""
    return [m for m in active_with_class(ctx, "magnesium-supplement") if m.route not in PARENTERAL]


def _oral_daily_mmol(ctx: RuleContext, oral: list[MedicationUse]) -> tuple[float, list[str], bool]:
    """(mmol Mg a day from the oral orders that can be read, a line per order, whether every order was read)."""
    total, lines, complete = 0.0, [], True
    for m in oral:
        d = magnesium_dose(m, ctx.knowledge)
        per48 = administrations_per_48h(m.timing)
        if d is not None and per48 is not None:
            daily = d.mmol * per48 / 2.0
            total += daily
            lines.append(f"   - {m.label}: {d.explanation} per dose, {per48 / 2.0:g} a day = {daily:.1f} mmol a day")
        else:
            complete = False
            what = "dose" if d is None else "frequency"
            lines.append(f"   - {m.label}: {what} not readable ({m.dose.value:g} {m.dose.unit}, '{m.timing or 'no dosing text'}')"
                         if m.dose is not None else f"   - {m.label}: no structured dose ('{m.timing or 'no dosing text'}')")
    return total, lines, complete


def refractory_hypomagnesemia(ctx: RuleContext) -> Finding | None:
    """Low magnesium persisting (>= N low results over >= the span, policy; the latest within the advice window)
    while an oral magnesium supplement is active: the guidance's stepwise pathway, naming the steps the data shows.

    The supplement counts when active and (if its start is recorded) started no later than the latest
    low result, so the low value was measured on treatment. Step 1 is "done" only at the target dose
    (oral magnesium 12-24 mmol a day) given at night, else "started below target". Doses quoted are adult
    doses (none for a child) and the IV step is reduced with kidney function below the cut-off (one kidney
    assessment per call). Suppresses `hypomagnesemia`.
    On order hooks: relevant when a drafted order is a magnesium/potassium/calcium product, a vitamin D
    analogue or a wasting drug (as for `hypomagnesemia`, which it replaces).
    """
    run = persistent_low(ctx, "magnesium", "magnesium_low", low=lambda r: magnesium_low(ctx, r))
    if run is None or not within_advice_window(ctx, run[0]):
        return None
    latest = run[0]
    oral = [m for m in _oral_magnesium(ctx) if m.start is None or m.start <= latest.effective]
    if not oral:
        return None
    severe = ctx.threshold("magnesium_severe")
    critical = latest.value < severe
    span_days = (run[0].effective - run[-1].effective).total_seconds() / 86400
    summary = (f"Refractory hypomagnesemia: magnesium {short_value(latest)} on {latest.effective.date()}, "
               f"{len(run)} low results over {span_days:.0f} days on oral magnesium")
    summary = with_action(summary, "escalate stepwise")
    facts: list[dict] = [r.to_fact() for r in run] + [m.to_fact() for m in oral] + list(ctx.kidney.facts())
    lines = [ASSESSMENT, f"Magnesium has stayed low on {len(run)} consecutive results while oral magnesium is taken.", "",
             VALUES]
    lines += [lab_fact_line(r, "magnesium", now=ctx.now, cutoffs=(severe,)) for r in run]
    lines += ["", "Oral magnesium active:"] + [med_line(ctx, m, with_class=False) for m in oral]
    if ctx.child:
        lines += ["", paediatric_text(ctx)]

    lines += ["", TODO, "**Before escalating (guidance):**", "",
              "- **Volume status first**: correct sodium and water depletion with IV saline; secondary "
              "hyperaldosteronism keeps the kidney wasting magnesium (and potassium)."]
    sodium = ctx.record.latest("sodium")
    if sodium is not None:
        lines.append(f"  - latest sodium {sodium.value:.0f} mmol/L on {sodium.effective.date()} "
                     f"({days_ago_text(ctx.now, sodium.effective)}; {sodium.source.reference}); volume status itself is "
                     "not in the record: assess it clinically.")
        facts.append(sodium.to_fact())
    else:
        lines.append("  - volume status is not in the record: assess it clinically.")
    diuretics = active_with_class(ctx, "loop-diuretic", "thiazide")
    if diuretics:
        lines.append("  - diuretic active (volume depletion and renal wasting): " + "; ".join(m.label for m in diuretics))
    wasting = [m for m in active_with_class(ctx, *wasting_classes(ctx))]
    if wasting:
        lines.append("  - magnesium-wasting drug(s) active: review " + ", ".join(m.label for m in wasting))
        facts += [m.to_fact() for m in wasting if m not in diuretics]
    lines += ["- **Kidney function** before any escalation:", "  " + kidney_line(ctx).replace("\n", "\n  ")]

    # Step 1: oral optimisation
    lo, hi = ctx.threshold("oral_mg_min_mmol_per_day"), ctx.threshold("oral_mg_max_mmol_per_day")
    mgo = ctx.threshold("magnesium_oxide_molar_mass")  # mg magnesium oxide per mmol Mg
    lines += ["", "**Stepwise pathway (guidance), tailored to the data:**", ""]
    lines.append("1. **Optimise oral magnesium**" + ("" if ctx.child else
                 f": magnesium oxide {lo:g}-{hi:g} mmol a day (about {lo * mgo:.0f}-{hi * mgo:.0f} mg magnesium oxide)") +
                 " given at night, when gut transit is slowest.")
    at_night = [m for m in oral if has_night_dosing(ctx, m)]
    daily, dose_lines, complete = _oral_daily_mmol(ctx, oral)
    lines += dose_lines
    if ctx.child:
        lines.append("   - _check_: the dose against a paediatric weight-based reference")
    elif complete and lo <= daily <= hi and at_night:
        lines.append(f"   - _done_: {daily:.1f} mmol a day (target {lo:g}-{hi:g}), at night for " +
                     ", ".join(f"{m.label} ('{m.timing}')" for m in at_night))
    elif complete and daily > hi:
        lines.append(f"   - _above target_: {daily:.1f} mmol a day, more than the {hi:g} mmol a day of the guidance")
    elif complete and daily < lo:
        lines.append(f"   - _started below target_: {daily:.1f} mmol a day, target {lo:g}-{hi:g} mmol a day")
    elif not complete:
        lines.append(f"   - _dose not confirmed_: the daily dose could not be read from every order; target {lo:g}-{hi:g} "
                     "mmol a day")
    if not at_night:
        lines.append("   - _not at night_: no dosing text says night/bedtime (" +
                     ", ".join(f"{m.label}: '{m.timing}'" if m.timing else f"{m.label}: no dosing text" for m in oral) + ")")

    # Step 2: alfacalcidol
    vit_d = active_with_class(ctx, "vitamin-d-analogue")
    start, top = ctx.threshold("alfacalcidol_start_ug"), ctx.threshold("alfacalcidol_max_ug")
    lines.append("2. **Add oral alfacalcidol (1-alpha hydroxycholecalciferol)**" + ("" if ctx.child else
                 f": {start:g} µg daily, increased gradually up to {top:g} µg daily") +
                 "; serum calcium at least weekly at first (hypercalcaemia: stones, renal failure).")
    if vit_d:
        lines.append("   - _started_: active " + "; ".join(med_line(ctx, m, with_class=False)[2:] for m in vit_d))
        facts += [m.to_fact() for m in vit_d]
        ca = calcium_status(ctx)
        if ca is None:
            lines.append("   - no serum calcium in the record: check it weekly while on alfacalcidol")
        else:
            facts += [i.to_fact() for i in ca.inputs]
            high = " — **above range**" if ca.high else ""
            newest = max(ca.inputs, key=lambda i: i.effective)
            lines.append(f"   - latest {ca.label} {ca.shown} on {newest.effective.date()} "
                         f"({days_ago_text(ctx.now, newest.effective)}; {newest.source.reference}){high}")
    else:
        lines.append("   - _not yet_: no active alfacalcidol or calcitriol in the record")

    # Step 3: parenteral
    parenteral = [m for m in active_with_class(ctx, "magnesium-supplement") if m.route in PARENTERAL]
    regimen = iv_regimen_text(ctx)
    if regimen is None:
        lines.append("3. **Parenteral magnesium** if oral steps fail (paediatric dosing by weight).")
    else:
        lines.append(f"3. **Parenteral magnesium** if oral steps fail: severe symptomatic (< {severe:g} mg/dL): {regimen}" +
                     ("" if ctx.kidney.below else
                      f"; chronic maintenance: subcutaneous magnesium sulfate {ctx.threshold('sc_mgso4_min_mmol'):g}-"
                      f"{ctx.threshold('sc_mgso4_max_mmol'):g} mmol in saline, 1-{ctx.threshold('sc_mgso4_max_per_week'):g} "
                      "times a week") + ".")
    if parenteral:
        lines.append("   - _started_: parenteral magnesium active: " + "; ".join(f"{m.label} ({m.route})" for m in parenteral))
        facts += [m.to_fact() for m in parenteral]
    else:
        lines.append("   - _not shown_: no active IV or subcutaneous magnesium in the record")
    if critical:
        lines.append(f"   - latest value {latest.value:.2f} mg/dL ({mg_mmol(ctx, latest.value):.2f} mmol/L) is below {severe:g} mg/dL: "
                     "IV replacement applies if symptomatic")
    lines += ["", "Find the cause: fractional excretion of magnesium and urine calcium/creatinine (see the FEMg card).",
              "", policy_note(ctx, "refractory_min_low_results", "refractory_min_span_hours", "refractory_window_days")]
    return Finding(rule="refractory-hypomagnesemia", indicator=ctx.indicator("refractory-hypomagnesemia",
                   "severe" if critical else "low"), summary=summary,
                   detail="\n".join(lines), facts=tuple(facts), source="guidance", override_reasons=GENERAL_OVERRIDES)


def _refractory_electrolyte(ctx: RuleContext, rule: str, analyte: str, low_key: str, supplement_class: str,
                            name: str, unit: str, digits: int, mechanism: str, low=None, results=None,
                            status: CalciumStatus | None = None) -> Finding | None:
    """``low``/``results``: how each result is judged and which results count (calcium: ionized or albumin-corrected);
    ``status``: the calcium judgement now, said on the card."""
    run = persistent_low(ctx, analyte, low_key, low=low, count_policy="electrolyte_refractory_min_low_results",
                         span_policy="electrolyte_refractory_min_span_hours", window_policy="refractory_window_days",
                         results=results)
    if run is None:
        return None
    latest = run[0]
    supplements = [m for m in active_with_class(ctx, supplement_class) if m.start is None or m.start <= latest.effective]
    if not supplements:
        return None
    state, mg = magnesium_low_or_unmeasured(ctx)
    if state == "normal":
        return None
    span_days = (run[0].effective - run[-1].effective).total_seconds() / 86400
    if state == "low" and mg is not None:  # 'low' always comes with its result
        mg_text = f"magnesium low ({short_value(mg)})"
    elif mg is None:
        mg_text = "magnesium not measured"
    else:
        mg_text = f"magnesium not measured since {mg.effective.date()}"
    shown = f"{status.label} {status.shown}" if status is not None else f"{analyte} {short_value(latest, digits)}"
    summary = (f"Refractory hypo{name}: {shown} on {latest.effective.date()} on "
               f"replacement, {mg_text}: correct magnesium first")
    if len(summary) >= 140:
        summary = f"Refractory hypo{name}: {shown} ({latest.effective.date()}) on replacement, {mg_text}: magnesium first"
    lines = [ASSESSMENT, f"{analyte.replace('_', ' ').capitalize()} has stayed low on {len(run)} results over {span_days:.0f} days "
             "while it is being replaced.",
             f"Low magnesium makes hypo{name} refractory: it does not respond to replacement until magnesium is corrected "
             f"({mechanism}).", "", VALUES]
    if status is not None:
        lines += ["Calcium now:"] + status.lines(ctx.now) + ["", "Low results (each judged on the best measure available with it):"]
        for r in run:
            judged = calcium_from_result(ctx, r)
            lines.append(lab_fact_line(r, r.analyte.replace("_", " "), digits, now=ctx.now)
                         + ("" if judged.basis in ("total", "ionized", "reported-corrected")
                            else f" — {judged.label} {judged.shown}"))
    else:
        lines += [lab_fact_line(r, analyte, digits, now=ctx.now) for r in run]
    lines += unreadable_note(ctx, latest, analyte)
    lines += ["", "Replacement active:"] + [med_line(ctx, m, with_class=False) for m in supplements]
    lines += ["", "Magnesium:"]
    if mg is not None:
        lines.append(lab_fact_line(mg, "magnesium", now=ctx.now) + (" — **low**" if state == "low" else
                                                       f" — older than {ctx.policy('magnesium_recent_days')} days"))
    else:
        lines.append("- no magnesium result in the record")
    lines += ["", TODO, "Correct magnesium first." if state == "low" else "Check magnesium now and correct it if low.",
              "", policy_note(ctx, "electrolyte_refractory_min_low_results", "electrolyte_refractory_min_span_hours",
                              "refractory_window_days", "magnesium_recent_days")]
    facts = [r.to_fact() for r in run] + [m.to_fact() for m in supplements] + ([mg.to_fact()] if mg is not None else [])
    if status is not None:
        facts += status.facts()
    facts += unreadable_facts(ctx, latest, mg)
    return Finding(rule=rule, indicator=ctx.indicator(rule, "refractory"), summary=summary, detail="\n".join(lines), facts=tuple(facts),
                   source="guidance", override_reasons=GENERAL_OVERRIDES)


def refractory_hypokalemia(ctx: RuleContext) -> Finding | None:
    """Potassium below range on repeated results (policy count/span/window) while a potassium supplement is
    active, and magnesium is low or not measured in the recent window: correct magnesium first.

    On order hooks: relevant when a drafted order is a potassium or magnesium product.
    """
    return _refractory_electrolyte(ctx, "refractory-hypokalemia", "potassium", "potassium_low", "potassium-supplement",
                                   "kalemia", "mmol/L", 1,
                                   "magnesium deficiency impairs potassium transport and increases renal potassium loss")


def refractory_hypocalcemia(ctx: RuleContext) -> Finding | None:
    """Calcium low now and on repeated results while a calcium supplement is active, and magnesium is low or not
    measured recently: correct magnesium first. Calcium is judged on a recent ionized calcium when there is one,
    else on total calcium corrected for an albumin measured with it (knowledge formula), else total calcium
    (``calcium_status``); the card says which. Low total calcium with low albumin and a normal ionized or
    corrected calcium is not hypocalcemia.

    On order hooks: relevant when a drafted order is a calcium or magnesium product or a vitamin D analogue.
    """
    status = calcium_status(ctx)
    if status is None or not status.low:
        return None
    kind, series = calcium_series(ctx)
    return _refractory_electrolyte(ctx, "refractory-hypocalcemia", "calcium_ionized" if kind == "ionized" else "calcium",
                                   "calcium_low", "calcium-supplement", "calcemia", status.unit, 2,
                                   "magnesium deficiency impairs parathyroid hormone release and action",
                                   low=lambda r: calcium_from_result(ctx, r).low, results=series, status=status)
