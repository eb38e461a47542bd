"""Fractional excretion of magnesium: renal wasting vs extrarenal loss, or the tests to order when missing."""
from __future__ import annotations

from dataclasses import dataclass

from ..record.derived import Derived, femg, urine_ca_cr_ratio
from ..record.kidney import Estimate
from ..record.model import LabResult
from .base import ASSESSMENT, TODO, Action, Finding, RuleContext, Suggestion, lab_fact_line, short_value, with_action
from .common import (  # issue 10 item 9
    GENERAL_OVERRIDES,
    above,
    analyte_codes,
    derived_line,
    derived_value,
    drafted_test,
    estimate_text,
    lab_service_request,
    low_limit,
    magnesium_is_low,
    magnesium_low,
    unreadable_facts,
    unreadable_note,
)
from .medications import active_with_class, recent_exposures, wasting_classes

FEMG_TESTS = (
    ("19124-7", "urine_magnesium", "Spot urine magnesium"),
    ("2161-8", "urine_creatinine", "Spot urine creatinine"),
    ("2160-0", "creatinine", "Serum creatinine"),
)


@dataclass(frozen=True)
class FemgAssessment:
    value: Derived | None
    missing: tuple[str, ...]
    kidney: Estimate | None  # indexed eGFR (else the call's clearance estimate) used to judge interpretability
    kidney_ok: bool | None  # None: kidney function unknown or its range spans the minimum
    paired_low: bool


def _at_least(e: Estimate, limit: float) -> bool | None:
    side = e.side(limit)
    return None if side == "unknown" else side == "not-below"


def assess_femg(ctx: RuleContext) -> FemgAssessment:
    """FEMg from a paired sample and whether kidney function allows interpreting it (the call's one kidney
    assessment: CKD is staged by the indexed eGFR, else the creatinine clearance estimate; a recorded kidney
    failure or dialysis means not interpretable)."""
    d, missing = femg(ctx.record, ctx.threshold("femg_pair_max_hours"))
    kf = ctx.kidney
    kidney: Estimate | None = kf.indexed_egfr
    if kidney is not None:
        kidney_ok = _at_least(kidney, ctx.threshold("femg_min_egfr"))
    else:
        kidney = kf.estimate
        kidney_ok = None if kidney is None else _at_least(kidney, ctx.threshold("femg_min_crcl"))
    if kf.conditions or kf.below:
        kidney_ok = False
    paired_low = d is not None and magnesium_low(ctx, d.inputs[2])
    return FemgAssessment(d, tuple(missing), kidney, kidney_ok, paired_low)


def _shown(d: Derived) -> float:
    """FEMg compared at the 2 decimals shown, so a card never contradicts its own number at a cut-off."""
    return round(d.value, 2)


def femg_conclusion(ctx: RuleContext, d: Derived) -> str:
    """'renal' (> strict cut-off), 'grey' (between the cut-offs), 'extrarenal' (<= the guidance cut-off) or
    'indeterminate'. A FEMg from a censored value is a bound: an upper bound at or below the cut-off still says
    extrarenal loss, a lower bound above it renal wasting (grey zone when it could lie between the cut-offs);
    a bound that straddles the cut-off, or inputs censored both ways, is indeterminate."""
    cut, strict = ctx.threshold("femg_renal_wasting"), ctx.threshold("femg_renal_wasting_strict")
    v, bound = _shown(d), d.extra.get("bound")
    if bound == "indeterminate":
        return "indeterminate"
    if bound in ("<", "<="):
        return "extrarenal" if v <= cut else "indeterminate"
    if bound in (">", ">="):
        if not (v > cut or (bound == ">" and v >= cut)):
            return "indeterminate"
        return "renal" if (v > strict or (bound == ">" and v >= strict)) else "grey"
    if v > cut:
        return "grey" if v <= strict else "renal"
    return "extrarenal"


@dataclass(frozen=True)
class UrineMagnesium24h:
    """A 24-hour urine magnesium read against a low serum magnesium of the same period."""

    urine: LabResult
    serum: LabResult
    wasting: bool | None  # above the threshold (renal wasting); False: not above (kidney conserving); None: censored, straddles
    threshold: float


