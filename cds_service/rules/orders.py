"""Order-level rules: evaluated on order-select (selected drafts) and order-sign (all drafts) only."""
from __future__ import annotations

from ..record.model import LabResult, MedicationUse
from .base import TODO, VALUES, Action, Finding, OverrideReason, RuleContext, Suggestion, lab_fact_line, short_value, with_action
from .calcium import calcium_status
from .common import (
    GENERAL_OVERRIDES,
    analyte_codes,
    below,
    drafted_test,
    kidney_line,
    kidney_summary,
    lab_service_request,
    last_measured_text,
    magnesium_high_now,
    magnesium_is_low,
    magnesium_low,
    magnesium_low_or_unmeasured,
    obstetric_magnesium,
    policy_note,
    recent,
    sentence_case,
    unreadable_note,
)
from .doses import daily_micrograms, magnesium_dose, magnesium_load_48h
from .medications import (
    active_with_class,
    drafts_with_class,
    group_by_ingredient,
    group_label,
    grouped_med_lines,
    med_line,
    systemic_drafts_with_class,
    wasting_classes,
)
from .regimens import Regimen, iv_regimen, iv_regimen_text, label_iv_maximum_text, oral_regimen, paediatric_text, renal_ceiling_text

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


def _safer_alternative(ctx: RuleContext, m: MedicationUse) -> bool:
    """Every wasting class of the drug has a usual alternative without magnesium wasting (PPIs, diuretics)."""
    k = ctx.knowledge.model.classes
    wasting = [c for c in m.classes() if k[c].wasting]
    return bool(wasting) and all(k[c].safer_alternative for c in wasting)


def _before_cycle(ctx: RuleContext, m: MedicationUse) -> bool:
    k = ctx.knowledge.model.classes
    return any(k[c].measure_before_cycle for c in m.classes())


def order_wasting_drug(ctx: RuleContext) -> Finding | None:
    """A drafted magnesium-wasting drug given by a systemic route (eye drops, creams, inhalers do not count): with
    low magnesium, monitoring and replacement suggestions ("remove the draft" only where a safer alternative exists:
    PPIs, diuretics); without a recent magnesium, a serum magnesium before a cycle of platinum or an EGFR antibody.

    - Magnesium low: warning. "Remove the draft" only for drugs whose classes have a usual safer alternative
      (PPIs, diuretics: knowledge safer_alternative); chemotherapy and anti-infectives get monitoring (serum
      magnesium) and replacement suggestions instead (replacement not offered when magnesium is already drafted).
    - Magnesium not measured recently and a drafted drug needs it before each cycle (cisplatin and other platinum
      drugs, EGFR antibodies: knowledge measure_before_cycle): warning suggesting a serum magnesium first.
    Each drug is listed once, with all its drafted orders.
    """
    drafts = systemic_drafts_with_class(ctx, *wasting_classes(ctx))
    if not drafts:
        return None
    state, mg = magnesium_low_or_unmeasured(ctx)
    if state == "low":
        assert mg is not None
        return _wasting_draft_with_low_magnesium(ctx, drafts, mg)
    cycle = [m for m in drafts if _before_cycle(ctx, m)]
    if state == "unmeasured" and cycle:
        return _wasting_draft_without_recent_magnesium(ctx, cycle, mg)
    return None


def _monitoring_suggestion(ctx: RuleContext, reason: str) -> tuple[Suggestion, ...]:
    if drafted_test(ctx, analyte_codes(ctx, "magnesium")):
        return ()
    sr = lab_service_request(ctx, "19123-9", reason)
    return (Suggestion("Order serum magnesium", (Action("create", "Order serum magnesium (LOINC 19123-9)", sr),),
                       is_recommended=True, key="order-magnesium"),)


