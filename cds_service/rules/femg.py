"""Fractional excretion of magnesium: renal wasting vs extrarenal loss, or the tests to order when missing."""
from __future__ import annotations

from dataclasses import dataclass

from ..record.derived import Derived, femg, urine_ca_cr_ratio
from .base import Action, Finding, RuleContext, Suggestion, lab_fact_line
from .common import recent_exposures, wasting_classes  # issue 10 item 9
from .common import (
    GENERAL_OVERRIDES,
    active_with_class,
    analyte_codes,
    derived_line,
    drafted_test,
    egfr,
    kidney_function,
    lab_service_request,
    magnesium_is_low,
    magnesium_low,
)

FEMG_TESTS = (
    ("19124-7", "urine_magnesium", "Spot urine magnesium"),
    ("2161-8", "urine_creatinine", "Spot urine creatinine"),
    ("2160-0", "creatinine", "Serum creatinine"),
)


@dataclass(frozen=True)
class FemgAssessment:
    value: Derived | None
    missing: tuple[str, ...]
    kidney: Derived | None  # eGFR (else creatinine clearance) used to judge interpretability
    kidney_ok: bool | None  # None: kidney function unknown
    paired_low: bool


def assess_femg(ctx: RuleContext) -> FemgAssessment:
    """FEMg from a paired sample and whether kidney function allows interpreting it."""
    d, missing = femg(ctx.record, ctx.threshold("femg_pair_max_hours"))
    kidney = egfr(ctx)  # CKD is staged by the indexed eGFR
    if kidney is not None:
        kidney_ok = kidney.value >= ctx.threshold("femg_min_egfr")
    else:
        kidney, _ = kidney_function(ctx)
        kidney_ok = None if kidney is None else kidney.value >= ctx.threshold("femg_min_crcl")
    paired_low = d is not None and magnesium_low(ctx, d.inputs[2])
    return FemgAssessment(d, tuple(missing), kidney, kidney_ok, paired_low)


def _interpretable(ctx: RuleContext) -> tuple[FemgAssessment, object] | None:
    mg = magnesium_is_low(ctx)
    if mg is None:
        return None
    a = assess_femg(ctx)
    if a.value is None or not a.paired_low or not a.kidney_ok:
        return None
    return a, mg


def _shown(d: Derived) -> float:
    """FEMg compared at the 2 decimals shown, so a card never contradicts its own number at a cut-off."""
    return round(d.value, 2)


def _common_lines(ctx: RuleContext, a: FemgAssessment) -> list[str]:
    d = a.value
    assert d is not None and a.kidney is not None
    lines = [derived_line(d, "FEMg", 2), "",
             "FEMg (%) = (U_Mg x P_Cr) / (0.7 x P_Mg x U_Cr) x 100, urine and plasma in the same unit per analyte; "
             "0.7 because only about 70 % of plasma magnesium is filtered.", ""]
    if a.kidney.name == "creatinine-clearance":
        label, limit = "creatinine clearance", f"{ctx.threshold('femg_min_crcl'):g} mL/min"
    else:
        label, limit = "eGFR", f"{ctx.threshold('femg_min_egfr'):g} mL/min/1.73 m2"
    lines.append(f"Kidney function allows interpretation (>= {limit}, local policy: FEMg rises in CKD):")
    lines.append(derived_line(a.kidney, label, 0))
    interfering = active_with_class(ctx, "loop-diuretic", "thiazide", "magnesium-supplement")
    if interfering:
        lines += ["", "Ideally measured off supplements and diuretics; active now: " + ", ".join(m.label for m in interfering) + "."]
    return lines


def _grey_zone_note(ctx: RuleContext) -> str:
    lo, hi = ctx.threshold("femg_renal_wasting"), ctx.threshold("femg_renal_wasting_strict")
    return (f"Cut-offs differ: the guidance calls > {lo:g} % renal wasting; others use > {hi:g} % (JAMA 2020 review; "
            f"KDIGO Gitelman consensus). {lo:g}-{hi:g} % is a grey zone: observed means are about 1.4 % (0.5-2.7) for "
            "extrarenal loss and about 15 % (4-48) for renal wasting.")


