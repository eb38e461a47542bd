"""The evidence page's model: lab panels with the lab range and the knowledge's thresholds, medication bars and
derived values, all on one time axis, built from one audited invocation and one of its cards (no EHR access)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..knowledge import Knowledge
from ..protocol.card import card_topic
from ..record.dates import parse_fhir_datetime

WIDTH = 1200  # SVG user units; the SVG scales to the page width
PLOT_LEFT, PLOT_RIGHT = 64, 1186
LANE_HEIGHT = 30
MAX_POINTS = 400  # per panel: more results than this in the lookback window are listed, not drawn
MAX_BARS = 40
PANEL_ANALYTES = ("potassium", "calcium", "calcium_ionized", "creatinine")
DERIVED_RATES = ("egfr-ckd-epi-2021", "creatinine-clearance", "egfr", "kidney-function")
# threshold keys drawn on each panel (unit must match the panel's canonical unit)
PANEL_THRESHOLDS = {
    "magnesium": ("magnesium_low", "magnesium_severe", "magnesium_ctcae_g3", "magnesium_ctcae_g4"),
    "potassium": ("potassium_low", "potassium_severe"),
    "calcium": ("calcium_low", "calcium_high"),
    "calcium_ionized": ("calcium_ionized_low", "calcium_ionized_high"),
    "creatinine": (),
    "kidney-function": ("femg_min_crcl", "crcl_aggressive_replacement_min"),
}
THRESHOLD_NAMES = {
    "magnesium_low": "low (lab-range default)", "magnesium_severe": "severe (guidance)",
    "magnesium_ctcae_g3": "CTCAE grade 3", "magnesium_ctcae_g4": "CTCAE grade 4",
    "potassium_low": "low (lab-range default)", "potassium_severe": "severe (CTCAE)",
    "calcium_low": "low (lab-range default)", "calcium_high": "high (lab-range default)",
    "calcium_ionized_low": "low (lab-range default)", "calcium_ionized_high": "high (lab-range default)",
    "femg_min_crcl": "FEMg readable above", "crcl_aggressive_replacement_min": "no aggressive replacement below",
}
SCALE_INCLUDES = {"magnesium": (2.4,)}  # mg/dL: the top of common lab ranges stays in view
MED_GROUPS = (("wasting", "Magnesium-wasting drugs"), ("magnesium-supplement", "Magnesium supplements"),
              ("vitamin-d-analogue", "Vitamin D analogues"))


@dataclass
class Axis:
    start: datetime
    end: datetime

    def x(self, when: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        f = (when - self.start).total_seconds() / span
        return round(PLOT_LEFT + min(1.0, max(0.0, f)) * (PLOT_RIGHT - PLOT_LEFT), 1)

    def ticks(self) -> list[tuple[float, str]]:
        """Date ticks: first of each month (or every few days on a short axis), at most about 12."""
        days = (self.end - self.start).days
        out: list[tuple[float, str]] = []
        if days > 75:
            step = max(1, -(-days // 30 // 12))
            y, m = self.start.year, self.start.month + 1
            while True:
                if m > 12:
                    y, m = y + 1, m - 12
                t = datetime(y, m, 1, tzinfo=UTC)
                if t > self.end:
                    break
                out.append((self.x(t), t.strftime("%b %Y") if m == 1 or not out else t.strftime("%b")))
                m += step
        else:
            step = 1 if days <= 12 else 7 if days <= 70 else 14
            t = datetime.combine(self.start.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
            while t <= self.end:
                out.append((self.x(t), t.strftime("%d %b")))
                t += timedelta(days=step)
        return out


@dataclass
class Point:
    x: float
    y: float
    value: float
    unit: str
    date: str
    reported: str
    converted: str
    source: str
    counted: bool
    why: str
    label: str


@dataclass
class Line:
    key: str
    value: float
    unit: str
    y: float
    label: str
    source: str
    note: str


@dataclass
class Panel:
    id: str
    title: str
    unit: str
    height: int
    top: int
    bottom: int
    points: list[Point] = field(default_factory=list)
    thresholds: list[Line] = field(default_factory=list)
    band: tuple[float, float, str] | None = None  # y of the lab range's high and low edges, its text
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    not_drawn: int = 0


@dataclass
class Bar:
    group: str
    label: str
    x0: float
    x1: float
    y: float
    since: str
    clipped: bool
    start_known: bool
    draft: bool
    used: bool
    source: str
    detail: str


@dataclass
class Evidence:
    card: dict[str, Any]
    rule: str
    invocation: dict[str, Any]
    patient: dict[str, Any]
    now: datetime
    lookback_start: datetime
    axis: Axis
    x_ticks: list[tuple[float, str]]
    window: tuple[float, float, str] | None
    panels: list[Panel]
    bars: list[Bar]
    bars_height: int
    derived: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    knowledge_version: str
    source: dict[str, Any]


def _when(value: Any) -> datetime | None:
    return parse_fhir_datetime(value) if isinstance(value, str) else None


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def num(v: Any) -> str:
    """A value for display: 4 significant digits for numbers."""
    return "" if v is None else f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


def source_ref(f: dict[str, Any]) -> str:
    s = f.get("source")
    if not isinstance(s, dict):
        return ""
    ref = f"{s.get('resourceType', '')}/{s.get('id') or '(no id)'}" if s else ""
    return ref + (f"/_history/{s['versionId']}" if s.get("versionId") else "")


def _lab_key(f: dict[str, Any]) -> tuple:
    return (source_ref(f), f.get("effective"), f.get("analyte"))


def _used_labs(facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every lab fact the card used, also the inputs of its derived values."""
    out: list[dict[str, Any]] = []
    for f in facts:
        if f.get("kind") == "lab":
            out.append(f)
        elif f.get("kind") == "derived":
            out += [i for i in _list(f.get("inputs")) if isinstance(i, dict) and i.get("kind") == "lab"]
    return out