def assess_urine_magnesium_24h(ctx: RuleContext) -> UrineMagnesium24h | None:
    """The latest 24-hour urine magnesium with a low serum magnesium within the pairing window (policy
    urine_mg_24h_serum_pair_max_hours), while the latest magnesium is low; None otherwise."""
    if magnesium_is_low(ctx) is None:
        return None
    urine = ctx.record.latest("urine_magnesium_24h")
    if urine is None:
        return None
    hours = float(ctx.policy("urine_mg_24h_serum_pair_max_hours"))
    paired = [r for r in ctx.record.results("magnesium") if abs((r.effective - urine.effective).total_seconds()) <= hours * 3600]
    serum = min(paired, key=lambda r: abs((r.effective - urine.effective).total_seconds()), default=None)
    if serum is None or not magnesium_low(ctx, serum):
        return None
    t = ctx.threshold("urine_mg_24h_renal_wasting")
    if above(urine, t):
        wasting: bool | None = True
    elif urine.comparator in (None, "<", "<=") and urine.value <= t:
        wasting = False
    else:
        wasting = None
    return UrineMagnesium24h(urine, serum, wasting, t)


def _femg_state(ctx: RuleContext) -> tuple[FemgAssessment, str | None, UrineMagnesium24h | None]:
    """The FEMg assessment, its conclusion when it can be interpreted (None otherwise), and the 24-h urine."""
    a = assess_femg(ctx)
    concl = femg_conclusion(ctx, a.value) if a.value is not None and a.paired_low and a.kidney_ok else None
    return a, concl, assess_urine_magnesium_24h(ctx)


def _urine_24h_lines(ctx: RuleContext, u: UrineMagnesium24h) -> list[str]:
    verdict = {True: f"above {u.threshold:g} mg/day: renal magnesium wasting",
               False: f"not above {u.threshold:g} mg/day: the kidney conserves magnesium",
               None: f"censored value that straddles {u.threshold:g} mg/day: indeterminate"}[u.wasting]
    return [lab_fact_line(u.urine, "24-hour urine magnesium", 0, now=ctx.now) + f" — {verdict}",
            lab_fact_line(u.serum, "serum magnesium of the same period", now=ctx.now) + " — low",
            *unreadable_note(ctx, u.urine), "",
            f"_A 24-hour urine magnesium above {u.threshold:g} mg (1 mmol) a day while serum magnesium is low means the "
            "kidney is losing magnesium; it reads best off magnesium supplements and diuretics. Pairing window (local "
            f"policy): serum magnesium within {ctx.policy('urine_mg_24h_serum_pair_max_hours')} h of the collection._"]


