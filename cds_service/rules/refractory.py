"""Refractory low magnesium (the stepwise pathway), and potassium/calcium made refractory by low magnesium."""
from __future__ import annotations

from ..record.model import MedicationUse
from .base import Finding, RuleContext, lab_fact_line, short_value
from .common import (
    CalciumStatus,
    calcium_from_result,
    calcium_series,
    calcium_status,
    unreadable_facts,
    unreadable_note,
    GENERAL_OVERRIDES,
    active_with_class,
    derived_line,
    has_night_dosing,
    is_high,
    kidney_function,
    magnesium_low,
    magnesium_low_or_unmeasured,
    med_line,
    mg_mmol,
    persistent_low,
    policy_note,
    wasting_classes,
)
from .doses import magnesium_dose

PARENTERAL = ("intravenous", "subcutaneous", "intramuscular")


def _oral_magnesium(ctx: RuleContext) -> list[MedicationUse]:
    """Active magnesium supplements not given parenterally (route oral or not recorded), started before now."""
    return [m for m in active_with_class(ctx, "magnesium-supplement") if m.route not in PARENTERAL]


def refractory_hypomagnesemia(ctx: RuleContext) -> Finding | None:
    """Low magnesium persisting (>= N low results over >= the span, policy) while an oral magnesium
    supplement is active: the guidance's stepwise pathway, naming the steps the data shows done.

    The supplement counts when active and (if its start is recorded) started no later than the latest
    low result, so the low value was measured on treatment. Suppresses `hypomagnesemia`.
    On order hooks: relevant when a drafted order is a magnesium/potassium/calcium product, a vitamin D
    analogue or a wasting drug (as for `hypomagnesemia`, which it replaces).
    """
    run = persistent_low(ctx, "magnesium", "magnesium_low", low=lambda r: magnesium_low(ctx, r))
    if run is None:
        return None
    latest = run[0]
    oral = [m for m in _oral_magnesium(ctx) if m.start is None or m.start <= latest.effective]
    if not oral:
        return None
    k = ctx.knowledge
    severe = ctx.threshold("magnesium_severe")
    critical = latest.value < severe
    span_days = (run[0].effective - run[-1].effective).total_seconds() / 86400
    summary = (f"Refractory hypomagnesemia: magnesium {latest.value:.2f} mg/dL on {latest.effective.date()}, "
               f"{len(run)} low results over {span_days:.0f} days on oral magnesium")
    facts: list[dict] = [r.to_fact() for r in run] + [m.to_fact() for m in oral]
    lines = [f"Magnesium has stayed low on {len(run)} consecutive results while oral magnesium is taken:", ""]
    lines += [lab_fact_line(r, "magnesium") for r in run]
    lines += ["", "Oral magnesium active:"] + [med_line(ctx, m, with_class=False) for m in oral]

    # Volume first
    lines += ["", "**Stepwise pathway (guidance), tailored to the data:**", "",
              "0. **Volume status first** — correct sodium and water depletion with IV saline before escalating: "
              "secondary hyperaldosteronism keeps the kidney wasting magnesium (and potassium)."]
    sodium = ctx.record.latest("sodium")
    if sodium is not None:
        lines.append(f"   - latest sodium {sodium.value:.0f} mmol/L on {sodium.effective.date()} ({sodium.source.reference}); "
                     "volume status itself is not in the record: assess it clinically.")
        facts.append(sodium.to_fact())
    else:
        lines.append("   - volume status is not in the record: assess it clinically.")
    diuretics = active_with_class(ctx, "loop-diuretic", "thiazide")
    if diuretics:
        lines.append("   - diuretic active (volume depletion and renal wasting): " + "; ".join(m.label for m in diuretics))
    wasting = [m for m in active_with_class(ctx, *wasting_classes(ctx))]
    if wasting:
        lines.append("   - magnesium-wasting drug(s) active: review " + ", ".join(m.label for m in wasting))
        facts += [m.to_fact() for m in wasting if m not in diuretics]

    # Kidney function before any escalation
    crcl, missing = kidney_function(ctx)
    if crcl is not None:
        lines.append(f"   - kidney function: creatinine clearance {crcl.value:.0f} mL/min ({crcl.extra.get('method')})")
        facts.append(crcl.to_fact())
        if crcl.value < ctx.threshold("crcl_aggressive_replacement_min"):
            lines.append(f"   - **below {ctx.threshold('crcl_aggressive_replacement_min'):g} mL/min: no aggressive replacement; "
                         f"at most {ctx.threshold('renal_mgso4_max_g_per_48h'):g} g magnesium sulfate per 48 h**")
    else:
        lines.append("   - kidney function could not be computed (missing: " + ", ".join(missing) + "): check it before escalating.")

    # Step 1: oral optimisation
    lo, hi = ctx.threshold("oral_mg_min_mmol_per_day"), ctx.threshold("oral_mg_max_mmol_per_day")
    at_night = [m for m in oral if has_night_dosing(ctx, m)]
    mgo = ctx.threshold("magnesium_oxide_molar_mass")  # mg magnesium oxide per mmol Mg
    lines.append(f"1. **Optimise oral magnesium** — magnesium oxide {lo:g}-{hi:g} mmol a day "
                 f"(about {lo * mgo:.0f}-{hi * mgo:.0f} mg magnesium oxide) given at night, when gut transit is slowest.")
    if at_night:
        lines.append("   - _done_: dosing text says night/bedtime for " + ", ".join(f"{m.label} ('{m.timing}')" for m in at_night))
    else:
        lines.append("   - _not shown_: no dosing text says night/bedtime (" +
                     ", ".join(f"{m.label}: '{m.timing}'" if m.timing else f"{m.label}: no dosing text" for m in oral) + ")")
    for m in oral:
        d = magnesium_dose(m, k)
        if d is not None:
            lines.append(f"   - {m.label}: {d.explanation} per dose (target {lo:g}-{hi:g} mmol a day)")
        elif m.dose is not None:
            lines.append(f"   - {m.label}: dose {m.dose.value:g} {m.dose.unit} could not be converted to mmol magnesium")

    # Step 2: alfacalcidol
    vit_d = active_with_class(ctx, "vitamin-d-analogue")
    start, top = ctx.threshold("alfacalcidol_start_ug"), ctx.threshold("alfacalcidol_max_ug")
    lines.append(f"2. **Add oral alfacalcidol (1-alpha hydroxycholecalciferol)** — {start:g} µg daily, increased gradually "
                 f"up to {top:g} µg daily; serum calcium at least weekly at first (hypercalcaemia: stones, renal failure).")
    if vit_d:
        lines.append("   - _done_: active " + "; ".join(med_line(ctx, m, with_class=False)[2:] for m in vit_d))
        facts += [m.to_fact() for m in vit_d]
        ca = ctx.record.latest("calcium")
        if ca is None:
            lines.append("   - no serum calcium in the record: check it weekly while on alfacalcidol")
        else:
            facts.append(ca.to_fact())
            high = " — **above range**" if is_high(ctx, ca, "calcium_high") else ""
            lines.append(f"   - latest calcium {ca.value:.2f} mg/dL on {ca.effective.date()} ({ca.source.reference}){high}")
    else:
        lines.append("   - _not yet_: no active alfacalcidol or calcitriol in the record")

    # Step 3: parenteral
    parenteral = [m for m in active_with_class(ctx, "magnesium-supplement") if m.route in PARENTERAL]
    lines.append(f"3. **Parenteral magnesium** if oral steps fail — severe symptomatic (< {severe:g} mg/dL): magnesium sulfate "
                 f"{ctx.threshold('iv_mgso4_loading_min_g'):g}-{ctx.threshold('iv_mgso4_loading_max_g'):g} g IV over "
                 f"{ctx.threshold('iv_mgso4_loading_minutes'):g} min, then {ctx.threshold('iv_mgso4_infusion_min_g'):g}-"
                 f"{ctx.threshold('iv_mgso4_infusion_max_g'):g} g in {ctx.threshold('iv_mgso4_infusion_ml'):g} mL over "
                 f"{ctx.threshold('iv_mgso4_infusion_hours'):g} h; chronic maintenance: subcutaneous magnesium sulfate "
                 f"{ctx.threshold('sc_mgso4_min_mmol'):g}-{ctx.threshold('sc_mgso4_max_mmol'):g} mmol in saline, "
                 f"1-{ctx.threshold('sc_mgso4_max_per_week'):g} times a week.")
    if parenteral:
        lines.append("   - _done_: parenteral magnesium active: " + "; ".join(f"{m.label} ({m.route})" for m in parenteral))
        facts += [m.to_fact() for m in parenteral]
    else:
        lines.append("   - _not shown_: no active IV or subcutaneous magnesium in the record")
    if critical:
        lines.append(f"   - latest value {latest.value:.2f} mg/dL ({mg_mmol(ctx, latest.value):.2f} mmol/L) is below {severe:g} mg/dL: "
                     "IV replacement applies if symptomatic")
    lines += ["", "Find the cause: fractional excretion of magnesium and urine calcium/creatinine (see the FEMg card).",
              "", policy_note(ctx, "refractory_min_low_results", "refractory_min_span_hours", "refractory_window_days")]
    if crcl is not None:
        lines.append(derived_line(crcl, "creatinine clearance"))
    return Finding(rule="refractory-hypomagnesemia", indicator="critical" if critical else "warning", summary=summary,
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
    if state == "low":
        mg_text = f"magnesium low ({short_value(mg)})"
    elif mg is None:
        mg_text = "magnesium not measured"
    else:
        mg_text = f"magnesium not measured since {mg.effective.date()}"
    shown = f"{status.label} {status.shown}" if status is not None else f"{analyte} {short_value(latest, digits)}"
    summary = (f"Refractory hypo{name}: {shown} on {latest.effective.date()} on "
               f"replacement, {mg_text}: correct magnesium first")
    lines = [f"{analyte.replace('_', ' ').capitalize()} has stayed low on {len(run)} results over {span_days:.0f} days while it is being replaced:", ""]
    if status is not None:
        lines += ["Calcium now:"] + status.lines() + ["", "Low results (each judged on the best measure available with it):"]
        for r in run:
            judged = calcium_from_result(ctx, r)
            lines.append(lab_fact_line(r, r.analyte.replace("_", " "), digits)
                         + ("" if judged.basis in ("total", "ionized", "reported-corrected")
                            else f" — {judged.label} {judged.shown}"))
    else:
        lines += [lab_fact_line(r, analyte, digits) for r in run]
    lines += unreadable_note(ctx, latest, analyte)
    lines += ["", "Replacement active:"] + [med_line(ctx, m, with_class=False) for m in supplements]
    lines += ["", "Magnesium:"]
    if mg is not None:
        lines.append(lab_fact_line(mg, "magnesium") + (" — **low**" if state == "low" else
                                                       f" — older than {ctx.policy('magnesium_recent_days')} days"))
    else:
        lines.append("- no magnesium result in the record")
    lines += ["",
              f"Low magnesium makes hypo{name} refractory: it does not respond to replacement until magnesium is corrected "
              f"({mechanism}). "
              + ("Correct magnesium first." if state == "low" else "Check magnesium now and correct it if low."),
              "", policy_note(ctx, "electrolyte_refractory_min_low_results", "electrolyte_refractory_min_span_hours",
                              "refractory_window_days", "magnesium_recent_days")]
    facts = [r.to_fact() for r in run] + [m.to_fact() for m in supplements] + ([mg.to_fact()] if mg is not None else [])
    if status is not None:
        facts += status.facts()
    facts += unreadable_facts(ctx, latest, mg)
    return Finding(rule=rule, indicator="warning", summary=summary, detail="\n".join(lines), facts=tuple(facts),
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
