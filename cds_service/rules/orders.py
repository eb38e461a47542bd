"""Order-level rules: evaluated on order-select (selected drafts) and order-sign (all drafts) only."""
from __future__ import annotations

from typing import Any

from ..knowledge import ATC, RXNORM
from ..record.model import LabResult, MedicationUse
from .base import Action, Finding, OverrideReason, RuleContext, Suggestion, lab_fact_line, short_value
from .common import (
    GENERAL_OVERRIDES,
    active_with_class,
    analyte_codes,
    below,
    calcium_status,
    drafted_test,
    drafts_with_class,
    is_high,
    kidney_line,
    kidney_summary,
    sentence_case,
    unreadable_note,
    lab_service_request,
    last_measured_text,
    magnesium_high,
    magnesium_high_now,
    magnesium_is_low,
    magnesium_low,
    magnesium_low_or_unmeasured,
    med_line,
    obstetric_magnesium,
    policy_note,
    recent,
    wasting_classes,
    within_advice_window,
)
from .doses import magnesium_dose, magnesium_load_48h, micrograms
from .regimens import Regimen, iv_regimen, iv_regimen_text, oral_regimen, paediatric_text

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"

WASTING_DRAFT_OVERRIDES = (
    OverrideReason("benefit-outweighs-risk", "Benefit outweighs the magnesium risk; magnesium will be monitored"),
    OverrideReason("magnesium-being-replaced", "Magnesium is being replaced"),
    OverrideReason("no-alternative", "No suitable alternative"),
)


def _order_ref(m: MedicationUse) -> str | None:
    return m.source.reference if m.source.id else None


TOXICITY_WATCH = ("Toxicity watch during IV magnesium: check patellar reflexes (lost first) and respiratory rate before "
                  "each dose, then blood pressure and heart rate (hypotension, bradycardia); keep calcium chloride at hand "
                  "to reverse toxicity.")


def order_wasting_drug(ctx: RuleContext) -> Finding | None:
    """A drafted magnesium-wasting drug while the latest magnesium is low: warning, one 'remove the draft'
    suggestion per drafted drug (delete by resourceId), and override reasons."""
    mg = magnesium_is_low(ctx)
    if mg is None:
        return None
    drafts = drafts_with_class(ctx, *wasting_classes(ctx))
    if not drafts:
        return None
    k = ctx.knowledge
    names = ", ".join(m.label for m in drafts)
    summary = f"Drafted {names} wastes magnesium; magnesium is {short_value(mg)} ({mg.effective.date()})"
    lines = ["Latest magnesium is low:", "", lab_fact_line(mg, "magnesium"), "", "Drafted magnesium-wasting order(s):", ""]
    for m in drafts:
        lines.append(med_line(ctx, m))
        for cls in sorted(c for c in m.classes() if k.model.classes[c].wasting):
            lines.append(f"  - {k.model.classes[cls].display}: {k.model.classes[cls].mechanism}")
    lines += ["", "Consider an alternative without magnesium wasting, or replace and monitor magnesium if it is needed."]
    suggestions = tuple(
        Suggestion(f"Remove the draft order for {m.label}",
                   (Action("delete", f"Remove the draft order {_order_ref(m)}", resource_id=_order_ref(m)),),
                   key=f"delete-{_order_ref(m)}")
        for m in drafts if _order_ref(m)
    )
    return Finding(rule="order-wasting-drug", indicator="warning", summary=summary, detail="\n".join(lines),
                   facts=(mg.to_fact(),) + tuple(m.to_fact() for m in drafts), source="guidance", suggestions=suggestions,
                   override_reasons=WASTING_DRAFT_OVERRIDES + GENERAL_OVERRIDES[1:], selection_behavior="any")


def _magnesium_replacement(ctx: RuleContext, mg: LabResult) -> Regimen | None:
    """The replacement matched to the severity (IV if severe, else oral at night), reduced with low kidney
    function; None for a child (no adult dose)."""
    return iv_regimen(ctx) if mg.value < ctx.threshold("magnesium_severe") else oral_regimen(ctx)