def _common_lines(ctx: RuleContext, a: FemgAssessment) -> list[str]:
    d = a.value
    assert d is not None and a.kidney is not None
    lines = [derived_line(d, "FEMg", 2, now=ctx.now)] + [n for i in d.inputs for n in unreadable_note(ctx, i)] + ["",
             "FEMg (%) = (U_Mg x P_Cr) / (0.7 x P_Mg x U_Cr) x 100, urine and plasma in the same unit per analyte; "
             "0.7 because only about 70 % of plasma magnesium is filtered.", ""]
    if a.kidney.unit == "mL/min":
        label, limit = "creatinine clearance", f"{ctx.threshold('femg_min_crcl'):g} mL/min"
        shown = estimate_text(a.kidney, ctx.threshold("femg_min_crcl"))
    else:
        label, limit = "eGFR", f"{ctx.threshold('femg_min_egfr'):g} mL/min/1.73 m²"
        shown = estimate_text(a.kidney, ctx.threshold("femg_min_egfr"))
    lines.append(f"Kidney function allows interpretation (>= {limit}, local policy: FEMg rises in CKD): "
                 f"{label} {shown} ({a.kidney.formula}).")
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
    >= femg_min_egfr, else Cockcroft-Gault >= femg_min_crcl; local policy). 2-4 % is said to be a grey zone. The urine
    Ca/Cr ratio points to Gitelman (low) or Bartter/familial wasting (high); when absent, urine calcium is suggested.
    A FEMg from a censored value counts only as a bound that lies above the cut-off. When no FEMg concludes, a
    24-hour urine magnesium above urine_mg_24h_renal_wasting with a low serum magnesium of the same period
    (policy urine_mg_24h_serum_pair_max_hours) shows renal wasting: the card says it is from the 24-hour urine.

    On order hooks: relevant when a drafted order is a magnesium product.
    """
    if magnesium_is_low(ctx) is None:
        return None
    a, concl, u24 = _femg_state(ctx)
    if concl not in ("renal", "grey"):
        if concl is None or concl == "indeterminate":
            return _renal_wasting_from_24h(ctx, u24)
        return None
    d = a.value
    assert d is not None and a.kidney is not None
    cut = ctx.threshold("femg_renal_wasting")
    grey = concl == "grey"
    summary = (f"FEMg {derived_value(d)} ({d.inputs[0].effective.date()}) with low magnesium: "
               + ("grey zone (2-4 %), possible renal magnesium wasting" if grey else "renal magnesium wasting"))
    lines = [f"FEMg is above {cut:g} % while magnesium is low, so the kidney is {'probably ' if grey else ''}losing magnesium "
             "(tubular disorder, drugs, or a genetic cause).", ""] + _common_lines(ctx, a) + ["", _grey_zone_note(ctx), ""]
    facts = [d.to_fact(), a.kidney.to_fact()] + unreadable_facts(ctx, *d.inputs)
    if u24 is not None:
        lines += ["24-hour urine magnesium:"] + _urine_24h_lines(ctx, u24) + [""]
        facts += [u24.urine.to_fact(), u24.serum.to_fact()]
    return _renal_wasting_finding(ctx, summary, lines, facts, d.inputs[0], "femg-cutoffs" if grey else "guidance")


def _renal_wasting_from_24h(ctx: RuleContext, u24: UrineMagnesium24h | None) -> Finding | None:
    """Renal wasting shown by a 24-hour urine magnesium when no FEMg concludes (none, not interpretable, indeterminate)."""
    if u24 is None or u24.wasting is not True:
        return None
    summary = (f"24-hour urine magnesium {fmt_24h(u24.urine)} ({u24.urine.effective.date()}) with low magnesium: "
               "renal magnesium wasting (from the 24-hour urine)")
    lines = [f"The 24-hour urine magnesium is above {u24.threshold:g} mg a day while serum magnesium is low, so the kidney "
             "is losing magnesium (tubular disorder, drugs, or a genetic cause). This comes from the 24-hour urine, "
             "not from a FEMg; no FEMg is needed for it.", ""] + _urine_24h_lines(ctx, u24) + [""]
    a = assess_femg(ctx)
    if a.value is not None:
        lines += ["A FEMg exists but does not conclude: " + derived_line(a.value, "FEMg", 2, now=ctx.now)[2:], ""]
    interfering = active_with_class(ctx, "loop-diuretic", "thiazide", "magnesium-supplement")
    if interfering:
        lines += ["Active now (they raise urine magnesium; the collection reads best off them): "
                  + ", ".join(m.label for m in interfering) + ".", ""]
    facts = [u24.urine.to_fact(), u24.serum.to_fact()] + unreadable_facts(ctx, u24.urine, u24.serum)
    return _renal_wasting_finding(ctx, summary, lines, facts, u24.urine, "urine-mg-24h")


def fmt_24h(r: LabResult) -> str:
    return f"{r.comparator or ''}{r.value:.0f} mg/day"


def _renal_wasting_finding(ctx: RuleContext, summary: str, lines: list[str], facts: list, near: LabResult,
                           source: str) -> Finding:
    """The renal-wasting card's common tail: urine Ca/Cr (Gitelman vs Bartter/FHHNC) and wasting drugs."""
    ratio = urine_ca_cr_ratio(ctx.record, near, ctx.threshold("femg_pair_max_hours"))
    suggestions: tuple[Suggestion, ...] = ()
    if ratio is not None:
        facts.append(ratio.to_fact())
        low, high = ctx.threshold("urine_ca_cr_low"), ctx.threshold("urine_ca_cr_high")
        lines.append(derived_line(ratio, "urine calcium/creatinine", 3, now=ctx.now))
        bound = ratio.extra.get("bound")
        if bound == "indeterminate" or (bound in ("<", "<=") and ratio.value >= low) or (bound in (">", ">=") and ratio.value <= high):
            lines.append("Urine Ca/Cr is censored across a cut-off: it cannot tell Gitelman from Bartter/FHHNC.")
        elif ratio.value < low:
            lines.append(f"Urine Ca/Cr below {low:g} mg/mg (hypocalciuria) points to **Gitelman syndrome** (cut-off unverified).")
        elif ratio.value > high:
            lines.append(f"Urine Ca/Cr above {high:g} mg/mg (hypercalciuria) points to **Bartter syndrome or familial renal "
                         "magnesium wasting (FHHNC)**.")
        else:
            lines.append(f"Urine Ca/Cr between {low:g} and {high:g} mg/mg: neither the Gitelman nor the Bartter/FHHNC pattern.")
    else:
        lines += ["", TODO, "Measure urine calcium/creatinine (none from the same sample) to tell Gitelman (low urine "
                  "calcium) from Bartter or familial renal magnesium wasting (high urine calcium).", ASSESSMENT]
        if not drafted_test(ctx, analyte_codes(ctx, "urine_calcium")):
            sr = lab_service_request(ctx, "17862-4", "Renal magnesium wasting: urine calcium/creatinine")
            suggestions = (Suggestion("Order spot urine calcium (with urine creatinine)",
                                      (Action("create", "Order spot urine calcium (LOINC 17862-4)", sr),),
                                      key="order-urine-calcium"),)
    wasting = active_with_class(ctx, *wasting_classes(ctx))
    if wasting:
        lines += ["", TODO, "Review the active magnesium-wasting drugs, which may explain renal wasting: "
                  + ", ".join(m.label for m in wasting) + "."]
    exposed = recent_exposures(ctx, *wasting_classes(ctx))
    if exposed:
        lines += ["", TODO, "Recent magnesium-wasting drugs (on hold or recently finished) may explain renal wasting: "
                  + ", ".join(m.label for m in exposed) + "."]
    if TODO not in lines:
        lines += ["", TODO, "Look for the cause of the renal magnesium loss (tubular disorder, drugs, or a genetic cause)."]
    summary = with_action(summary, "look for the cause", "; ")
    return Finding(rule="femg-renal-wasting", indicator=ctx.indicator("femg-renal-wasting", "wasting"), summary=summary,
                   detail="\n".join(lines), facts=tuple(facts), source=source, suggestions=suggestions,
                   override_reasons=GENERAL_OVERRIDES)


