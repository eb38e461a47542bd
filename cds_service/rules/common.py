"""Helpers shared by rules: low/high against the Observation's own range or the knowledge default,
persistence of low results, kidney function, medication lines and the override reasons of warnings."""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Iterable

from ..knowledge import LOINC
from ..record.derived import Derived, creatinine_clearance, egfr_from_creatinine
from ..record.model import LabResult, MedicationUse
from .base import OverrideReason, RuleContext

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
    t = ctx.knowledge.threshold(default_key)
    return float(t.value), f"default {t.value} {t.unit} ({t.source})"


def high_limit(ctx: RuleContext, r: LabResult, default_key: str) -> tuple[float, str]:
    if r.ref_high is not None:
        return r.ref_high, "the lab's reference range"
    t = ctx.knowledge.threshold(default_key)
    return float(t.value), f"default {t.value} {t.unit} ({t.source})"


def is_low(ctx: RuleContext, r: LabResult, default_key: str) -> bool:
    limit, _ = low_limit(ctx, r, default_key)
    return r.value < limit


def is_high(ctx: RuleContext, r: LabResult, default_key: str) -> bool:
    limit, _ = high_limit(ctx, r, default_key)
    return r.value > limit


def magnesium_low(ctx: RuleContext, r: LabResult) -> bool:
    """Below the range, or below the guidance's severe threshold whatever the lab's range says."""
    return is_low(ctx, r, "magnesium_low") or r.value < ctx.threshold("magnesium_severe")


def magnesium_is_low(ctx: RuleContext) -> LabResult | None:
    """The latest magnesium if it is below range, else None."""
    latest = ctx.record.latest("magnesium")
    if latest is not None and magnesium_low(ctx, latest):
        return latest
    return None


def recent(ctx: RuleContext, analyte: str, days_policy: str) -> LabResult | None:
    """The latest result of ``analyte`` if it is within the policy's number of days of ``now``."""
    r = ctx.record.latest(analyte)
    if r is None:
        return None
    return r if ctx.now - r.effective <= timedelta(days=float(ctx.policy(days_policy))) else None


def magnesium_low_or_unmeasured(ctx: RuleContext) -> tuple[str, LabResult | None]:
    """('low', r) | ('unmeasured', latest-or-None) | ('normal', r): the magnesium state for 'check magnesium first'."""
    latest = ctx.record.latest("magnesium")
    if latest is not None and magnesium_low(ctx, latest):
        return "low", latest
    if recent(ctx, "magnesium", "magnesium_recent_days") is None:
        return "unmeasured", latest
    return "normal", latest


def persistent_low(ctx: RuleContext, analyte: str, default_key: str, low=None,
                   count_policy: str = "refractory_min_low_results", span_policy: str = "refractory_min_span_hours",
                   window_policy: str = "refractory_window_days") -> list[LabResult] | None:
    """The unbroken run of low results from the latest backwards, within the window, when it is long
    enough (>= count results spanning >= span hours); None otherwise. A normal result ends the run."""
    is_low_fn = low or (lambda r: is_low(ctx, r, default_key))
    window_start = ctx.now - timedelta(days=float(ctx.policy(window_policy)))
    run: list[LabResult] = []
    for r in ctx.record.results(analyte):
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


def kidney_function(ctx: RuleContext) -> tuple[Derived | None, list[str]]:
    """Creatinine clearance (Cockcroft-Gault, else a de-indexed eGFR) and what is missing when neither works."""
    return creatinine_clearance(ctx.record, ctx.now, float(ctx.policy("renal_function_max_age_days")),
                                float(ctx.policy("weight_max_age_days")))


def egfr(ctx: RuleContext) -> Derived | None:
    """CKD-EPI 2021 from the latest creatinine, else the lab-reported eGFR (both indexed to 1.73 m2)."""
    d = egfr_from_creatinine(ctx.record, ctx.now, float(ctx.policy("renal_function_max_age_days")))
    if d is not None:
        return d
    r = recent(ctx, "egfr", "renal_function_max_age_days")
    if r is None:
        return None
    return Derived("egfr-reported", r.value, "mL/min/{1.73_m2}", "eGFR as reported by the lab", (r,))


def derived_line(d: Derived, label: str, digits: int = 1) -> str:
    lines = [f"- {label}: **{d.value:.{digits}f} {d.unit}** = {d.formula}"]
    for i in d.inputs:
        lines.append(f"  - input {i.analyte.replace('_', ' ')}: {fmt_value(i)} on {i.effective.date().isoformat()} ({i.source.reference})")
    for n in d.notes:
        lines.append(f"  - note: {n}")
    return "\n".join(lines)


def fmt_value(r: LabResult, digits: int = 2) -> str:
    shown = f"{r.value:.{digits}f} {r.unit}"
    if r.original_unit != r.unit:
        shown += f" (reported {r.original_value:g} {r.original_unit})"
    return shown


def mg_mmol(ctx: RuleContext, mg_dl: float) -> float:
    """Magnesium mg/dL -> mmol/L with the knowledge molar mass (mg/dL x 10 / 24.305)."""
    return mg_dl * 10.0 / float(ctx.knowledge.model.analytes["magnesium"].molar_mass)


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
        parts.append(f", dose {m.dose.value:g} {m.dose.unit}".rstrip())
    if m.route:
        parts.append(f", {m.route}")
    if m.timing:
        parts.append(f", '{m.timing}'")
    if m.draft:
        parts.append(", drafted order")
    elif m.start is not None:
        parts.append(f", since {m.start.date().isoformat()} ({days_since(ctx, m.start)} days)")
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
            if last is None:  # undated: it may be recent, so it is shown (and said to be undated)
                out.append(m)
            elif last <= ctx.now + timedelta(days=1) and ctx.now - last <= timedelta(days=window[0]):
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
