"""Helpers shared by rules: low/high against the Observation's own range or the knowledge default,
persistence of low results, kidney function, card text and the override reasons of warnings.
Calcium is judged in rules/calcium.py; which medications count and their card lines are in rules/medications.py."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ..knowledge import LOINC
from ..record.derived import Derived
from ..record.kidney import Estimate
from ..record.model import LabResult, MedicationUse
from .base import Action, Finding, OverrideReason, RuleContext, Suggestion, days_ago_text, fmt_lab, shown_pair

# Classes of drafted orders that make the patient-level magnesium picture relevant to the prescriber.
ELECTROLYTE_CLASSES = ("magnesium-supplement", "potassium-supplement", "calcium-supplement", "vitamin-d-analogue")

# Override reasons offered on every warning/critical card (CDS Hooks 2.0 overrideReasons).
GENERAL_OVERRIDES = (
    OverrideReason("already-addressed", "Already addressed (e.g. treated or ordered elsewhere)"),
    OverrideReason("not-applicable", "Not applicable to this patient"),
    OverrideReason("data-incorrect", "The values shown are outdated or wrong"),
)


def low_limit(ctx: RuleContext, r: LabResult, default_key: str) -> tuple[float, str]:
    """The lower limit used for ``r`` and where it came from (the lab's range wins)."""
    if r.ref_low is not None:
        return r.ref_low, "the lab's reference range"
    return float(ctx.knowledge.threshold(default_key).value), "no range on the result: the common lab range"


def high_limit(ctx: RuleContext, r: LabResult, default_key: str) -> tuple[float, str]:
    if r.ref_high is not None:
        return r.ref_high, "the lab's reference range"
    return float(ctx.knowledge.threshold(default_key).value), "no range on the result: the common lab range"


def below(r: LabResult, limit: float) -> bool:
    """Certainly below ``limit``: a censored '<0.5' is below 1.2; '<2.0' is not certainly below 1.8; '>x' never."""
    if r.comparator in (">", ">="):
        return False
    return r.value <= limit if r.comparator == "<" else r.value < limit


def above(r: LabResult, limit: float) -> bool:
    """Certainly above ``limit`` (the mirror of ``below``)."""
    if r.comparator in ("<", "<="):
        return False
    return r.value >= limit if r.comparator == ">" else r.value > limit


def is_low(ctx: RuleContext, r: LabResult, default_key: str) -> bool:
    limit, _ = low_limit(ctx, r, default_key)
    return below(r, limit)


def is_high(ctx: RuleContext, r: LabResult, default_key: str) -> bool:
    limit, _ = high_limit(ctx, r, default_key)
    return above(r, limit)


def magnesium_low(ctx: RuleContext, r: LabResult) -> bool:
    """Below the range, or below the guidance's severe threshold whatever the lab's range says."""
    return is_low(ctx, r, "magnesium_low") or below(r, ctx.threshold("magnesium_severe"))


def within_advice_window(ctx: RuleContext, r: LabResult) -> bool:
    """Whether ``r`` is recent enough to base treatment advice on (knowledge `<analyte>_advice_max_age_days`)."""
    key = f"{r.analyte}_advice_max_age_days"
    days = ctx.knowledge.model.policies.get(key)
    return days is None or ctx.now - r.effective <= timedelta(days=float(days.value))


def magnesium_is_low(ctx: RuleContext) -> LabResult | None:
    """The latest magnesium if it is below range and recent enough to act on, else None (an older low value is
    the `hypomagnesemia` card's 're-measure', never treatment advice)."""
    latest = ctx.record.latest("magnesium")
    if latest is not None and magnesium_low(ctx, latest) and within_advice_window(ctx, latest):
        return latest
    return None


def stale_low_magnesium(ctx: RuleContext) -> LabResult | None:
    """The latest magnesium when it is low but older than the advice window."""
    latest = ctx.record.latest("magnesium")
    if latest is not None and magnesium_low(ctx, latest) and not within_advice_window(ctx, latest):
        return latest
    return None


def magnesium_high(ctx: RuleContext, r: LabResult) -> bool:
    """Above the lab's range (else the knowledge default); a censored '<x' value is never high."""
    if r.comparator in ("<", "<="):
        return False
    return is_high(ctx, r, "magnesium_high")


def recent(ctx: RuleContext, analyte: str, days_policy: str) -> LabResult | None:
    """The latest result of ``analyte`` if it is within the policy's number of days of ``now``."""
    r = ctx.record.latest(analyte)
    if r is None:
        return None
    return r if ctx.now - r.effective <= timedelta(days=float(ctx.policy(days_policy))) else None


def magnesium_low_or_unmeasured(ctx: RuleContext) -> tuple[str, LabResult | None]:
    """('low', r) | ('unmeasured', latest-or-None) | ('normal', r): the magnesium state for 'check magnesium first'.
    Low only when recent enough to act on (advice window); a high value is 'normal' here (not low)."""
    low = magnesium_is_low(ctx)
    if low is not None:
        return "low", low
    latest = ctx.record.latest("magnesium")
    if recent(ctx, "magnesium", "magnesium_recent_days") is None:
        return "unmeasured", latest
    return "normal", latest


def last_measured_text(ctx: RuleContext, r: LabResult | None, window_days: float | None = None) -> str:
    """'never measured' only when nothing exists; else 'last measured on DATE (N days ago[, outside the N-day window])'."""
    if r is None:
        return f"never measured (labs are read back {ctx.policy('lookback_days')} days)"
    text = f"last measured on {r.effective.date().isoformat()} ({days_ago_text(ctx.now, r.effective)}"
    if window_days is not None:
        text += f", outside the {window_days:g}-day window"
    return text + ")"


def persistent_low(ctx: RuleContext, analyte: str, default_key: str, low=None,
                   count_policy: str = "refractory_min_low_results", span_policy: str = "refractory_min_span_hours",
                   window_policy: str = "refractory_window_days",
                   results: list[LabResult] | None = None) -> list[LabResult] | None:
    """The unbroken run of low results from the latest backwards, within the window, when it is long
    enough (>= count results spanning >= span hours); None otherwise. A normal result ends the run.
    ``results`` (newest first) replaces the analyte's results, e.g. total and corrected calcium together."""
    is_low_fn = low or (lambda r: is_low(ctx, r, default_key))
    window_start = ctx.now - timedelta(days=float(ctx.policy(window_policy)))
    run: list[LabResult] = []
    for r in (ctx.record.results(analyte) if results is None else results):
        if r.effective < window_start or not is_low_fn(r):
            break
        run.append(r)
    if len(run) < int(ctx.policy(count_policy)):
        return None
    if run[0].effective - run[-1].effective < timedelta(hours=float(ctx.policy(span_policy))):
        return None
    return run


def kidney_line(ctx: RuleContext) -> str:
    """The call's one kidney assessment as one Markdown block: value or range, method, inputs with dates, notes."""
    kf = ctx.kidney
    limit = kf.limit
    if kf.estimate is not None:
        e = kf.estimate
        lines = [f"- kidney function: **{estimate_text(e, limit)}** ({_METHOD[e.method]}) — "
                 f"{'below' if kf.status == 'below' else 'not below' if kf.status == 'not-below' else 'cannot be placed against'}"
                 f" {limit:g} mL/min", f"  - {e.formula}"]
        for i in e.inputs:
            lines.append(f"  - input {i.analyte.replace('_', ' ')}: {fmt_lab(i, now=ctx.now, reference=True)}")
        lines += [f"  - note: {n}" for n in e.notes]
    elif kf.conditions:
        lines = [f"- kidney function: **below {limit:g} mL/min** (recorded kidney failure or dialysis)"]
    else:
        lines = ["- kidney function: **unknown** — missing: " + "; ".join(kf.missing or ("kidney function results",))]
    for e in kf.tried:
        if e is not kf.estimate:
            lines.append(f"  - also tried: {estimate_text(e, limit)} ({_METHOD[e.method]}), which spans the cut-off")
    for c in kf.conditions:
        lines.append(f"  - recorded: {c.label} ({c.source.reference})")
    lines += [f"  - note: {n}" for n in kf.notes]
    return "\n".join(lines)


_METHOD = {
    "measured-clearance": "measured creatinine clearance",
    "cockcroft-gault": "Cockcroft-Gault",
    "egfr-reported": "de-indexed reported eGFR",
    "egfr-ckd-epi": "de-indexed CKD-EPI 2021 eGFR",
    "bedside-schwartz": "bedside Schwartz eGFR, child",
    "coded": "recorded kidney failure",
}


def estimate_text(e: Estimate, limit: float) -> str:
    """'18 mL/min' or 'between 12 and 31 mL/min', written so the number never contradicts the cut-off."""
    if e.exact:
        v, _ = shown_pair(e.low, limit, 0)
        return f"{v} {e.unit}"
    lo, _ = shown_pair(e.low, limit, 0)
    hi, _ = shown_pair(e.high, limit, 0)
    if e.high < limit:
        return f"at most {hi} {e.unit}"
    if e.low >= limit:
        return f"at least {lo} {e.unit}"
    return f"between {lo} and {hi} {e.unit}"


def kidney_summary(ctx: RuleContext) -> str:
    """A few words for summaries: 'creatinine clearance 18 mL/min' / 'kidney failure recorded' / 'kidney function unknown'."""
    kf = ctx.kidney
    if kf.estimate is not None:
        name = "eGFR" if kf.estimate.method == "bedside-schwartz" else "creatinine clearance"
        return f"{name} {estimate_text(kf.estimate, kf.limit)}"
    if kf.conditions:
        return "kidney failure or dialysis recorded"
    return "kidney function unknown"


def derived_value(d: Derived, digits: int = 1) -> str:
    """'3.10 %', a bound from censored inputs '< 1.20 %', or 'indeterminate (computed 2.10 %)'."""
    bound = d.extra.get("bound")
    if bound == "indeterminate":
        return f"indeterminate (computed {d.value:.{digits}f} {d.unit} from censored values)"
    return f"{bound + ' ' if bound else ''}{d.value:.{digits}f} {d.unit}"


def derived_line(d: Derived, label: str, digits: int = 1, now: datetime | None = None) -> str:
    lines = [f"- {label}: **{derived_value(d, digits)}** = {d.formula}"]
    for i in d.inputs:
        lines.append(f"  - input {i.analyte.replace('_', ' ')}: {fmt_lab(i, now=now, reference=True)}")
    for n in d.notes:
        lines.append(f"  - note: {n}")
    return "\n".join(lines)


def mg_mmol(ctx: RuleContext, mg_dl: float) -> float:
    """Magnesium mg/dL -> mmol/L with the knowledge molar mass (mg/dL x 10 / 24.305)."""
    molar_mass = ctx.knowledge.model.analytes["magnesium"].molar_mass
    if molar_mass is None:  # the knowledge check requires it of a concentration in mg/dL
        raise ValueError("knowledge: analytes.magnesium has no molar_mass")
    return mg_dl * 10.0 / float(molar_mass)


def days_since(ctx: RuleContext, when: datetime | None) -> int | None:
    return None if when is None else (ctx.now - when).days


def policy_note(ctx: RuleContext, *keys: str) -> str:
    """Say which local policies (not published numbers) decided."""
    items = []
    for key in keys:
        t = ctx.knowledge.model.policies[key]
        value = ", ".join(t.value) if isinstance(t.value, list) else t.value
        unit = "" if t.unit in ("", "1") else f" {t.unit}"
        items.append(f"{key.replace('_', ' ')} = {value}{unit}")
    return "_Local policy (configurable, no published consensus): " + "; ".join(items) + "._"


def has_night_dosing(ctx: RuleContext, m: MedicationUse) -> bool:
    text = (m.timing or "").lower()
    words = ctx.policy("night_dosing_words")
    return any(re.search(r"(?<![a-z])" + re.escape(w.lower()) + r"(?![a-z])", text) for w in words)


def subject(ctx: RuleContext) -> dict[str, str]:
    return {"reference": f"Patient/{ctx.record.patient_id}"}


def lab_service_request(ctx: RuleContext, code: str, reason: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A draft ServiceRequest for one LOINC test (display from the knowledge value sets)."""
    display = next((c.display for a in ctx.knowledge.model.analytes.values() for c in a.codes if c.code == code), code)
    res: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "subject": subject(ctx),
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "reasonCode": [{"text": reason}],
    }
    if extra:
        res.update(extra)
    return res


def drafted_test(ctx: RuleContext, codes: Iterable[str]) -> bool:
    """True when a ServiceRequest for one of these LOINC codes is already among the draft orders."""
    wanted = set(codes)
    return any(code in wanted for d in ctx.record.draft_services for _, code in d.codes)


def analyte_codes(ctx: RuleContext, analyte: str) -> list[str]:
    return [c.code for c in ctx.knowledge.model.analytes[analyte].codes]


def order_magnesium(ctx: RuleContext, reason: str) -> tuple[Suggestion, ...]:
    """The suggestion to order a serum magnesium (LOINC 19123-9), unless one is already drafted."""
    if drafted_test(ctx, analyte_codes(ctx, "magnesium")):
        return ()
    sr = lab_service_request(ctx, "19123-9", reason)
    return (Suggestion("Order serum magnesium", (Action("create", "Order serum magnesium (LOINC 19123-9)", sr),),
                       is_recommended=True, key="order-magnesium"),)


def obstetric_magnesium(ctx: RuleContext) -> tuple[list, list[MedicationUse]] | None:
    """Pregnancy or an obstetric magnesium indication recorded (knowledge `pregnancy`,
    `obstetric_magnesium_indication`) with magnesium sulfate active or drafted: (conditions, orders), else None."""
    conds = [c for c in ctx.record.conditions if c.condition in ("pregnancy", "obstetric_magnesium_indication")]
    if not conds:
        return None
    orders = [m for m in ctx.record.medications + ctx.record.draft_medications if m.has_ingredient("magnesium sulfate")]
    return (conds, orders) if orders else None


def sentence_case(text: str) -> str:
    """Upper-case the first letter only (str.capitalize would lower-case units such as mL/min; 'eGFR' stays)."""
    return text if text.startswith("eGFR") else text[:1].upper() + text[1:]


def magnesium_high_now(ctx: RuleContext) -> LabResult | None:
    """The latest magnesium when it is above range and recent enough to act on (the `hypermagnesemia` card owns it:
    replacement cards stay silent)."""
    latest = ctx.record.latest("magnesium")
    if latest is not None and magnesium_high(ctx, latest) and within_advice_window(ctx, latest):
        return latest
    return None


# ---------------------------------------------------------------------------------------------- results as reported
def unreadable_note(ctx: RuleContext, used: LabResult | None, analyte: str | None = None) -> list[str]:
    """Card lines naming results of the analyte newer than the value used that could not be read
    ('a newer magnesium result of 2026-11-24 could not be read (no numeric value): Observation/x'); [] when none."""
    name = analyte or (used.analyte if used is not None else None)
    if name is None:
        return []
    newer = ctx.record.newer_unreadable(name, used.effective if used is not None else None)
    return [f"- _a newer {name.replace('_', ' ')} result of {u.effective.date().isoformat()} "
            f"({days_ago_text(ctx.now, u.effective)}) could not be read "
            f"({u.reason}): {u.source.reference}; "
            + ("the older value above is used_" if used is not None else "no readable value is used_") for u in newer]


def unreadable_facts(ctx: RuleContext, *used: LabResult | None) -> list[dict[str, Any]]:
    """The unreadable newer results behind ``unreadable_note`` lines, as facts for the audit."""
    return [u.to_fact() for r in used if r is not None for u in ctx.record.newer_unreadable(r.analyte, r.effective)]


def with_unreadable_named(ctx: RuleContext, finding: Finding) -> Finding:
    """Safety net for every rule: each analyte whose value a card uses (its lab facts, and the inputs of derived
    facts) gets the newer results that could not be read named on the card, unless the rule already named them."""
    newest: dict[str, datetime] = {}

    def visit(fact: dict[str, Any]) -> None:
        if fact.get("kind") == "lab" and isinstance(fact.get("analyte"), str) and isinstance(fact.get("effective"), str):
            when = datetime.fromisoformat(fact["effective"])
            if fact["analyte"] not in newest or when > newest[fact["analyte"]]:
                newest[fact["analyte"]] = when
        for sub in fact.get("inputs") or ():
            if isinstance(sub, dict):
                visit(sub)

    for fact in finding.facts:
        if isinstance(fact, dict):
            visit(fact)
    missing = [u for analyte, when in newest.items() for u in ctx.record.newer_unreadable(analyte, when)
               if u.source.reference not in finding.detail]
    if not missing:
        return finding
    lines = [f"- _a newer {u.analyte.replace('_', ' ')} result of {u.effective.date().isoformat()} "
             f"({days_ago_text(ctx.now, u.effective)}) could not be read "
             f"({u.reason}): {u.source.reference}; an older value is used above_" for u in missing]
    return replace(finding, detail=finding.detail + "\n\nNot used:\n" + "\n".join(lines),
                   facts=finding.facts + tuple(u.to_fact() for u in missing))