def femg_renal_wasting(ctx: RuleContext) -> Finding | None:
    """FEMg above the guidance cut-off (> 2 %) from a paired sample while magnesium is low (the paired serum
    magnesium and the latest) and kidney function allows interpretation (CKD-EPI 2021 or reported eGFR
    >= femg_min_egfr, else Cockcroft-Gault >= femg_min_crcl; local policy). 2-4 % is said to be a grey zone. The urine Ca/Cr ratio points to Gitelman (low)
    or Bartter/familial wasting (high); when absent, urine calcium is suggested.

    On order hooks: relevant when a drafted order is a magnesium product.
    """
    got = _interpretable(ctx)
    if got is None:
        return None
    a, mg = got
    d = a.value
    cut, strict = ctx.threshold("femg_renal_wasting"), ctx.threshold("femg_renal_wasting_strict")
    if _shown(d) <= cut:
        return None
    grey = _shown(d) <= strict
    summary = (f"FEMg {d.value:.1f} % ({d.inputs[0].effective.date()}) with low magnesium: "
               + ("grey zone (2-4 %), possible renal magnesium wasting" if grey else "renal magnesium wasting"))
    lines = [f"FEMg is above {cut:g} % while magnesium is low, so the kidney is {'probably ' if grey else ''}losing magnesium "
             "(tubular disorder, drugs, or a genetic cause).", ""] + _common_lines(ctx, a) + ["", _grey_zone_note(ctx), ""]
    facts = [d.to_fact(), a.kidney.to_fact()]
    ratio = urine_ca_cr_ratio(ctx.record, d.inputs[0], ctx.threshold("femg_pair_max_hours"))
    suggestions: tuple[Suggestion, ...] = ()
    if ratio is not None:
        facts.append(ratio.to_fact())
        low, high = ctx.threshold("urine_ca_cr_low"), ctx.threshold("urine_ca_cr_high")
        lines.append(derived_line(ratio, "urine calcium/creatinine", 3))
        if ratio.value < low:
            lines.append(f"Urine Ca/Cr below {low:g} mg/mg (hypocalciuria) points to **Gitelman syndrome** (cut-off unverified).")
        elif ratio.value > high:
            lines.append(f"Urine Ca/Cr above {high:g} mg/mg (hypercalciuria) points to **Bartter syndrome or familial renal "
                         "magnesium wasting (FHHNC)**.")
        else:
            lines.append(f"Urine Ca/Cr between {low:g} and {high:g} mg/mg: neither the Gitelman nor the Bartter/FHHNC pattern.")
    else:
        lines.append("No urine calcium/creatinine from the same sample: measure it to tell Gitelman (low urine calcium) "
                     "from Bartter or familial renal magnesium wasting (high urine calcium).")
        if not drafted_test(ctx, analyte_codes(ctx, "urine_calcium")):
            sr = lab_service_request(ctx, "17862-4", "Renal magnesium wasting: urine calcium/creatinine")
            suggestions = (Suggestion("Order spot urine calcium (with urine creatinine)",
                                      (Action("create", "Order spot urine calcium (LOINC 17862-4)", sr),),
                                      key="order-urine-calcium"),)
    wasting = active_with_class(ctx, *wasting_classes(ctx))
    if wasting:
        lines += ["", "Active magnesium-wasting drugs may explain renal wasting: " + ", ".join(m.label for m in wasting) + "."]
    exposed = recent_exposures(ctx, *wasting_classes(ctx))
    if exposed:
        lines += ["", "Recent magnesium-wasting drugs (on hold or recently finished) may explain renal wasting: "
                  + ", ".join(m.label for m in exposed) + "."]
    return Finding(rule="femg-renal-wasting", indicator="warning", summary=summary, detail="\n".join(lines),
                   facts=tuple(facts), source="femg-cutoffs" if grey else "guidance", suggestions=suggestions,
                   override_reasons=GENERAL_OVERRIDES)


