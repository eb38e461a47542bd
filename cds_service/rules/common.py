"""Helpers shared by rules: low/high against the Observation's own range or the knowledge default,
persistence of low results, kidney function, medication lines and the override reasons of warnings."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ..knowledge import LOINC
from ..record.derived import Derived, censored_bound, corrected_calcium
from ..record.kidney import Estimate
from ..record.model import LabResult, MedicationUse
from .base import Finding, OverrideReason, RuleContext, days_ago_text, display_unit, fmt_lab, shown_pair

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


def active_with_class(ctx: RuleContext, *classes: str) -> list[MedicationUse]:
    """Medications with one of ``classes`` that are systemic and currently taken (a local-route product, e.g.
    gentamicin eye drops, and on-hold, ended or planned ones are not)."""
    return [m for m in ctx.record.medications if any(m.has_class(c) for c in classes) and is_systemic(ctx, m)]


def drafts_with_class(ctx: RuleContext, *classes: str) -> list[MedicationUse]:
    """Drafted orders in scope (order-select: selected; order-sign: all) with one of ``classes``."""
    return [m for m in ctx.orders_in_scope() if any(m.has_class(c) for c in classes)]


def wasting_classes(ctx: RuleContext) -> tuple[str, ...]:
    return tuple(k for k, c in ctx.knowledge.model.classes.items() if c.wasting)


def drafted(*classes: str):
    """A relevant_to_orders predicate: a drafted order in scope has one of ``classes`` ('wasting' = any wasting class)."""
    def predicate(ctx: RuleContext) -> bool:
        wanted = tuple(c for c in classes if c != "wasting")
        if wanted and drafts_with_class(ctx, *wanted):
            return True
        return "wasting" in classes and bool(systemic_drafts_with_class(ctx, *wasting_classes(ctx)))
    return predicate


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


def med_line(ctx: RuleContext, m: MedicationUse, with_class: bool = True) -> str:
    """'- Furosemide 40 mg (loop diuretic), since 2026-01-02 (327 days); MedicationRequest/x' for cards."""
    parts = [f"- **{m.label}**"]
    if with_class:
        classes = [ctx.knowledge.model.classes[c].display for c in sorted(m.classes())]
        if classes:
            parts.append(f" ({', '.join(classes)})")
    if m.dose is not None:
        parts.append(f", dose {m.dose.value:g} {display_unit(m.dose.unit)}".rstrip())
    if m.route:
        parts.append(f", {m.route}")
    if m.timing:
        parts.append(f", '{m.timing}'")
    if m.draft:
        parts.append(", drafted order")
    elif m.start is not None:
        n = days_since(ctx, m.start)
        parts.append(f", since {m.start.date().isoformat()} ({n} day{'' if n == 1 else 's'})")
    else:
        parts.append(", start date not recorded")
    parts.append(f"; {m.source.reference}")
    if m.matched_by_text:
        texts = sorted({i.matched_code for i in m.ingredients if i.matched_by == "text"})
        parts.append(f" — _identified from the medication text {', '.join(repr(t) for t in texts)}, not from a code_")
    return "".join(parts)


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


# ---------------------------------------------------------------------------------------------- calcium
@dataclass(frozen=True)
class CalciumStatus:
    """Calcium judged on the best measure: ionized (recent) > albumin-corrected > total. ``basis`` says which."""

    basis: str  # "ionized" | "albumin-corrected" | "reported-corrected" | "total"
    value: float
    unit: str
    bound: str | None  # censored inputs: "<", "<=", ">", ">=" or "indeterminate"
    low: bool
    high: bool
    low_limit: float
    high_limit: float
    inputs: tuple[LabResult, ...]
    corrected: Derived | None = None

    @property
    def label(self) -> str:
        return {"ionized": "ionized calcium", "albumin-corrected": "albumin-corrected calcium",
                "reported-corrected": "albumin-corrected calcium (as reported)", "total": "total calcium"}[self.basis]

    @property
    def shown(self) -> str:
        if self.bound == "indeterminate":
            return f"indeterminate (censored inputs, computed {self.value:.2f} {self.unit})"
        digits = 2
        return f"{self.bound or ''}{self.value:.{digits}f} {self.unit}"

    @property
    def state(self) -> str:
        return "low" if self.low else "high" if self.high else "indeterminate" if self.bound == "indeterminate" else "not low"

    def lines(self, now: datetime | None = None) -> list[str]:
        """Card lines: the measure used (and why), its inputs (with their ages when ``now`` is given)."""
        why = {"ionized": "ionized calcium measured recently: it decides",
               "albumin-corrected": "no recent ionized calcium; total calcium corrected for the albumin measured with it",
               "reported-corrected": "no recent ionized calcium; the lab's albumin-corrected calcium",
               "total": "no recent ionized calcium and no albumin with it: total calcium, uncorrected"}[self.basis]
        out = [f"- judged on **{self.label}: {self.shown}** ({why}; range {self.low_limit:.2f}-{self.high_limit:.2f} {self.unit})"]
        if self.corrected is not None:
            out.append(f"  - = {self.corrected.formula}")
        for r in self.inputs:
            out.append(f"  - {r.analyte.replace('_', ' ')}: {fmt_lab(r, now=now, reference=True)}")
        return out

    def facts(self) -> list[dict[str, Any]]:
        return [self.corrected.to_fact()] if self.corrected is not None else [r.to_fact() for r in self.inputs]


def _near(ctx: RuleContext, analyte: str, at: datetime, hours: float) -> LabResult | None:
    """The result of ``analyte`` closest in time to ``at`` within ``hours``."""
    near = [r for r in ctx.record.results(analyte) if abs((r.effective - at).total_seconds()) <= hours * 3600]
    return min(near, key=lambda r: abs((r.effective - at).total_seconds())) if near else None


def calcium_judged(ctx: RuleContext, total: LabResult) -> CalciumStatus:
    """One total calcium judged on its own: corrected for an albumin measured with it (policy window), else as is."""
    lo, _ = low_limit(ctx, total, "calcium_low")
    hi, _ = high_limit(ctx, total, "calcium_high")
    albumin = _near(ctx, "albumin", total.effective, float(ctx.policy("calcium_albumin_pair_max_hours")))
    if albumin is None or albumin.value <= 0:
        return CalciumStatus("total", total.value, "mg/dL", censored_bound([(total, 1)]), is_low(ctx, total, "calcium_low"),
                             is_high(ctx, total, "calcium_high"), lo, hi, (total,))
    d = corrected_calcium(total, albumin, ctx.threshold("calcium_albumin_correction_factor"),
                          ctx.threshold("calcium_albumin_reference_g_dl"))
    bound = d.extra.get("bound")
    probe = LabResult("calcium", d.value, "mg/dL", d.value, "mg/dL", total.effective, total.code, total.source,
                      comparator=None if bound in (None, "indeterminate") else bound)
    known = bound != "indeterminate"
    return CalciumStatus("albumin-corrected", d.value, "mg/dL", bound, known and below(probe, lo), known and above(probe, hi),
                         lo, hi, (total, albumin), d)


def calcium_from_result(ctx: RuleContext, r: LabResult) -> CalciumStatus:
    """Any calcium result judged by its kind: ionized against the ionized range, the lab's corrected calcium against
    the total range, a total calcium corrected for albumin when one was measured with it."""
    if r.analyte == "calcium_ionized":
        lo, _ = low_limit(ctx, r, "calcium_ionized_low")
        hi, _ = high_limit(ctx, r, "calcium_ionized_high")
        return CalciumStatus("ionized", r.value, r.unit, censored_bound([(r, 1)]), below(r, lo), above(r, hi), lo, hi, (r,))
    if r.analyte == "calcium_corrected":
        lo, _ = low_limit(ctx, r, "calcium_low")
        hi, _ = high_limit(ctx, r, "calcium_high")
        return CalciumStatus("reported-corrected", r.value, r.unit, censored_bound([(r, 1)]), below(r, lo), above(r, hi),
                             lo, hi, (r,))
    return calcium_judged(ctx, r)


def calcium_status(ctx: RuleContext) -> CalciumStatus | None:
    """Calcium now: a recent ionized calcium (policy calcium_recent_days) decides; else the latest total calcium,
    corrected for an albumin measured with it (knowledge formula), else the lab's own corrected calcium when it is
    at least as new, else total calcium. None when no calcium result at all. The card says which (``basis``)."""
    ionized = recent(ctx, "calcium_ionized", "calcium_recent_days")
    if ionized is not None:
        return calcium_from_result(ctx, ionized)
    total, reported = ctx.record.latest("calcium"), ctx.record.latest("calcium_corrected")
    if total is None and reported is None:
        return None
    if total is not None:
        judged = calcium_judged(ctx, total)
        if judged.basis == "albumin-corrected" or reported is None or reported.effective < total.effective:
            return judged
    return calcium_from_result(ctx, reported)  # type: ignore[arg-type]


def calcium_series(ctx: RuleContext) -> tuple[str, list[LabResult]]:
    """The calcium results (newest first) of the measure ``calcium_status`` is based on, for persistence checks:
    ionized results when a recent ionized calcium decides, else total calcium (each judged with its own albumin)
    and the lab's corrected calcium together."""
    status = calcium_status(ctx)
    if status is not None and status.basis == "ionized":
        return "ionized", ctx.record.results("calcium_ionized")
    merged = ctx.record.results("calcium") + ctx.record.results("calcium_corrected")
    return "total-or-corrected", sorted(merged, key=lambda r: r.effective, reverse=True)


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


