"""Medications for the rules: which ones count (class, systemic route, drafted, planned, recent exposure) and how
cards list them (one line per order, one drug once with its orders below it)."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from ..record.model import MedicationUse
from .base import RuleContext, display_unit
from .common import days_since


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


def drug_head(ctx: RuleContext, m: MedicationUse, with_class: bool = True) -> str:
    """'- **Furosemide** (loop diuretic)': the start of every medication line (its classes by id, when asked)."""
    classes = [ctx.knowledge.model.classes[c].display for c in sorted(m.classes())] if with_class else []
    return f"- **{m.label}**" + (f" ({', '.join(classes)})" if classes else "")


def med_line(ctx: RuleContext, m: MedicationUse, with_class: bool = True) -> str:
    """'- Furosemide 40 mg (loop diuretic), since 2026-01-02 (327 days); MedicationRequest/x' for cards."""
    parts = [drug_head(ctx, m, with_class)]
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
    parts = [drug_head(ctx, m, with_class)]
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
    head = drug_head(ctx, group[0]) + f": {len(group)} courses"
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
    names = group[0].drug_name
    return f"{names} ({len(group)} orders)"


def exposure_label(group: list[MedicationUse]) -> str:
    """'cetuximab (on hold)', 'cisplatin (completed 2026-11-05)' for summaries: a drug's most telling course
    (on hold first, else the latest dated one, else undated)."""
    m = group[0]
    names = m.drug_name
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
    for group in group_by_ingredient(meds):
        if len(group) == 1:
            lines.append(med_line(ctx, group[0], with_class))
            continue
        lines.append(drug_head(ctx, group[0], with_class) + f": {len(group)} orders")
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