def _wasting_draft_with_low_magnesium(ctx: RuleContext, drafts: list[MedicationUse], mg: LabResult) -> Finding:
    k = ctx.knowledge
    groups = group_by_ingredient(drafts)
    names = ", ".join(group_label(g) for g in groups)
    summary = f"Drafted {names} wastes magnesium; magnesium is {short_value(mg)} ({mg.effective.date()})"
    summary = with_action(summary, "consider an alternative" if any(_safer_alternative(ctx, g[0]) for g in groups)
                          else "replace and monitor magnesium")
    lines = ["Latest magnesium is low:", "", lab_fact_line(mg, "magnesium", now=ctx.now), "", "Drafted magnesium-wasting order(s):", ""]
    for group in groups:
        lines += grouped_med_lines(ctx, group)
        for cls in sorted(c for c in group[0].classes() if k.model.classes[c].wasting):
            lines.append(f"  - {k.model.classes[cls].display}: {k.model.classes[cls].mechanism}")
    removable = [g for g in groups if _safer_alternative(ctx, g[0])]
    needed = [g for g in groups if not _safer_alternative(ctx, g[0])]
    suggestions: list[Suggestion] = []
    lines += ["", TODO]
    if removable:
        lines.append("Consider an alternative without magnesium wasting for " + ", ".join(g[0].label for g in removable) + ".")
        for g in removable:
            for m in g:
                if _order_ref(m):
                    which = f" ({_order_ref(m)})" if len(g) > 1 else ""
                    suggestions.append(Suggestion(f"Remove the draft order for {m.label}{which}",
                                                  (Action("delete", f"Remove the draft order {_order_ref(m)}",
                                                          resource_id=_order_ref(m)),), key=f"delete-{_order_ref(m)}"))
    if needed:
        lines.append("Usually needed and without a like-for-like alternative: " + ", ".join(g[0].label for g in needed)
                     + ". Replace magnesium and monitor it during treatment" +
                     (", and before each cycle" if any(_before_cycle(ctx, g[0]) for g in needed) else "") + ".")
        suggestions.extend(_monitoring_suggestion(ctx, "Monitoring during a magnesium-wasting drug with low magnesium"))
        if drafts_with_class(ctx, "magnesium-supplement"):
            lines.append("Magnesium replacement is already among the draft orders.")
        else:
            regimen = _magnesium_replacement(ctx, mg)
            if regimen is None:
                lines.append(paediatric_text(ctx))
            else:
                suggestions.append(Suggestion(f"Add magnesium: {regimen.label}", (Action("create", regimen.label,
                                              regimen.resource),), is_recommended=True, key="add-magnesium"))
    return Finding(rule="order-wasting-drug", indicator=ctx.indicator("order-wasting-drug", "low"), summary=summary,
                   detail="\n".join(lines), facts=(mg.to_fact(),) + tuple(m.to_fact() for m in drafts), source="guidance",
                   suggestions=tuple(suggestions), override_reasons=WASTING_DRAFT_OVERRIDES + GENERAL_OVERRIDES[1:],
                   selection_behavior="any")


def _wasting_draft_without_recent_magnesium(ctx: RuleContext, drafts: list[MedicationUse], mg: LabResult | None) -> Finding:
    groups = group_by_ingredient(drafts)
    names = ", ".join(group_label(g) for g in groups)
    days = ctx.policy("magnesium_recent_days")
    when = f"last {mg.effective.date()}" if mg is not None else "never measured"
    summary = f"Drafted {names}: measure magnesium before the cycle ({when})"
    lines = ["Drafted drug(s) that need a magnesium before each cycle:", ""] + grouped_med_lines(ctx, drafts) + [""]
    for cls in sorted({c for m in drafts for c in m.classes() if ctx.knowledge.model.classes[c].measure_before_cycle}):
        c = ctx.knowledge.model.classes[cls]
        lines.append(f"- {c.display}: {c.mechanism} ({ctx.knowledge.source(c.source).citation})")
        lines.append(f"  - {ctx.knowledge.source(c.measure_before_cycle_source or c.source).citation}")
    lines += ["", (lab_fact_line(mg, "magnesium", now=ctx.now) + f" — older than {days} days") if mg is not None
              else "- no magnesium result in the record", "",
              "Measure serum magnesium before this cycle and replace it if low.", "", policy_note(ctx, "magnesium_recent_days")]
    facts = tuple(m.to_fact() for m in drafts) + ((mg.to_fact(),) if mg is not None else ())
    sources = [ctx.knowledge.model.classes[c].measure_before_cycle_source for m in drafts for c in sorted(m.classes())
               if ctx.knowledge.model.classes[c].measure_before_cycle]
    return Finding(rule="order-wasting-drug", indicator=ctx.indicator("order-wasting-drug", "before-cycle"), summary=summary,
                   detail="\n".join(lines), facts=facts, source=next((x for x in sources if x), "guidance"),
                   suggestions=_monitoring_suggestion(ctx, "Magnesium before a cycle of a magnesium-wasting drug"),
                   override_reasons=GENERAL_OVERRIDES)