def femg_extrarenal_loss(ctx: RuleContext) -> Finding | None:
    """FEMg at or below the guidance cut-off (<= 2 %) from a paired sample while magnesium is low and kidney
    function allows interpretation: the kidney conserves, so the loss is gastrointestinal or intake. A censored FEMg
    counts when it is an upper bound at or below the cut-off ("FEMg < 1.2 %"). When no FEMg concludes, a 24-hour
    urine magnesium not above urine_mg_24h_renal_wasting with a low serum magnesium of the same period says the same.

    On order hooks: relevant when a drafted order is a magnesium product.
    """
    if magnesium_is_low(ctx) is None:
        return None
    a, concl, u24 = _femg_state(ctx)
    cut = ctx.threshold("femg_renal_wasting")
    facts: tuple = ()
    if concl == "extrarenal":
        d = a.value
        assert d is not None and a.kidney is not None
        summary = f"FEMg {derived_value(d)} ({d.inputs[0].effective.date()}) with low magnesium: kidney conserving, extrarenal loss"
        lines = [f"FEMg is not above {cut:g} % while magnesium is low: the kidney is conserving magnesium, so the loss is "
                 "gastrointestinal (diarrhoea, malabsorption, short bowel, PPI) or poor intake/absorption.", ""]
        lines += _common_lines(ctx, a) + ["", _grey_zone_note(ctx)]
        facts = (d.to_fact(), a.kidney.to_fact()) + tuple(unreadable_facts(ctx, *d.inputs))
        if u24 is not None:
            lines += ["", "24-hour urine magnesium:"] + _urine_24h_lines(ctx, u24)
            facts += (u24.urine.to_fact(),)
    elif concl in (None, "indeterminate") and u24 is not None and u24.wasting is False:
        summary = (f"24-hour urine magnesium {fmt_24h(u24.urine)} ({u24.urine.effective.date()}) with low magnesium: "
                   "kidney conserving, extrarenal loss (from the 24-hour urine)")
        lines = [f"The 24-hour urine magnesium is not above {u24.threshold:g} mg a day while serum magnesium is low: the "
                 "kidney is conserving magnesium, so the loss is gastrointestinal (diarrhoea, malabsorption, short bowel, "
                 "PPI) or poor intake/absorption. This comes from the 24-hour urine, not from a FEMg.", ""]
        lines += _urine_24h_lines(ctx, u24)
        facts = (u24.urine.to_fact(), u24.serum.to_fact()) + tuple(unreadable_facts(ctx, u24.urine))
    else:
        return None
    gi = [c for c in ctx.record.conditions if c.condition in ("chronic_diarrhoea", "short_bowel", "malabsorption", "alcohol_use_disorder")]
    if gi:
        lines += ["", "Recorded conditions that fit: " + ", ".join(f"{c.label} ({c.source.reference})" for c in gi) + "."]
    ppis = active_with_class(ctx, "ppi")
    if ppis:
        lines += ["", "A proton-pump inhibitor (gut mechanism) is active: " + ", ".join(m.label for m in ppis) + "."]
    facts += tuple(c.to_fact() for c in gi) + tuple(m.to_fact() for m in ppis)
    summary = with_action(summary, "look for gut loss or poor intake", "; ")
    return Finding(rule="femg-extrarenal-loss", indicator=ctx.indicator("femg-extrarenal-loss", "conserving"), summary=summary,
                   detail="\n".join(lines), facts=facts, source="guidance" if concl == "extrarenal" else "urine-mg-24h")