def order_potassium_without_magnesium(ctx: RuleContext) -> Finding | None:
    """A drafted potassium supplement while magnesium is low (suggest magnesium replacement matched to the
    severity and to the kidney assessment; none for a child) or not measured within the recent window (suggest
    a serum magnesium, unless one is drafted)."""
    drafts = drafts_with_class(ctx, "potassium-supplement")
    if not drafts:
        return None
    state, mg = magnesium_low_or_unmeasured(ctx)
    if state == "normal":
        return None
    if state == "unmeasured" and drafted_test(ctx, analyte_codes(ctx, "magnesium")):
        return None
    lines = ["Drafted potassium replacement:", ""] + [med_line(ctx, m, with_class=False) for m in drafts] + [""]
    facts: list[dict] = [m.to_fact() for m in drafts]
    k_latest = ctx.record.latest("potassium")
    if k_latest is not None:
        lines += [lab_fact_line(k_latest, "potassium", 1, now=ctx.now)]
        facts.append(k_latest.to_fact())
    suggestions: tuple[Suggestion, ...] = ()
    if state == "low":
        assert mg is not None
        summary = f"Potassium drafted with magnesium {short_value(mg)} ({mg.effective.date()}): correct magnesium first"
        lines += [lab_fact_line(mg, "magnesium", now=ctx.now) + " — **low**", *unreadable_note(ctx, mg), "",
                  "Low magnesium keeps potassium low (renal potassium loss): replace magnesium with the potassium."]
        regimen = _magnesium_replacement(ctx, mg)
        if regimen is None:
            lines += ["", paediatric_text(ctx)]
        else:
            suggestions = (Suggestion(f"Add magnesium: {regimen.label}", (Action("create", regimen.label, regimen.resource),),
                                      is_recommended=True, key="add-magnesium"),)
        if ctx.kidney.below:
            lines += ["", kidney_line(ctx)]
            facts += list(ctx.kidney.facts())
        facts.append(mg.to_fact())
    else:
        window = float(ctx.policy("magnesium_recent_days"))
        summary = f"Potassium drafted without a recent magnesium ({last_measured_text(ctx, mg)}): check magnesium"
        lines += [(lab_fact_line(mg, "magnesium", now=ctx.now) + f" — older than {window:g} days")
                  if mg is not None else f"- magnesium: {last_measured_text(ctx, None)}", "",
                  "Hypokalemia does not respond to potassium until low magnesium is corrected: measure magnesium.", "",
                  policy_note(ctx, "magnesium_recent_days")]
        if mg is not None:
            facts.append(mg.to_fact())
        sr = lab_service_request(ctx, "19123-9", "Potassium replacement: check magnesium first")
        suggestions = (Suggestion("Order serum magnesium", (Action("create", "Order serum magnesium (LOINC 19123-9)", sr),),
                                  is_recommended=True, key="order-magnesium"),)
    return Finding(rule="order-potassium-without-magnesium", indicator="warning", summary=summary,
                   detail="\n".join(lines), facts=tuple(facts), source="guidance", suggestions=suggestions,
                   override_reasons=GENERAL_OVERRIDES)