def _magnesium_replacement(ctx: RuleContext, mg: LabResult) -> Regimen | None:
    """The replacement matched to the severity (IV if severe, else oral at night), reduced with low kidney
    function; None for a child (no adult dose)."""
    return iv_regimen(ctx) if below(mg, ctx.threshold("magnesium_severe")) else oral_regimen(ctx)


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
                  TODO, "Low magnesium keeps potassium low (renal potassium loss): replace magnesium with the potassium."]
        regimen = _magnesium_replacement(ctx, mg)
        if regimen is None:
            lines += ["", paediatric_text(ctx)]
        else:
            suggestions = (Suggestion(f"Add magnesium: {regimen.label}", (Action("create", regimen.label, regimen.resource),),
                                      is_recommended=True, key="add-magnesium"),)
        if ctx.kidney.below:
            lines += ["", VALUES, kidney_line(ctx)]
            facts += list(ctx.kidney.facts())
        facts.append(mg.to_fact())
    else:
        window = float(ctx.policy("magnesium_recent_days"))
        summary = f"Potassium drafted without a recent magnesium ({last_measured_text(ctx, mg)}): check magnesium"
        lines += [(lab_fact_line(mg, "magnesium", now=ctx.now) + f" — older than {window:g} days")
                  if mg is not None else f"- magnesium: {last_measured_text(ctx, None)}", "", TODO,
                  "Hypokalemia does not respond to potassium until low magnesium is corrected: measure magnesium.", "",
                  policy_note(ctx, "magnesium_recent_days")]
        if mg is not None:
            facts.append(mg.to_fact())
        sr = lab_service_request(ctx, "19123-9", "Potassium replacement: check magnesium first")
        suggestions = (Suggestion("Order serum magnesium", (Action("create", "Order serum magnesium (LOINC 19123-9)", sr),),
                                  is_recommended=True, key="order-magnesium"),)
    return Finding(rule="order-potassium-without-magnesium", indicator=ctx.indicator("order-potassium-without-magnesium", "drafted"),
                   summary=summary, detail="\n".join(lines), facts=tuple(facts), source="guidance", suggestions=suggestions,
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
    lines = [f"Kidney function is below {kf.limit:g} mL/min: magnesium is renally excreted and accumulates "
             "(hypermagnesemia risk).", "", kidney_line(ctx), "",
             f"Ceiling in severe renal insufficiency: {renal_ceiling_text(ctx)}; "
             f"{ceiling_g:g} g = {ceiling_mmol:.1f} mmol Mg at {per_g:g} mmol/g. The label sets it for parenteral magnesium sulfate; it "
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
    return Finding(rule="order-magnesium-renal", indicator=ctx.indicator("order-magnesium-renal", "over" if exceeded else "within"),
                   summary=summary[:200], detail="\n".join(lines), facts=kf.facts() + tuple(o.order.to_fact() for o in load.orders),
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
    high = magnesium_high_now(ctx)  # the latest magnesium, when high
    if high is not None and (obstetric is None or high.value > ctx.threshold("magnesium_obstetric_max")):
        return None  # the hypermagnesemia card owns it
    lines = ["Drafted IV magnesium sulfate:", ""]
    for m in drafts:
        lines.append(med_line(ctx, m, with_class=False))
        d = magnesium_dose(m, ctx.knowledge)
        lines.append(f"  - per dose: {d.explanation}" if d is not None else "  - dose not convertible to magnesium sulfate grams")
    lines.append("")
    case = "indicated"
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
            lines.append(TODO)
            lines.append(f"Severe symptomatic hypomagnesemia: {regimen}." + ("" if ctx.kidney.below else
                         f" {label_iv_maximum_text(ctx)}."))
    elif low is not None:
        summary = f"IV magnesium with magnesium {short_value(low)} ({low.effective.date()}): oral first unless symptomatic"
        lines += [lab_fact_line(low, "magnesium", now=ctx.now, cutoffs=(severe,)) + " — low, not severe", "",
                  f"The guidance reserves IV magnesium for severe symptomatic deficiency (< {severe:g} mg/dL) or failure of "
                  "oral replacement (magnesium oxide at night, then alfacalcidol)."]
        if regimen is None:
            lines.append(paediatric_text(ctx))
    elif fresh is not None:
        case = "not-indicated"
        summary = f"IV magnesium drafted while magnesium is in range ({short_value(fresh)}, {fresh.effective.date()})"
        lines += [lab_fact_line(fresh, "magnesium", now=ctx.now) + " — within range", "",
                  "Check the indication (hypermagnesemia risk)."]
    else:
        case = "not-indicated"
        window = float(ctx.policy("magnesium_recent_days"))
        summary = f"IV magnesium drafted without a recent magnesium level ({last_measured_text(ctx, latest, window if latest else None)})"
        lines += [(lab_fact_line(latest, "magnesium", now=ctx.now) + " — not recent") if latest is not None else
                  f"- magnesium: {last_measured_text(ctx, None)}", "", "Measure magnesium before (or with) replacement.",
                  "", policy_note(ctx, "magnesium_recent_days")]
    lines += ["", VALUES, kidney_line(ctx), "", TODO, TOXICITY_WATCH]
    facts = tuple(m.to_fact() for m in drafts) + ((latest.to_fact(),) if latest is not None else ()) + ctx.kidney.facts()
    indicator = ctx.indicator("order-iv-magnesium", case)
    policy = ctx.knowledge.model.indicators["order-iv-magnesium"][case]  # the card cites what its case rests on
    return Finding(rule="order-iv-magnesium", indicator=indicator, summary=summary, detail="\n".join(lines), facts=facts,
                   source=policy.source, override_reasons=GENERAL_OVERRIDES if indicator != "info" else ())


def order_vitamin_d_analogue(ctx: RuleContext) -> Finding | None:
    """Drafted alfacalcidol or calcitriol: weekly calcium checks at first (suggested as a ServiceRequest), and a
    warning when calcium is already above range (judged on a recent ionized calcium, else albumin-corrected, else
    total calcium; the card says which) or a drafted daily dose (dose x frequency, from the structured timing first,
    then the dosage text) exceeds that drug's own daily ceiling (alfacalcidol: guidance; calcitriol: its label). When
    the frequency is unreadable a single dose above the daily ceiling still warns. A child gets no adult dosing text
    (the ceilings are adult figures and only an outer bound)."""
    drafts = drafts_with_class(ctx, "vitamin-d-analogue")
    if not drafts:
        return None
    k = ctx.knowledge
    status = calcium_status(ctx)  # ionized (recent) > albumin-corrected > total: the card says which
    ca = status.inputs[0] if status is not None else None
    high = status is not None and status.high
    names = ", ".join(m.label for m in drafts)
    interval = int(ctx.threshold("calcium_check_interval_days"))
    lines = ["Drafted active vitamin D analogue:", ""]
    over: list[str] = []
    for group in group_by_ingredient(drafts):
        m0 = group[0]
        if len(group) > 1:
            lines.append(f"- **{m0.label}**: {len(group)} drafted orders, their daily doses added")
        doses = []
        for m in group:
            lines.append(("  " if len(group) > 1 else "") + med_line(ctx, m, with_class=False))
            dose = daily_micrograms(m)
            doses.append(dose)
            lines.append(("  " if len(group) > 1 else "") + f"  - daily dose: {dose.explanation}")
        ceiling_key = next((k.model.ingredients[i.ingredient].daily_max for i in m0.ingredients
                            if k.model.ingredients[i.ingredient].daily_max), None)
        if ceiling_key is None:
            lines.append("  - no daily ceiling in the knowledge for this product: check the dose against its label")
            continue
        t = k.threshold(ceiling_key)
        ceiling = float(t.value)
        name = m0.drug_name
        known = [d.per_day_ug for d in doses if d.per_day_ug is not None]
        total = sum(known) if known else None
        if len(group) > 1 and total is not None:
            lines.append(f"  - {name} drafted in all: {' + '.join(f'{v:.3g}' for v in known)} = {total:.3g} µg a day"
                         + ("" if len(known) == len(doses) else " (at least: a frequency is unreadable)"))
        lines.append(f"  - ceiling for {name}: {ceiling:g} µg a day ({k.source(t.source).citation})")
        if total is not None and total > ceiling:
            over.append(f"{name} {total:.3g} µg a day > {ceiling:g} µg a day")
        else:
            single = [d.per_dose_ug for d in doses if d.per_day_ug is None and d.per_dose_ug is not None and d.per_dose_ug > ceiling]
            if single:
                over.append(f"{name}: one dose of {max(single):g} µg > {ceiling:g} µg a day")
    lines.append("")
    ingredients = {i.ingredient for m in drafts for i in m.ingredients}
    if ctx.child:
        lines.append(paediatric_text(ctx) + " The daily ceilings above are adult figures, shown only as an outer bound.")
        ingredients = set()
    if "alfacalcidol" in ingredients:
        lines.append(f"Alfacalcidol: start {ctx.threshold('alfacalcidol_start_ug'):g} µg daily, increase gradually up to "
                     f"{ctx.threshold('alfacalcidol_max_ug'):g} µg daily (guidance).")
    if "calcitriol" in ingredients:
        lines.append(f"Calcitriol: start 0.25 µg a day and increase slowly; the label's adult ranges reach "
                     f"{ctx.threshold('calcitriol_max_ug'):g} µg a day (the alfacalcidol ceiling does not apply to calcitriol).")
    lines.append(f"Check serum calcium at least every {interval} days at first (hypercalcaemia causes stones and renal failure).")
    if over:
        lines.append("**Daily dose above the drug's ceiling: " + "; ".join(over) + "**")
    lines.append("")
    if status is None or ca is None:
        lines.append("- no serum calcium in the record: measure a baseline")
        summary = f"{names} drafted: no calcium on record; check calcium weekly at first"
    else:
        lines += [f"Calcium{' — **above range**' if high else ''}:"] + status.lines(ctx.now) + unreadable_note(ctx, ca)
        if high:
            summary = f"{names} drafted with calcium already high ({status.label} {status.shown}, {ca.effective.date()})"
        else:
            summary = f"{names} drafted: check calcium weekly at first (latest {status.label} {status.shown}, {ca.effective.date()})"
    if over and not high:
        summary = "Vitamin D analogue drafted above its own daily ceiling: " + "; ".join(over)
    suggestions: tuple[Suggestion, ...] = ()
    if not drafted_test(ctx, analyte_codes(ctx, "calcium")):
        sr = lab_service_request(ctx, "17861-6", "Alfacalcidol/calcitriol: weekly serum calcium", {
            "occurrenceTiming": {"repeat": {"frequency": 1, "period": interval, "periodUnit": "d"}}})
        suggestions = (Suggestion(f"Order serum calcium every {interval} days", (Action("create", "Order serum calcium (LOINC 17861-6), "
                                  f"every {interval} days", sr),), is_recommended=True, key="order-calcium"),)
    warn = high or bool(over)
    facts = tuple(m.to_fact() for m in drafts) + (tuple(status.facts()) if status is not None else ())
    return Finding(rule="order-vitamin-d-analogue", indicator=ctx.indicator("order-vitamin-d-analogue",
                   "high-or-over" if warn else "monitor"), summary=summary,
                   detail="\n".join(lines), facts=facts, source="guidance", suggestions=suggestions,
                   override_reasons=GENERAL_OVERRIDES if warn else ())