# ---------------------------------------------------------------------------------------------- medications (issue 10 item 9)
def is_systemic(ctx: RuleContext, m: MedicationUse) -> bool:
    """Given by a systemic route (or no route stated: counted, the safe side); eye, ear, skin, airway, nose,
    vagina and rectum are local routes (knowledge routes, systemic: false)."""
    return ctx.knowledge.route_is_systemic(m.route)


def systemic_drafts_with_class(ctx: RuleContext, *classes: str) -> list[MedicationUse]:
    """Drafted orders in scope with one of ``classes``, given by a systemic route."""
    return [m for m in drafts_with_class(ctx, *classes) if is_systemic(ctx, m)]


def local_route_with_class(ctx: RuleContext, *classes: str) -> list[MedicationUse]:
    """Current medications with one of ``classes`` given by a local route: set aside, never a cause."""
    return [m for m in ctx.record.medications if any(m.has_class(c) for c in classes) and not is_systemic(ctx, m)]


def planned_with_class(ctx: RuleContext, *classes: str) -> list[MedicationUse]:
    """Medications not started yet (MedicationStatement intended, MedicationRequest intent plan/proposal or draft
    status outside the draft orders): "planned", never the cause of a low magnesium."""
    return [m for m in ctx.record.medication_history
            if m.state == "planned" and any(m.has_class(c) for c in classes) and is_systemic(ctx, m)]