def order_magnesium_renal(ctx: RuleContext) -> Finding | None:
    """Drafted magnesium (any route) with the call's kidney assessment below 20 mL/min: the 20 g magnesium sulfate
    per 48 h ceiling (label) applied to the SUM of every drafted and active magnesium order, all routes and salts,
    in mmol Mg (dose from the structured dosage, frequency from the structured timing or the dosage text), with
    the per-order breakdown; critical when the sum (or a known part of it) exceeds the ceiling."""
    drafts = drafts_with_class(ctx, "magnesium-supplement")
    if not drafts or not ctx.kidney.below or magnesium_high_now(ctx) is not None:
        return None  # with magnesium high now, the hypermagnesemia card asks to remove the drafts
    kf = ctx.kidney
    all_drafts = [m for m in ctx.record.draft_medications if m.has_class("magnesium-supplement")]
    orders = all_drafts + active_with_class(ctx, "magnesium-supplement")
    load = magnesium_load_48h(orders, ctx.knowledge)
    ceiling_g = ctx.threshold("renal_mgso4_max_g_per_48h")
    per_g = ctx.threshold("mgso4_mmol_per_g")
    ceiling_mmol = ceiling_g * per_g
    total = load.known_mmol
    exceeded = total > ceiling_mmol
    lines = [f"Kidney function is below {kf.limit:g} mL/min:", "", kidney_line(ctx), "",
             f"Ceiling in severe renal insufficiency: **{ceiling_g:g} g magnesium sulfate per 48 h** "
             f"(= {ceiling_mmol:.1f} mmol Mg at {per_g:g} mmol/g). The label sets it for parenteral magnesium sulfate; it "
             "is applied here to every magnesium order together, by any route, and below this clearance the guidance "
             "advises against aggressive replacement of any kind.", "", "Magnesium over 48 h, every drafted and active order:"]
    for o in load.orders:
        lines.append(med_line(ctx, o.order, with_class=False))
        if o.per_dose is not None:
            lines.append(f"  - per dose: {o.per_dose.explanation}")
        if o.mmol_per_48h is not None and o.why_not is None:
            n = o.doses_per_48h
            lines.append(f"  - {n:g} dose{'' if n == 1 else 's'} per 48 h: **{o.mmol_per_48h:.1f} mmol Mg**")
        elif o.mmol_per_48h is not None:
            lines.append(f"  - {o.why_not} (**{o.mmol_per_48h:.1f} mmol Mg** at least): the 48-h total could not be computed")
        else:
            lines.append(f"  - not counted: {o.why_not}; check it against the ceiling")
    total_text = f"{total:.1f} mmol Mg per 48 h" + ("" if load.complete else " at least (what could not be counted adds to it)")
    if ctx.child:
        lines += ["", "Child: the label's ceiling is an adult figure and only an outer bound here; dose magnesium by "
                      "weight with paediatric pharmacy or nephrology advice."]
    lines += ["", f"Total: **{total_text}** against the ceiling of {ceiling_mmol:.1f} mmol.", "",
              "Monitor serum magnesium frequently (at least daily during IV replacement); toxicity: loss of patellar "
              "reflexes, respiratory depression, hypotension, bradycardia (calcium chloride reverses it)."]
    if exceeded:
        lines[0:0] = [f"**The magnesium orders add up to more than the renal ceiling: {total:.1f} > {ceiling_mmol:.1f} mmol "
                      "per 48 h.**", ""]
        summary = (f"Magnesium orders total {total:.0f} mmol/48 h, over the {ceiling_mmol:.0f} mmol ({ceiling_g:g} g MgSO4) "
                   f"renal ceiling; {kidney_summary(ctx)}")
    elif ctx.child:
        summary = (f"{sentence_case(kidney_summary(ctx))} (child): magnesium orders total {total:.0f} mmol per 48 h"
                   + ("" if load.complete else "+") + "; dose by weight with paediatric advice")
    else:
        summary = (f"{sentence_case(kidney_summary(ctx))}: magnesium limited to {ceiling_g:g} g MgSO4 "
                   f"({ceiling_mmol:.0f} mmol) per 48 h; orders total {total:.0f} mmol" + ("" if load.complete else "+"))
    return Finding(rule="order-magnesium-renal", indicator="critical" if exceeded else "warning", summary=summary[:200],
                   detail="\n".join(lines), facts=kf.facts() + tuple(o.order.to_fact() for o in load.orders),
                   source="fda-mgso4-label", override_reasons=GENERAL_OVERRIDES)