def build(invocation: dict[str, Any], card: dict[str, Any], knowledge: Knowledge) -> Evidence:
    """The page model for ``card`` of the audited ``invocation`` (its record snapshot and per-rule facts)."""
    rule = card_topic(card)
    by_rule = _dict(invocation.get("facts"))
    facts = [f for f in by_rule.get(rule) or [] if isinstance(f, dict)]
    snap = _dict(invocation.get("recordSnapshot"))
    now = _when(invocation.get("evaluatedAt")) or _when(invocation.get("receivedAt")) or datetime.now(UTC)
    lookback_start = now - timedelta(days=float(knowledge.policy("lookback_days")))
    raw_labs = _dict(snap.get("labs"))
    labs: dict[str, list[dict[str, Any]]] = {a: [f for f in v if isinstance(f, dict)]
                                             for a, v in raw_labs.items() if isinstance(v, list)}
    used = _used_labs(facts)
    for f in used:  # facts the snapshot lacks (should not happen) are still drawn
        series = labs.setdefault(str(f.get("analyte")), [])
        if _lab_key(f) not in {_lab_key(x) for x in series}:
            series.append(f)
    used_keys = {_lab_key(f) for f in used}
    used_analytes = {f.get("analyte") for f in used}
    derived = [{**f, "inputs": [i for i in _list(f.get("inputs")) if isinstance(i, dict)]}
               for f in facts if f.get("kind") == "derived"]
    derived_rates = [d for d in derived if d.get("name") in DERIVED_RATES]

    panel_ids = ["magnesium"] + [a for a in PANEL_ANALYTES if a in used_analytes]
    if derived_rates or "egfr" in used_analytes or "crcl_measured" in used_analytes:
        panel_ids.append("kidney-function")
    meds = [m for m in _list(snap.get("medications")) if isinstance(m, dict)]
    drafts = [m for m in _list(snap.get("draftMedications")) if isinstance(m, dict)]

    # the axis: from the earliest drawn date (at least 30 days back, at most the lookback window) to the call
    dates = [d for a in panel_ids for f in labs.get(a, []) if (d := _when(f.get("effective")))]
    dates += [d for d in (_when(m.get("start")) for m in meds) if d]
    start = max(lookback_start, min(dates + [now - timedelta(days=30)]))
    span = now - start
    axis = Axis(start - span * 0.02, now + span * 0.04)

    gaps = _list(snap.get("gaps")) or _list(invocation.get("gaps"))
    panels: list[Panel] = []
    top = 0
    for pid in panel_ids:
        panel = _kidney_panel(pid, labs, derived_rates, used_keys, axis, knowledge, top) if pid == "kidney-function" \
            else _lab_panel(pid, labs.get(pid, []), used_keys, rule, now, axis, knowledge, top)
        panel.unreadable = [str(g.get("what", "")) for g in gaps
                            if isinstance(g, dict) and f"({pid})" in str(g.get("what", ""))]
        panels.append(panel)
        top += panel.height
    bars = _bars(meds, drafts, facts, axis, now, knowledge)
    window = None
    if rule.startswith("refractory"):
        days = float(knowledge.policy("refractory_window_days"))
        window = (axis.x(now - timedelta(days=days)), axis.x(now), f"refractory window: last {days:g} days")
    return Evidence(
        card=card, rule=rule, invocation=invocation,
        patient={"id": snap.get("patientId") or invocation.get("patientId"), "sex": snap.get("sex"),
                 "birthDate": snap.get("birthDate")},
        now=now, lookback_start=lookback_start, axis=axis, x_ticks=axis.ticks(), window=window, panels=panels,
        bars=bars, bars_height=max(1, len(bars)) * LANE_HEIGHT + 50, derived=derived,
        gaps=[g for g in gaps if isinstance(g, dict)],
        knowledge_version=str(invocation.get("knowledgeVersion") or ""), source=card.get("source") or {},
    )


