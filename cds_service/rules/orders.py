"""Order-level rules: evaluated on order-select (selected drafts) and order-sign (all drafts) only."""
from __future__ import annotations

from typing import Any

from ..knowledge import ATC, RXNORM
from ..record.model import LabResult, MedicationUse
from .base import Action, Finding, OverrideReason, RuleContext, Suggestion, lab_fact_line, short_value
from .common import (
    GENERAL_OVERRIDES,
    analyte_codes,
    below,
    calcium_status,
    unreadable_note,
    derived_line,
    drafted_test,
    drafts_with_class,
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
from .doses import administrations_per_48h, magnesium_dose, micrograms

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


def _magnesium_replacement(ctx: RuleContext, mg: LabResult) -> tuple[str, dict[str, Any]]:
    """A draft MedicationRequest for magnesium matched to the severity (IV if severe, else oral at night)."""
    severe = below(mg, ctx.threshold("magnesium_severe"))
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
        summary = f"Potassium drafted with magnesium {short_value(mg)} ({mg.effective.date()}): correct magnesium first"
        lines += [lab_fact_line(mg, "magnesium") + " — **low**", *unreadable_note(ctx, mg), "",
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
    if low is not None and below(low, severe):
        summary = f"IV magnesium for severe hypomagnesemia ({short_value(low)}): {_iv_regimen(ctx)}"
        lines += [lab_fact_line(low, "magnesium") + f" — severe (< {severe:g} mg/dL)", "",
                  f"Severe symptomatic hypomagnesemia: {_iv_regimen(ctx)}. The label allows up to "
                  f"{ctx.threshold('label_mgso4_max_g_per_litre'):g} g (about 40 mEq) in 1 L over 3 h."]
    elif low is not None:
        summary = f"IV magnesium with magnesium {short_value(low)} ({low.effective.date()}): oral first unless symptomatic"
        lines += [lab_fact_line(low, "magnesium") + " — low, not severe", "",
                  f"The guidance reserves IV magnesium for severe symptomatic deficiency (< {severe:g} mg/dL) or failure of "
                  "oral replacement (magnesium oxide at night, then alfacalcidol). If IV is needed: up to "
                  f"{ctx.threshold('label_mgso4_max_g_per_litre'):g} g in 1 L over 3 h (label)."]
    elif fresh is not None:
        indicator = "warning"
        summary = f"IV magnesium drafted but magnesium is {short_value(fresh)} ({fresh.effective.date()}), not low"
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