def last_known_date(m: MedicationUse) -> datetime | None:
    """The last date a course is known to have run: its end, else its start (an order's authoredOn)."""
    return m.end or m.start


def exposure_window(ctx: RuleContext, m: MedicationUse) -> tuple[int, str, str] | None:
    """(days, class id, source id) of the longest recent-exposure window of m's classes; None when no class has one."""
    best: tuple[int, str, str] | None = None
    for cls in m.classes():
        c = ctx.knowledge.model.classes[cls]
        if c.exposure_window_days is not None and (best is None or c.exposure_window_days > best[0]):
            best = (c.exposure_window_days, cls, c.exposure_source or c.source)
    return best


def recent_exposures(ctx: RuleContext, *classes: str) -> list[MedicationUse]:
    """Systemic courses not taken today that still count: on hold (paused), or completed/stopped with a last
    known date within the class's exposure window (knowledge classes.exposure_window_days)."""
    out: list[MedicationUse] = []
    for m in ctx.record.medication_history:
        if not any(m.has_class(c) for c in classes) or not is_systemic(ctx, m):
            continue
        if m.state == "on-hold":
            out.append(m)
        elif m.state == "ended":
            window = exposure_window(ctx, m)
            last = last_known_date(m)
            if window is None:
                continue
            # undated: it may be recent, so it is shown (and said to be undated)
            if last is None or last <= ctx.now + timedelta(days=1) and ctx.now - last <= timedelta(days=window[0]):
                out.append(m)
    return out


def exposure_line(ctx: RuleContext, m: MedicationUse, with_class: bool = True) -> str:
    """'- **Cisplatin** (platinum chemotherapy), course completed, ended 2026-11-05 (20 days ago) ...'."""
    k = ctx.knowledge
    classes = [k.model.classes[c].display for c in sorted(m.classes())] if with_class else []
    parts = [f"- **{m.label}**" + (f" ({', '.join(classes)})" if classes else "")]
    if m.route:
        parts.append(f", {m.route}")
    if m.state == "on-hold":
        since = f", ordered {m.start.date().isoformat()} ({days_since(ctx, m.start)} days ago)" if m.start else ""
        parts.append(f", **on hold** (paused, not stopped){since}")
    else:
        status = "stopped" if m.status == "stopped" else "completed"
        if m.end is not None:
            parts.append(f", course {status}, ended {m.end.date().isoformat()} ({days_since(ctx, m.end)} days ago)")
        elif m.start is not None:
            parts.append(f", course {status}, end date not recorded (started {m.start.date().isoformat()}, "
                         f"{days_since(ctx, m.start)} days ago)")
        else:
            parts.append(f", course {status}, no date recorded: it may be recent")
        window = exposure_window(ctx, m)
        if window is not None and last_known_date(m) is not None:
            days, cls, source = window
            parts.append(f"; within the {days}-day recent-exposure window for {k.model.classes[cls].display} "
                         f"({k.source(source).citation})")
    parts.append(f"; {m.source.reference}")
    return "".join(parts)