def _scale(values: list[float], pad_to: tuple[float, float]) -> tuple[float, float]:
    lo, hi = min(values + [pad_to[0]]), max(values + [pad_to[1]])
    pad = (hi - lo) * 0.08 or 1.0
    return max(0.0, lo - pad), hi + pad


def _y_mapper(lo: float, hi: float, top: int, height: int):
    inner_top, inner_bottom = top + 28, top + height - 26

    def y(v: float) -> float:
        return round(inner_bottom - (v - lo) / ((hi - lo) or 1.0) * (inner_bottom - inner_top), 1)
    return y, inner_top, inner_bottom


def _nice_ticks(lo: float, hi: float, y) -> list[tuple[float, str]]:
    raw = (hi - lo) / 5
    step = next(s for s in (0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 25, 50, 100, 200, 500) if s >= raw) if raw <= 500 else raw
    out, v = [], (int(lo / step) + 1) * step
    while v < hi:
        out.append((y(v), f"{v:g}"))
        v = round(v + step, 6)
    return out


def _thresholds(pid: str, unit: str, knowledge: Knowledge) -> list[tuple[str, Any]]:
    out = []
    for key in PANEL_THRESHOLDS.get(pid, ()):
        t = knowledge.model.thresholds.get(key)
        if t is not None and isinstance(t.value, (int, float)) and (t.unit == unit or pid == "kidney-function"):
            out.append((key, t))
    return out


def _threshold_label(key: str, t: Any) -> str:
    return f"{THRESHOLD_NAMES.get(key, key.replace('_', ' '))} {num(t.value)} {t.unit}"


def _converted(analyte: str, value: float, unit: str, knowledge: Knowledge) -> str:
    a = knowledge.model.analytes.get(analyte)
    text = f"{num(value)} {unit}"
    if a is not None and a.molar_mass and unit == "mg/dL":
        mmol = value * 10 / a.molar_mass
        text += f" = {mmol:.3g} mmol/L" if mmol >= 0.1 else f" = {mmol * 1000:.3g} µmol/L"
    return text


def _in_range(f: dict[str, Any]) -> bool:
    low, high, value = f.get("refLow"), f.get("refHigh"), f.get("value")
    return isinstance(value, (int, float)) and isinstance(low, (int, float)) and value >= low and \
        (not isinstance(high, (int, float)) or value <= high)


def _why_not(f: dict[str, Any], when: datetime, rows: list[tuple[datetime, dict[str, Any]]], counted: list[datetime],
             rule: str, now: datetime, knowledge: Knowledge) -> str:
    """Why a result in the record did not count for this card (from what the audit row shows)."""
    if rule.startswith("refractory"):
        days = float(knowledge.policy("refractory_window_days"))
        if when < now - timedelta(days=days):
            return f"stale: older than the {days:g}-day refractory window"
        normal_after = [w for w, g in rows if w > when and _in_range(g)]
        if normal_after and not _in_range(f):
            return f"before the in-range result of {min(normal_after).date()}, which ended the low run"
    if _in_range(f):
        return "within the lab's range: not part of this finding"
    later = [c for c in counted if c > when]
    if later:
        return f"superseded: the card used the later result of {min(later).date()}"
    return "not used by this card's rule"


