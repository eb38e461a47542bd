"""Order-level rules: evaluated on order-select (selected drafts) and order-sign (all drafts) only."""
from __future__ import annotations

from typing import Any

from ..knowledge import ATC, RXNORM
from ..record.model import LabResult, MedicationUse
from .base import Action, Finding, OverrideReason, RuleContext, Suggestion, lab_fact_line
from .common import (
    GENERAL_OVERRIDES,
    analyte_codes,
    derived_line,
    drafted_test,
    drafts_with_class,
    is_high,
    kidney_function,
    lab_service_request,
    magnesium_is_low,
    magnesium_low_or_unmeasured,
    med_line,
    policy_note,
    recent,
    subject,
    wasting_classes,
)
from .common import (
    group_by_ingredient,
    group_label,
    grouped_med_lines,
    systemic_drafts_with_class,
)
from .doses import administrations_per_48h, daily_micrograms, magnesium_dose

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"

WASTING_DRAFT_OVERRIDES = (
    OverrideReason("benefit-outweighs-risk", "Benefit outweighs the magnesium risk; magnesium will be monitored"),
    OverrideReason("magnesium-being-replaced", "Magnesium is being replaced"),
    OverrideReason("no-alternative", "No suitable alternative"),
)


def _order_ref(m: MedicationUse) -> str | None:
    return m.source.reference if m.source.id else None


def _iv_regimen(ctx: RuleContext) -> str:
    t = ctx.threshold
    return (f"magnesium sulfate {t('iv_mgso4_loading_min_g'):g}-{t('iv_mgso4_loading_max_g'):g} g IV over "
            f"{t('iv_mgso4_loading_minutes'):g} min, then {t('iv_mgso4_infusion_min_g'):g}-{t('iv_mgso4_infusion_max_g'):g} g "
            f"in {t('iv_mgso4_infusion_ml'):g} mL over {t('iv_mgso4_infusion_hours'):g} h")


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
    summary = f"Drafted {names} wastes magnesium; magnesium is {mg.value:.2f} mg/dL ({mg.effective.date()})"
    lines = ["Latest magnesium is low:", "", lab_fact_line(mg, "magnesium"), "", "Drafted magnesium-wasting order(s):", ""]
    for group in groups:
        lines += grouped_med_lines(ctx, group)
        for cls in sorted(c for c in group[0].classes() if k.model.classes[c].wasting):
            lines.append(f"  - {k.model.classes[cls].display}: {k.model.classes[cls].mechanism}")
    removable = [g for g in groups if _safer_alternative(ctx, g[0])]
    needed = [g for g in groups if not _safer_alternative(ctx, g[0])]
    suggestions: list[Suggestion] = []
    lines.append("")
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
            label, res = _magnesium_replacement(ctx, mg)
            suggestions.append(Suggestion(f"Add magnesium: {label}", (Action("create", label, res),), is_recommended=True,
                                          key="add-magnesium"))
    return Finding(rule="order-wasting-drug", indicator="warning", summary=summary, detail="\n".join(lines),
                   facts=(mg.to_fact(),) + tuple(m.to_fact() for m in drafts), source="guidance",
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
    lines += ["", (lab_fact_line(mg, "magnesium") + f" — older than {days} days") if mg is not None
              else "- no magnesium result in the record", "",
              "Measure serum magnesium before this cycle and replace it if low.", "", policy_note(ctx, "magnesium_recent_days")]
    facts = tuple(m.to_fact() for m in drafts) + ((mg.to_fact(),) if mg is not None else ())
    sources = [ctx.knowledge.model.classes[c].measure_before_cycle_source for m in drafts for c in sorted(m.classes())
               if ctx.knowledge.model.classes[c].measure_before_cycle]
    return Finding(rule="order-wasting-drug", indicator="warning", summary=summary, detail="\n".join(lines), facts=facts,
                   source=next((x for x in sources if x), "guidance"),
                   suggestions=_monitoring_suggestion(ctx, "Magnesium before a cycle of a magnesium-wasting drug"),
                   override_reasons=GENERAL_OVERRIDES)


def _magnesium_replacement(ctx: RuleContext, mg: LabResult) -> tuple[str, dict[str, Any]]:
    """A draft MedicationRequest for magnesium matched to the severity (IV if severe, else oral at night)."""
    severe = mg.value < ctx.threshold("magnesium_severe")
    if severe:
        label = f"Magnesium sulfate IV: {_iv_regimen(ctx)}"
        res = {
            "resourceType": "MedicationRequest", "status": "draft", "intent": "proposal", "subject": subject(ctx),
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6585", "display": "magnesium sulfate"}],
                                          "text": "Magnesium sulfate injection"},
            "dosageInstruction": [{
                "text": _iv_regimen(ctx),
                "route": {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]},
                "doseAndRate": [{"doseQuantity": {"value": ctx.threshold("iv_mgso4_loading_max_g"), "unit": "g",
                                                  "system": UCUM, "code": "g"}}],
            }],
        }
        return label, res
    lo = ctx.threshold("oral_mg_min_mmol_per_day")
    mgo = ctx.threshold("magnesium_oxide_molar_mass")
    text = f"{lo:g} mmol magnesium (about {lo * mgo:.0f} mg magnesium oxide) by mouth at night"
    res = {
        "resourceType": "MedicationRequest", "status": "draft", "intent": "proposal", "subject": subject(ctx),
        "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "A12CC10", "display": "magnesium oxide"}],
                                      "text": "Magnesium oxide"},
        "dosageInstruction": [{
            "text": text,
            "route": {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]},
            "doseAndRate": [{"doseQuantity": {"value": lo, "unit": "mmol", "system": UCUM, "code": "mmol"}}],
        }],
    }
    return f"Oral magnesium oxide: {text}", res