def order_iv_magnesium(ctx: RuleContext) -> Finding | None:
    """Drafted IV magnesium sulfate: the regimen for the measured severity (severe < 1.2 mg/dL; low; not measured
    recently), reduced below the kidney cut-off and absent for a child, and the toxicity watch. Warning when
    magnesium is in range or not measured; a high magnesium belongs to the `hypermagnesemia` card (silent here),
    except obstetric magnesium sulfate in the label's therapeutic range (info: expected, monitor)."""
    drafts = [m for m in drafts_with_class(ctx, "magnesium-supplement")
              if m.has_ingredient("magnesium sulfate") and m.route == "intravenous"]
    if not drafts:
        return None
    severe = ctx.threshold("magnesium_severe")
    latest = ctx.record.latest("magnesium")
    low = magnesium_is_low(ctx)
    fresh = recent(ctx, "magnesium", "magnesium_recent_days")
    obstetric = obstetric_magnesium(ctx)
    if magnesium_high_now(ctx) is not None:
        if obstetric is None or latest.value > ctx.threshold("magnesium_obstetric_max"):
            return None  # the hypermagnesemia card owns it
    lines = ["Drafted IV magnesium sulfate:", ""]
    for m in drafts:
        lines.append(med_line(ctx, m, with_class=False))
        d = magnesium_dose(m, ctx.knowledge)
        lines.append(f"  - per dose: {d.explanation}" if d is not None else "  - dose not convertible to magnesium sulfate grams")
    lines.append("")
    indicator = "info"
    regimen = iv_regimen_text(ctx)
    if obstetric is not None and latest is not None and fresh is not None and not magnesium_low(ctx, latest):
        lo, hi = ctx.threshold("magnesium_obstetric_min"), ctx.threshold("magnesium_obstetric_max")
        summary = (f"Obstetric magnesium sulfate: magnesium {short_value(latest)} ({latest.effective.date()}); "
                   f"label range {lo:g}-{hi:g} mg/dL")
        lines += [lab_fact_line(latest, "magnesium", now=ctx.now), "",
                  "Obstetric context: " + ", ".join(f"{c.label} ({c.source.reference})" for c in obstetric[0]) + ".",
                  f"Concentrations of {lo:g}-{hi:g} mg/dL (2.5-5 mEq/L) usually control convulsions (label); reflexes "
                  f"diminish above {ctx.threshold('magnesium_reflexes_diminish'):g} mg/dL."]
    elif low is not None and below(low, severe):
        summary = (f"IV magnesium for severe hypomagnesemia ({short_value(low)}, {low.effective.date()})"
                   + (f": {regimen}" if regimen and not ctx.kidney.below else ": reduced regimen, see card" if regimen else ""))
        lines += [lab_fact_line(low, "magnesium", now=ctx.now, cutoffs=(severe,)) + f" — severe (< {severe:g} mg/dL)",
                  *unreadable_note(ctx, low), ""]
        if regimen is None:
            lines.append(paediatric_text(ctx))
        else:
            lines.append(f"Severe symptomatic hypomagnesemia: {regimen}." + ("" if ctx.kidney.below else
                         f" The label allows up to {ctx.threshold('label_mgso4_max_g_per_litre'):g} g (about 40 mEq) in "
                         "1 L over 3 h."))
    elif low is not None:
        summary = f"IV magnesium with magnesium {short_value(low)} ({low.effective.date()}): oral first unless symptomatic"
        lines += [lab_fact_line(low, "magnesium", now=ctx.now, cutoffs=(severe,)) + " — low, not severe", "",
                  f"The guidance reserves IV magnesium for severe symptomatic deficiency (< {severe:g} mg/dL) or failure of "
                  "oral replacement (magnesium oxide at night, then alfacalcidol)."]
        if regimen is None:
            lines.append(paediatric_text(ctx))
    elif fresh is not None:
        indicator = "warning"
        summary = f"IV magnesium drafted while magnesium is in range ({short_value(fresh)}, {fresh.effective.date()})"
        lines += [lab_fact_line(fresh, "magnesium", now=ctx.now) + " — within range", "",
                  "Check the indication (hypermagnesemia risk)."]
    else:
        indicator = "warning"
        window = float(ctx.policy("magnesium_recent_days"))
        summary = f"IV magnesium drafted without a recent magnesium level ({last_measured_text(ctx, latest, window if latest else None)})"
        lines += [(lab_fact_line(latest, "magnesium", now=ctx.now) + " — not recent") if latest is not None else
                  f"- magnesium: {last_measured_text(ctx, None)}", "", "Measure magnesium before (or with) replacement.",
                  "", policy_note(ctx, "magnesium_recent_days")]
    lines += ["", kidney_line(ctx), "", TOXICITY_WATCH]
    facts = tuple(m.to_fact() for m in drafts) + ((latest.to_fact(),) if latest is not None else ()) + ctx.kidney.facts()
    return Finding(rule="order-iv-magnesium", indicator=indicator, summary=summary, detail="\n".join(lines), facts=facts,
                   source="fda-mgso4-label", override_reasons=GENERAL_OVERRIDES if indicator != "info" else ())