def exposure_lines(ctx: RuleContext, group: list[MedicationUse]) -> list[str]:
    """One drug's recent courses: one line, or the drug once with each course below it."""
    if len(group) == 1:
        return [exposure_line(ctx, group[0])]
    k = ctx.knowledge
    classes = [k.model.classes[c].display for c in sorted(group[0].classes())]
    head = f"- **{group[0].label}**" + (f" ({', '.join(classes)})" if classes else "") + f": {len(group)} courses"
    return [head] + ["  " + exposure_line(ctx, m, with_class=False) for m in group]


def group_by_ingredient(meds: Iterable[MedicationUse]) -> list[list[MedicationUse]]:
    """Orders grouped by their ingredients (first-seen order): one drug listed once, with all its orders."""
    groups: dict[tuple[str, ...], list[MedicationUse]] = {}
    for m in meds:
        key = tuple(sorted(i.ingredient for i in m.ingredients)) or (m.label.lower(),)
        groups.setdefault(key, []).append(m)
    return list(groups.values())


def group_label(group: list[MedicationUse]) -> str:
    """A drug for a summary: its label when ordered once, else its ingredient name(s) and the number of orders."""
    if len(group) == 1:
        return group[0].label
    names = " + ".join(i.ingredient for i in group[0].ingredients) or group[0].label
    return f"{names} ({len(group)} orders)"


def exposure_label(group: list[MedicationUse]) -> str:
    """'cetuximab (on hold)', 'cisplatin (completed 2026-11-05)' for summaries: a drug's most telling course
    (on hold first, else the latest dated one, else undated)."""
    m = group[0]
    names = " + ".join(i.ingredient for i in m.ingredients) or m.label
    if any(x.state == "on-hold" for x in group):
        return f"{names} (on hold)"
    dated = [x for x in group if last_known_date(x) is not None]
    if not dated:
        return f"{names} ({'stopped' if m.status == 'stopped' else 'completed'}, undated)"
    latest = max(dated, key=lambda x: last_known_date(x))  # type: ignore[arg-type, return-value]
    status = "stopped" if latest.status == "stopped" else "completed"
    return f"{names} ({status} {last_known_date(latest).date().isoformat()})"  # type: ignore[union-attr]


def grouped_med_lines(ctx: RuleContext, meds: Iterable[MedicationUse], with_class: bool = True) -> list[str]:
    """med_line per drug; a drug with several orders is listed once with each of its orders below it."""
    lines: list[str] = []
    k = ctx.knowledge
    for group in group_by_ingredient(meds):
        if len(group) == 1:
            lines.append(med_line(ctx, group[0], with_class))
            continue
        head = f"- **{group[0].label}**"
        if with_class:
            classes = [k.model.classes[c].display for c in sorted(group[0].classes())]
            if classes:
                head += f" ({', '.join(classes)})"
        lines.append(head + f": {len(group)} orders")
        lines += ["  " + med_line(ctx, m, with_class=False) for m in group]
    return lines


def local_route_lines(ctx: RuleContext, meds: Iterable[MedicationUse]) -> list[str]:
    """Local-route products set aside, each once, with the class's note where the knowledge has one."""
    k = ctx.knowledge
    lines: list[str] = []
    for group in group_by_ingredient(meds):
        m = group[0]
        refs = ", ".join(x.source.reference for x in group)
        lines.append(f"- {m.label} ({m.route} route): a local route, not a systemic magnesium waster; {refs}")
        for cls in sorted(m.classes()):
            c = k.model.classes[cls]
            if c.local_route_note and m.route == "inhalation":
                lines.append(f"  - {c.local_route_note}")
            if c.local_route_source and m.route == "inhalation":
                lines.append(f"  - {k.source(c.local_route_source).citation}")
    return lines