def _lab_panel(pid: str, series: list[dict[str, Any]], used_keys: set, rule: str, now: datetime, axis: Axis,
               knowledge: Knowledge, top: int) -> Panel:
    a = knowledge.model.analytes.get(pid)
    unit = a.canonical_unit if a else ""
    height = 270 if pid == "magnesium" else 170
    panel = Panel(pid, a.display if a else pid, unit, height, top, top + height)
    rows = [(w, f) for f in series if (w := _when(f.get("effective"))) and isinstance(f.get("value"), (int, float))]
    rows.sort(key=lambda r: r[0])
    panel.not_drawn = max(0, len(rows) - MAX_POINTS)
    rows = rows[-MAX_POINTS:]
    thresholds = _thresholds(pid, unit, knowledge)
    ranges = [(f.get("refLow"), f.get("refHigh")) for _, f in rows]
    ref_low = next((lo for lo, _ in reversed(ranges) if isinstance(lo, (int, float))), None)
    ref_high = next((hi for _, hi in reversed(ranges) if isinstance(hi, (int, float))), None)
    bounds = [float(f["value"]) for _, f in rows] + [float(t.value) for _, t in thresholds]
    bounds += [v for v in (ref_low, ref_high) if v is not None]
    bounds += list(SCALE_INCLUDES.get(pid, ()))
    lo, hi = _scale(bounds, (min(bounds, default=0.0), max(bounds, default=1.0)))
    y, inner_top, inner_bottom = _y_mapper(lo, hi, top, height)
    panel.y_ticks = _nice_ticks(lo, hi, y)
    if ref_low is not None or ref_high is not None:
        y_hi = y(ref_high) if ref_high is not None else inner_top
        y_lo = y(ref_low) if ref_low is not None else inner_bottom
        panel.band = (y_hi, y_lo, f"lab range {num(ref_low) if ref_low is not None else ''}–"
                                  f"{num(ref_high) if ref_high is not None else ''} {unit} (as the lab reported it)")
    for key, t in thresholds:
        src = knowledge.source(t.source)
        panel.thresholds.append(Line(key, float(t.value), t.unit, y(float(t.value)),
                                     _threshold_label(key, t), src.title, t.note))
    counted_dates = [w for w, f in rows if _lab_key(f) in used_keys]
    label_points = len(rows) <= 12
    for w, f in rows:
        counted = _lab_key(f) in used_keys
        value = float(f["value"])
        reported = f"{num(f.get('originalValue'))} {f.get('originalUnit', '')}".strip()
        panel.points.append(Point(
            x=axis.x(w), y=y(value), value=value, unit=str(f.get("unit", unit)), date=w.date().isoformat(),
            reported=reported, converted=_converted(pid, value, str(f.get("unit", unit)), knowledge), source=source_ref(f),
            counted=counted, why="" if counted else _why_not(f, w, rows, counted_dates, rule, now, knowledge),
            label=f"{value:.3g}" if label_points else ""))
    return panel