def femg_needed(ctx: RuleContext) -> Finding | None:
    """Low magnesium without a computable FEMg (no paired urine Mg/creatinine and serum creatinine): suggest
    the three orders as ServiceRequests. Silent when the tests are already drafted, and when kidney function
    is known to be below the FEMg interpretation minimum (femg_min_egfr / femg_min_crcl): FEMg would not be
    interpretable.
    A FEMg that exists but cannot be interpreted (reduced or unknown kidney function, or a paired magnesium
    that was not low) does not trigger this card either: repeating the tests would not help. A 24-hour urine
    magnesium that concludes (renal wasting or not) also silences it. A FEMg from censored values that cannot be
    placed against the cut-off gives this card with a 24-hour urine magnesium suggested instead.

    On order hooks: relevant when a drafted order is a magnesium product.
    """
    mg = magnesium_is_low(ctx)
    if mg is None:
        return None
    a, concl, u24 = _femg_state(ctx)
    if u24 is not None and u24.wasting is not None:
        return None  # the 24-hour urine answers the question (femg-renal-wasting / femg-extrarenal-loss)
    if concl == "indeterminate" and a.value is not None:
        return _femg_indeterminate(ctx, mg, a.value)
    if a.value is not None or a.kidney_ok is False:
        return None
    missing_codes = [(code, name) for code, _, name in FEMG_TESTS]
    if all(drafted_test(ctx, [code]) for code, _ in missing_codes):
        return None
    limit, _ = low_limit(ctx, mg, "magnesium_low")
    summary = (f"Magnesium {short_value(mg, cutoffs=(limit,))} on {mg.effective.date()}: "
               "measure FEMg (urine Mg, urine and serum creatinine)")
    lines = ["Magnesium is low and the cause is not established by a fractional excretion of magnesium:", "",
             lab_fact_line(mg, "magnesium", now=ctx.now, cutoffs=(limit,)), *unreadable_note(ctx, mg), "",
             "A FEMg needs, from the same day:"]
    lines += [f"- missing: {m}" for m in a.missing]
    if not drafted_test(ctx, ["2160-0"]) and not any("serum creatinine" in m for m in a.missing):
        lines.append("- with them: serum creatinine on the same day as the urine sample")  # ordered below too
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
    return Finding(rule="femg-needed", indicator=ctx.indicator("femg-needed", "needed"), summary=summary, detail="\n".join(lines),
                   facts=(mg.to_fact(),), source="ijkd-2010", suggestions=suggestions)


def _femg_indeterminate(ctx: RuleContext, mg: LabResult, d: Derived) -> Finding | None:
    """A FEMg from censored values that cannot be placed against the cut-off: suggest a 24-hour urine magnesium,
    which answers the same question (unless one is drafted)."""
    cut = ctx.threshold("femg_renal_wasting")
    censored = [i for i in d.inputs if i.censored]
    summary = (f"Magnesium {short_value(mg)} on {mg.effective.date()}: FEMg of {d.inputs[0].effective.date()} is "
               f"indeterminate (censored {', '.join(i.analyte.replace('_', ' ') for i in censored)}): measure a 24-hour urine magnesium")
    lines = ["Magnesium is low and the FEMg cannot tell renal from extrarenal loss: a value reported as a bound cannot be "
             f"used as an exact number, and the bound it gives does not fall on one side of {cut:g} %.", "",
             lab_fact_line(mg, "magnesium", now=ctx.now), derived_line(d, "FEMg", 2, now=ctx.now), "",
             f"A 24-hour urine magnesium above {ctx.threshold('urine_mg_24h_renal_wasting'):g} mg a day with low serum "
             "magnesium shows renal wasting; not above it, the kidney conserves (ideally off supplements and diuretics)."]
    suggestions: tuple[Suggestion, ...] = ()
    if not drafted_test(ctx, analyte_codes(ctx, "urine_magnesium_24h")):
        sr = lab_service_request(ctx, "24447-5", "Indeterminate FEMg (censored value): 24-hour urine magnesium")
        suggestions = (Suggestion("Order a 24-hour urine magnesium",
                                  (Action("create", "Order 24-hour urine magnesium (LOINC 24447-5)", sr),),
                                  is_recommended=True, key="order-urine-magnesium-24h"),)
    return Finding(rule="femg-needed", indicator=ctx.indicator("femg-needed", "needed"), summary=summary, detail="\n".join(lines),
                   facts=(mg.to_fact(), d.to_fact()), source="urine-mg-24h", suggestions=suggestions)