def femg_extrarenal_loss(ctx: RuleContext) -> Finding | None:
    """FEMg at or below the guidance cut-off (<= 2 %) from a paired sample while magnesium is low and kidney
    function allows interpretation: the kidney conserves, so the loss is gastrointestinal or intake.

    On order hooks: relevant when a drafted order is a magnesium product.
    """
    got = _interpretable(ctx)
    if got is None:
        return None
    a, mg = got
    d = a.value
    cut = ctx.threshold("femg_renal_wasting")
    if _shown(d) > cut:
        return None
    summary = f"FEMg {d.value:.1f} % ({d.inputs[0].effective.date()}) with low magnesium: kidney conserving, extrarenal loss"
    lines = [f"FEMg is not above {cut:g} % while magnesium is low: the kidney is conserving magnesium, so the loss is "
             "gastrointestinal (diarrhoea, malabsorption, short bowel, PPI) or poor intake/absorption.", ""]
    lines += _common_lines(ctx, a) + ["", _grey_zone_note(ctx)]
    gi = [c for c in ctx.record.conditions if c.condition in ("chronic_diarrhoea", "short_bowel", "malabsorption", "alcohol_use_disorder")]
    if gi:
        lines += ["", "Recorded conditions that fit: " + ", ".join(f"{c.label} ({c.source.reference})" for c in gi) + "."]
    ppis = active_with_class(ctx, "ppi")
    if ppis:
        lines += ["", "A proton-pump inhibitor (gut mechanism) is active: " + ", ".join(m.label for m in ppis) + "."]
    facts = (d.to_fact(), a.kidney.to_fact()) + tuple(c.to_fact() for c in gi) + tuple(m.to_fact() for m in ppis)
    return Finding(rule="femg-extrarenal-loss", indicator="info", summary=summary, detail="\n".join(lines), facts=facts,
                   source="guidance")


def femg_needed(ctx: RuleContext) -> Finding | None:
    """Low magnesium without a computable FEMg (no paired urine Mg/creatinine and serum creatinine): suggest
    the three orders as ServiceRequests. Silent when the tests are already drafted, and when kidney function
    is known to be below the FEMg interpretation minimum (femg_min_egfr / femg_min_crcl): FEMg would not be
    interpretable.
    A FEMg that exists but cannot be interpreted (reduced or unknown kidney function, or a paired magnesium
    that was not low) does not trigger this card either: repeating the tests would not help.

    On order hooks: relevant when a drafted order is a magnesium product.
    """
    mg = magnesium_is_low(ctx)
    if mg is None:
        return None
    a = assess_femg(ctx)
    if a.value is not None or a.kidney_ok is False:
        return None
    missing_codes = [(code, name) for code, _, name in FEMG_TESTS]
    if all(drafted_test(ctx, [code]) for code, _ in missing_codes):
        return None
    summary = f"Magnesium {mg.value:.2f} mg/dL on {mg.effective.date()}: measure FEMg (urine Mg, urine and serum creatinine)"
    lines = ["Magnesium is low and the cause is not established by a fractional excretion of magnesium:", "",
             lab_fact_line(mg, "magnesium"), "", "A FEMg needs, from the same day:"]
    lines += [f"- missing: {m}" for m in a.missing]
    lines += ["", f"FEMg < {ctx.threshold('femg_renal_wasting'):g} % = the kidney conserves (gut loss or poor absorption); "
                  f"> {ctx.threshold('femg_renal_wasting'):g} % with normal kidney function = renal wasting. "
                  "Take the samples with the magnesium still low, ideally off supplements and diuretics."]
    actions = tuple(
        Action("create", f"Order {name.lower()} (LOINC {code})",
               lab_service_request(ctx, code, "Fractional excretion of magnesium (FEMg) for low magnesium"))
        for code, name in missing_codes if not drafted_test(ctx, [code])
    )
    suggestions = (Suggestion("Order the FEMg tests: " + ", ".join(name.lower() for code, name in missing_codes
                                                                   if not drafted_test(ctx, [code])),
                              actions, is_recommended=True, key="order-femg-tests"),)
    return Finding(rule="femg-needed", indicator="info", summary=summary, detail="\n".join(lines), facts=(mg.to_fact(),),
                   source="ijkd-2010", suggestions=suggestions)