def order_potassium_without_magnesium(ctx: RuleContext) -> Finding | None:
    """A drafted potassium supplement while magnesium is low (suggest magnesium replacement matched to the
    severity) or not measured within the recent window (suggest a serum magnesium, unless one is drafted)."""
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
        lines += [lab_fact_line(k_latest, "potassium", 1)]
        facts.append(k_latest.to_fact())
    if state == "low":
        assert mg is not None
        summary = f"Potassium drafted with magnesium {mg.value:.2f} mg/dL ({mg.effective.date()}): correct magnesium first"
        lines += [lab_fact_line(mg, "magnesium") + " — **low**", "",
                  "Low magnesium keeps potassium low (renal potassium loss): replace magnesium with the potassium."]
        label, res = _magnesium_replacement(ctx, mg)
        crcl, _ = kidney_function(ctx)
        if crcl is not None and crcl.value < ctx.threshold("crcl_aggressive_replacement_min"):
            lines += ["", f"Creatinine clearance {crcl.value:.0f} mL/min: no aggressive replacement, at most "
                          f"{ctx.threshold('renal_mgso4_max_g_per_48h'):g} g magnesium sulfate per 48 h.",
                      derived_line(crcl, "creatinine clearance", 0)]
            facts.append(crcl.to_fact())
        suggestions = (Suggestion(f"Add magnesium: {label}", (Action("create", label, res),), is_recommended=True,
                                  key="add-magnesium"),)
        facts.append(mg.to_fact())
    else:
        when = f"last {mg.effective.date()}" if mg is not None else "never measured"
        summary = f"Potassium drafted without a recent magnesium ({when}): check magnesium"
        lines += [(lab_fact_line(mg, "magnesium") + f" — older than {ctx.policy('magnesium_recent_days')} days")
                  if mg is not None else "- no magnesium result in the record", "",
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
    """Drafted magnesium (any route) with creatinine clearance below 20 mL/min: the 20 g magnesium sulfate per
    48 h ceiling and monitoring; critical when a drafted dose (per administration, or per 48 h when the
    dosage text gives the frequency) exceeds it. Doses converted explicitly: g/mg of sulfate, mmol, mEq."""
    drafts = drafts_with_class(ctx, "magnesium-supplement")
    if not drafts:
        return None
    crcl, _ = kidney_function(ctx)
    limit = ctx.threshold("crcl_aggressive_replacement_min")
    if crcl is None or crcl.value >= limit:
        return None
    ceiling_g = ctx.threshold("renal_mgso4_max_g_per_48h")
    ceiling_mmol = ceiling_g * ctx.threshold("mgso4_mmol_per_g")
    exceeded: list[str] = []
    lines = [f"Creatinine clearance is below {limit:g} mL/min:", "", derived_line(crcl, "creatinine clearance", 0), "",
             f"Ceiling in severe renal insufficiency: **{ceiling_g:g} g magnesium sulfate per 48 h** "
             f"(= {ceiling_mmol:.1f} mmol Mg at {ctx.threshold('mgso4_mmol_per_g'):g} mmol/g). The label sets it for "
             "parenteral magnesium sulfate; it is applied here as the upper bound for magnesium by any route, and "
             "below this clearance the guidance advises against aggressive replacement of any kind.", "", "Drafted magnesium:"]
    for m in drafts:
        lines.append(med_line(ctx, m, with_class=False))
        d = magnesium_dose(m, ctx.knowledge)
        if d is None:
            lines.append("  - the dose could not be converted to magnesium (unit or salt not convertible): check it against the ceiling")
            continue
        lines.append(f"  - per dose: {d.explanation}")
        per48 = administrations_per_48h(m.timing)
        if d.mmol > ceiling_mmol:
            exceeded.append(f"{m.label}: one dose {d.mmol:.1f} mmol > {ceiling_mmol:.1f} mmol")
        if per48 is None:
            lines.append("  - frequency not readable from the dosage text: the 48-h total could not be computed")
        else:
            total = d.mmol * per48
            lines.append(f"  - {per48:g} doses per 48 h from '{m.timing}': {total:.1f} mmol Mg"
                         + (f" = {total / ctx.threshold('mgso4_mmol_per_g'):.1f} g magnesium sulfate" if d.sulfate_g is not None else ""))
            if total > ceiling_mmol and d.mmol <= ceiling_mmol:
                exceeded.append(f"{m.label}: {total:.1f} mmol per 48 h > {ceiling_mmol:.1f} mmol")
    lines += ["", "Monitor serum magnesium frequently (at least daily during IV replacement); toxicity: loss of patellar "
                  "reflexes, respiratory depression, hypotension, bradycardia (calcium chloride reverses it)."]
    if exceeded:
        lines[0:0] = ["**The drafted dose exceeds the renal ceiling:** " + "; ".join(exceeded), ""]
        summary = f"Drafted magnesium exceeds {ceiling_g:g} g MgSO4/48 h with creatinine clearance {crcl.value:.0f} mL/min"
    elif all(m.route in ("intravenous", "subcutaneous", "intramuscular") for m in drafts):
        summary = f"Creatinine clearance {crcl.value:.0f} mL/min: drafted magnesium limited to {ceiling_g:g} g MgSO4 per 48 h"
    else:
        summary = (f"Creatinine clearance {crcl.value:.0f} mL/min: no aggressive magnesium replacement; "
                   f"at most {ceiling_mmol:.0f} mmol Mg per 48 h, frequent levels")
    return Finding(rule="order-magnesium-renal", indicator="critical" if exceeded else "warning", summary=summary,
                   detail="\n".join(lines), facts=(crcl.to_fact(),) + tuple(m.to_fact() for m in drafts),
                   source="fda-mgso4-label", override_reasons=GENERAL_OVERRIDES)


def order_iv_magnesium(ctx: RuleContext) -> Finding | None:
    """Drafted IV magnesium sulfate: the regimen for the measured severity (severe < 1.2 mg/dL; low; not low;
    not measured recently) and the toxicity watch. Warning when magnesium is not low or not measured."""
    drafts = [m for m in drafts_with_class(ctx, "magnesium-supplement")
              if m.has_ingredient("magnesium sulfate") and m.route == "intravenous"]
    if not drafts:
        return None
    severe = ctx.threshold("magnesium_severe")
    latest = ctx.record.latest("magnesium")
    low = magnesium_is_low(ctx)
    fresh = recent(ctx, "magnesium", "magnesium_recent_days")
    lines = ["Drafted IV magnesium sulfate:", ""]
    for m in drafts:
        lines.append(med_line(ctx, m, with_class=False))
        d = magnesium_dose(m, ctx.knowledge)
        lines.append(f"  - per dose: {d.explanation}" if d is not None else "  - dose not convertible to magnesium sulfate grams")
    lines.append("")
    indicator = "info"
    if low is not None and low.value < severe:
        summary = f"IV magnesium for severe hypomagnesemia ({low.value:.2f} mg/dL): {_iv_regimen(ctx)}"
        lines += [lab_fact_line(low, "magnesium") + f" — severe (< {severe:g} mg/dL)", "",
                  f"Severe symptomatic hypomagnesemia: {_iv_regimen(ctx)}. The label allows up to "
                  f"{ctx.threshold('label_mgso4_max_g_per_litre'):g} g (about 40 mEq) in 1 L over 3 h."]
    elif low is not None:
        summary = f"IV magnesium with magnesium {low.value:.2f} mg/dL ({low.effective.date()}): oral first unless symptomatic"
        lines += [lab_fact_line(low, "magnesium") + " — low, not severe", "",
                  f"The guidance reserves IV magnesium for severe symptomatic deficiency (< {severe:g} mg/dL) or failure of "
                  "oral replacement (magnesium oxide at night, then alfacalcidol). If IV is needed: up to "
                  f"{ctx.threshold('label_mgso4_max_g_per_litre'):g} g in 1 L over 3 h (label)."]
    elif fresh is not None:
        indicator = "warning"
        summary = f"IV magnesium drafted but magnesium is {fresh.value:.2f} mg/dL ({fresh.effective.date()}), not low"
        lines += [lab_fact_line(fresh, "magnesium") + " — not low", "", "Check the indication (hypermagnesemia risk)."]
    else:
        indicator = "warning"
        when = f"last {latest.effective.date()}" if latest is not None else "never measured"
        summary = f"IV magnesium drafted without a recent magnesium level ({when})"
        lines += [(lab_fact_line(latest, "magnesium") + " — not recent") if latest is not None else
                  "- no magnesium result in the record", "", "Measure magnesium before (or with) replacement.",
                  "", policy_note(ctx, "magnesium_recent_days")]
    crcl, missing = kidney_function(ctx)
    lines.append("")
    if crcl is not None:
        lines.append(derived_line(crcl, "creatinine clearance", 0))
        if crcl.value < ctx.threshold("crcl_aggressive_replacement_min"):
            lines.append(f"  - below {ctx.threshold('crcl_aggressive_replacement_min'):g} mL/min: at most "
                         f"{ctx.threshold('renal_mgso4_max_g_per_48h'):g} g magnesium sulfate per 48 h")
    else:
        lines.append("Kidney function not computable (missing: " + ", ".join(missing) + "): check it before replacement.")
    lines += ["", TOXICITY_WATCH]
    facts = tuple(m.to_fact() for m in drafts) + ((latest.to_fact(),) if latest is not None else ()) \
        + ((crcl.to_fact(),) if crcl is not None else ())
    return Finding(rule="order-iv-magnesium", indicator=indicator, summary=summary, detail="\n".join(lines), facts=facts,
                   source="fda-mgso4-label", override_reasons=GENERAL_OVERRIDES if indicator != "info" else ())


def order_vitamin_d_analogue(ctx: RuleContext) -> Finding | None:
    """Drafted alfacalcidol or calcitriol: weekly calcium checks at first (suggested as a ServiceRequest), and a
    warning when the latest calcium is already above range or a drafted daily dose (dose x frequency, from the
    structured timing first, then the dosage text) exceeds that drug's own daily ceiling (alfacalcidol: guidance;
    calcitriol: its label). When the frequency is unreadable a single dose above the daily ceiling still warns."""
    drafts = drafts_with_class(ctx, "vitamin-d-analogue")
    if not drafts:
        return None
    k = ctx.knowledge
    ca = ctx.record.latest("calcium")
    high = ca is not None and is_high(ctx, ca, "calcium_high")
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
        name = " + ".join(i.ingredient for i in m0.ingredients) or m0.label
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
    if ca is None:
        lines.append("- no serum calcium in the record: measure a baseline")
        summary = f"{names} drafted: no calcium on record; check calcium weekly at first"
    else:
        lines.append(lab_fact_line(ca, "calcium") + (" — **above range**" if high else ""))
        if high:
            summary = f"{names} drafted with calcium already high ({ca.value:.2f} mg/dL, {ca.effective.date()})"
        else:
            summary = f"{names} drafted: check calcium weekly at first (latest {ca.value:.2f} mg/dL, {ca.effective.date()})"
    if over and not high:
        summary = "Vitamin D analogue drafted above its own daily ceiling: " + "; ".join(over)
    suggestions: tuple[Suggestion, ...] = ()
    if not drafted_test(ctx, analyte_codes(ctx, "calcium")):
        sr = lab_service_request(ctx, "17861-6", "Alfacalcidol/calcitriol: weekly serum calcium", {
            "occurrenceTiming": {"repeat": {"frequency": 1, "period": interval, "periodUnit": "d"}}})
        suggestions = (Suggestion(f"Order serum calcium every {interval} days", (Action("create", "Order serum calcium (LOINC 17861-6), "
                                  f"every {interval} days", sr),), is_recommended=True, key="order-calcium"),)
    warn = high or bool(over)
    facts = tuple(m.to_fact() for m in drafts) + ((ca.to_fact(),) if ca is not None else ())
    return Finding(rule="order-vitamin-d-analogue", indicator="warning" if warn else "info", summary=summary,
                   detail="\n".join(lines), facts=facts, source="guidance", suggestions=suggestions,
                   override_reasons=GENERAL_OVERRIDES if warn else ())