def _kidney_panel(pid: str, labs: dict[str, list[dict[str, Any]]], derived: list[dict[str, Any]], used_keys: set,
                  axis: Axis, knowledge: Knowledge, top: int) -> Panel:
    """eGFR results and the card's derived eGFR / creatinine clearance (each at its creatinine's date)."""
    height = 170
    panel = Panel(pid, "Kidney function: eGFR and creatinine clearance", "mL/min (eGFR per 1.73 m²)", height, top,
                  top + height)
    entries: list[tuple[datetime, float, dict[str, Any], str]] = []
    for analyte in ("egfr", "crcl_measured"):
        for f in labs.get(analyte, []):
            w = _when(f.get("effective"))
            if w and isinstance(f.get("value"), (int, float)):
                entries.append((w, float(f["value"]), f, f"{analyte} result"))
    for d in derived:
        inputs = [i for i in _list(d.get("inputs")) if isinstance(i, dict)
                  and i.get("analyte") in ("creatinine", "egfr", "crcl_measured")]
        w = _when(inputs[0].get("effective")) if inputs else None
        value = d.get("value")
        if value is None and isinstance(d.get("low"), (int, float)) and isinstance(d.get("high"), (int, float)):
            value = d["high"]  # the call's kidney assessment: an estimate or a range; its upper bound is drawn
        if w and isinstance(value, (int, float)):
            what = f"{d.get('method') or d.get('name')} (derived" + (
                f", between {d['low']:.0f} and {d['high']:.0f})" if d.get("low") not in (None, d.get("high")) else ")")
            entries.append((w, float(value), d, what))
    thresholds = _thresholds(pid, "", knowledge)
    bounds = [v for _, v, _, _ in entries] + [float(t.value) for _, t in thresholds]
    lo, hi = _scale(bounds, (0.0, max(bounds, default=100.0)))
    y, _, _ = _y_mapper(lo, hi, top, height)
    panel.y_ticks = _nice_ticks(lo, hi, y)
    for key, t in thresholds:
        panel.thresholds.append(Line(key, float(t.value), t.unit, y(float(t.value)),
                                     _threshold_label(key, t), knowledge.source(t.source).title,
                                     t.note))
    for w, v, f, what in sorted(entries, key=lambda e: e[0]):
        is_derived = f.get("kind") == "derived"
        counted = is_derived or _lab_key(f) in used_keys
        unit = str(f.get("unit", ""))
        panel.points.append(Point(
            x=axis.x(w), y=y(v), value=v, unit=unit, date=w.date().isoformat(),
            reported=(f.get("formula") or "") if is_derived else f"{num(f.get('originalValue'))} {f.get('originalUnit', '')}",
            converted=f"{num(v)} {unit}", source=what if is_derived else source_ref(f), counted=counted,
            why="" if counted else "not used by this card's rule", label=f"{v:.0f}"))
    return panel


def _group(m: dict[str, Any], knowledge: Knowledge) -> str | None:
    classes = {c for i in m.get("ingredients") or [] if isinstance(i, dict) for c in i.get("classes") or []
               if isinstance(c, str)}
    if any(knowledge.model.classes[c].wasting for c in classes if c in knowledge.model.classes):
        return "wasting"
    for group in ("magnesium-supplement", "vitamin-d-analogue"):
        if group in classes:
            return group
    return None


def _bars(meds: list[dict[str, Any]], drafts: list[dict[str, Any]], facts: list[dict[str, Any]], axis: Axis,
          now: datetime, knowledge: Knowledge) -> list[Bar]:
    """One bar per relevant medication: active ones from their start (clipped to the axis) to the call's now;
    orders drafted in the call from now to the axis end."""
    used = {source_ref(f) for f in facts if f.get("kind") == "medication"}
    order = {g: i for i, (g, _) in enumerate(MED_GROUPS)}
    rows = [(g, m) for m in meds + drafts if (g := _group(m, knowledge))]
    rows.sort(key=lambda r: (order[r[0]], bool(r[1].get("draft")), str(r[1].get("start") or "")))
    bars: list[Bar] = []
    names = dict(MED_GROUPS)
    for i, (g, m) in enumerate(rows[:MAX_BARS]):
        start = _when(m.get("start"))
        draft = bool(m.get("draft"))
        if draft:
            x0, end_x = axis.x(now), axis.x(axis.end)
        else:
            x0, end_x = (axis.x(start) if start else PLOT_LEFT), axis.x(now)
        dose = m.get("dose") or {}
        detail = "; ".join(x for x in (
            f"{num(dose.get('value'))} {dose.get('unit')}" if dose else "", m.get("route") or "",
            f"'{m['timing']}'" if m.get("timing") else "", names[g]) if x)
        bars.append(Bar(
            group=g, label=str(m.get("label") or "(no name)"), x0=x0, x1=end_x, y=20 + i * LANE_HEIGHT,
            since=start.date().isoformat() if start else "start not recorded",
            clipped=bool(start and start < axis.start), start_known=start is not None, draft=draft,
            used=source_ref(m) in used, source=source_ref(m), detail=detail))
    return bars