def order_vitamin_d_analogue(ctx: RuleContext) -> Finding | None:
    """Drafted alfacalcidol or calcitriol: weekly calcium checks at first (suggested as a ServiceRequest), and
    a warning when calcium is already above range (judged on a recent ionized calcium, else albumin-corrected, else
    total calcium; the card says which) or a dose exceeds 9 µg."""
    drafts = drafts_with_class(ctx, "vitamin-d-analogue")
    if not drafts:
        return None
    status = calcium_status(ctx)  # ionized (recent) > albumin-corrected > total: the card says which
    ca = status.inputs[0] if status is not None else None
    high = status is not None and status.high
    top = ctx.threshold("alfacalcidol_max_ug")
    over = [m for m in drafts if (micrograms(m.dose) or 0) > top]
    names = ", ".join(m.label for m in drafts)
    interval = int(ctx.threshold("calcium_check_interval_days"))
    lines = ["Drafted active vitamin D analogue:", ""] + [med_line(ctx, m, with_class=False) for m in drafts] + [""]
    lines.append(f"Alfacalcidol: start {ctx.threshold('alfacalcidol_start_ug'):g} µg daily, increase gradually up to {top:g} µg "
                 f"daily; check serum calcium at least every {interval} days at first (hypercalcaemia causes stones and "
                 "renal failure).")
    if over:
        lines.append("**Dose above " + f"{top:g} µg daily: " + ", ".join(f"{m.label} {m.dose.value:g} {m.dose.unit}" for m in over) + "**")
    lines.append("")
    if ca is None:
        lines.append("- no serum calcium in the record: measure a baseline")
        summary = f"{names} drafted: no calcium on record; check calcium weekly at first"
    else:
        lines += [f"Calcium{' — **above range**' if high else ''}:"] + status.lines() + unreadable_note(ctx, ca)
        if high:
            summary = f"{names} drafted with calcium already high ({status.label} {status.shown}, {ca.effective.date()})"
        else:
            summary = f"{names} drafted: check calcium weekly at first (latest {status.label} {status.shown}, {ca.effective.date()})"
    suggestions: tuple[Suggestion, ...] = ()
    if not drafted_test(ctx, analyte_codes(ctx, "calcium")):
        sr = lab_service_request(ctx, "17861-6", "Alfacalcidol/calcitriol: weekly serum calcium", {
            "occurrenceTiming": {"repeat": {"frequency": 1, "period": interval, "periodUnit": "d"}}})
        suggestions = (Suggestion(f"Order serum calcium every {interval} days", (Action("create", "Order serum calcium (LOINC 17861-6), "
                                  f"every {interval} days", sr),), is_recommended=True, key="order-calcium"),)
    warn = high or bool(over)
    facts = tuple(m.to_fact() for m in drafts) + (tuple(status.facts()) if status is not None else ())
    return Finding(rule="order-vitamin-d-analogue", indicator="warning" if warn else "info", summary=summary,
                   detail="\n".join(lines), facts=facts, source="guidance", suggestions=suggestions,
                   override_reasons=GENERAL_OVERRIDES if warn else ())
