"""Replay stored decisions: rebuild the PatientRecord from its snapshot (``audit.invocation.snapshot``) and
decide again (``decide.decide``, as the service does).

Used to gate a knowledge release: which cards would appear, disappear or change (indicator or
summary) under the current (or a given) knowledge, with each call's own ``evaluated_at`` as now.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..decide import decide
from ..knowledge import Knowledge
from ..protocol.card import card_topic
from ..record.dates import parse_fhir_date, parse_fhir_datetime
from ..record.model import (
    ConditionFact,
    DataGap,
    Dose,
    DraftService,
    IngredientMatch,
    LabResult,
    MedicationUse,
    PatientRecord,
    SourceRef,
    UnreadableResult,
)


def _source(d: dict[str, Any] | None) -> SourceRef:
    d = d or {}
    return SourceRef(d.get("resourceType") or "Unknown", d.get("id"), d.get("versionId"))


def _dt(value: str | None) -> datetime | None:
    return parse_fhir_datetime(value) if value else None


def _lab(f: dict[str, Any], knowledge: Knowledge | None) -> LabResult:
    analyte = f["analyte"]
    if knowledge is not None:  # the LOINC -> analyte mapping is knowledge: take the replayed one
        analyte = knowledge.loinc_to_analyte.get(f.get("code", ""), analyte)
    return LabResult(
        analyte=analyte, value=float(f["value"]), unit=f["unit"],
        original_value=float(f["originalValue"]), original_unit=f["originalUnit"],
        effective=_dt(f["effective"]) or datetime.min.replace(tzinfo=UTC),
        code=f.get("code", ""), source=_source(f.get("source")), status=f.get("status", "final"),
        ref_low=f.get("refLow"), ref_high=f.get("refHigh"), interpretation=f.get("interpretation"),
        comparator=f.get("comparator"),
    )


def _medication(f: dict[str, Any], knowledge: Knowledge | None) -> MedicationUse:
    matches = []
    for m in f.get("ingredients") or []:
        classes = tuple(m.get("classes") or ())
        if knowledge is not None and m.get("ingredient") in knowledge.model.ingredients:  # classes are knowledge
            classes = tuple(knowledge.model.ingredients[m["ingredient"]].classes)
        matches.append(IngredientMatch(m["ingredient"], classes, m.get("matchedBy", "text"), m.get("matchedCode", "")))
    dose = f.get("dose")
    return MedicationUse(
        source=_source(f.get("source")), status=f.get("status", "active"), label=f.get("label", ""),
        ingredients=tuple(matches), start=_dt(f.get("start")), route=f.get("route"),
        dose=Dose(float(dose["value"]), dose["unit"]) if dose else None, timing=f.get("timing"),
        draft=bool(f.get("draft")), selected=bool(f.get("selected")),
    )


def _condition(f: dict[str, Any], knowledge: Knowledge | None) -> ConditionFact:
    codes = tuple((c[0], c[1]) for c in f.get("codes") or [])
    condition = f.get("condition")
    if knowledge is not None:  # value-set membership is knowledge
        condition = knowledge.condition_of(codes)
    return ConditionFact(condition=condition, label=f.get("label", ""), codes=codes,
                         clinical_status=f.get("clinicalStatus"), onset=_dt(f.get("onset")), source=_source(f.get("source")))


def _gaps(snap: dict[str, Any]) -> list[DataGap]:
    """The stored gaps, then one placeholder per gap counted in ``gapsOmitted`` (compact snapshots), so that
    the data-gaps card's counts replay unchanged."""
    gaps = [DataGap(g.get("kind", ""), g.get("what", ""), g.get("key")) for g in snap.get("gaps") or []]
    for kind, n in (snap.get("gapsOmitted") or {}).items():
        gaps += [DataGap(kind, "(not stored: counted in the audit record)", None)] * int(n)
    return gaps


def record_from_snapshot(snap: dict[str, Any], knowledge: Knowledge | None = None) -> PatientRecord:
    """The inverse of ``snapshot()``. With ``knowledge``, what the knowledge decides (analyte of a
    LOINC code, classes of an ingredient, condition value sets) is re-derived from it; values stay as stored."""
    labs: dict[str, list[LabResult]] = {}
    for results in (snap.get("labs") or {}).values():
        for f in results:
            r = _lab(f, knowledge)
            labs.setdefault(r.analyte, []).append(r)
    for results in labs.values():
        results.sort(key=lambda r: r.effective, reverse=True)  # newest first, as the builder does
    return PatientRecord(
        patient_id=snap.get("patientId") or "",
        birth_date=parse_fhir_date(snap.get("birthDate")),
        sex=snap.get("sex"),
        labs=labs,
        medications=[_medication(m, knowledge) for m in snap.get("medications") or []],
        draft_medications=[_medication(m, knowledge) for m in snap.get("draftMedications") or []],
        draft_services=[DraftService(_source(d.get("source")), d.get("label", ""), tuple((c[0], c[1]) for c in d.get("codes") or []),
                                     bool(d.get("selected"))) for d in snap.get("draftServices") or []],
        conditions=[_condition(c, knowledge) for c in snap.get("conditions") or []],
        gaps=_gaps(snap),
        available=dict(snap.get("available") or {}),
        unreadable=_unreadable(snap.get("unreadable") or {}),
        notes=[DataGap(g.get("kind", ""), g.get("what", ""), g.get("key")) for g in snap.get("notes") or []],
    )


def _unreadable(stored: dict[str, Any]) -> dict[str, list[UnreadableResult]]:
    out: dict[str, list[UnreadableResult]] = {}
    for analyte, items in stored.items():
        for u in items or []:
            when = _dt(u.get("effective"))
            if when is not None:
                out.setdefault(analyte, []).append(UnreadableResult(analyte, when, _source(u.get("source")), u.get("reason", "")))
    return out


@dataclass
class CardChange:
    invocation_id: int
    hook_instance: str
    service_id: str
    rule: str
    change: str  # appear | disappear | change
    before: dict[str, str] | None
    after: dict[str, str] | None

    def to_json(self) -> dict[str, Any]:
        return {"invocationId": self.invocation_id, "hookInstance": self.hook_instance, "serviceId": self.service_id,
                "rule": self.rule, "change": self.change, "before": self.before, "after": self.after}


@dataclass
class ReplayResult:
    knowledge_version: str
    replayed: int = 0
    skipped: int = 0  # calls with no snapshot (errors, 412s)
    changes: list[CardChange] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # snapshots that could not be replayed

    @property
    def changed(self) -> bool:
        return bool(self.changes or self.errors)

    def per_rule(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for c in self.changes:
            counts = out.setdefault(c.rule, {"appear": 0, "disappear": 0, "change": 0})
            counts[c.change] += 1
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        return {"knowledgeVersion": self.knowledge_version, "replayed": self.replayed, "skipped": self.skipped,
                "perRule": self.per_rule(), "changes": [c.to_json() for c in self.changes], "errors": self.errors}


def _card_key(card: dict[str, Any]) -> str:
    return card_topic(card) or card.get("uuid", "")


def _brief(card: dict[str, Any]) -> dict[str, str]:
    return {"indicator": card.get("indicator", ""), "summary": card.get("summary", "")}


def compare_cards(before: Iterable[dict[str, Any]], after: Iterable[dict[str, Any]]) -> list[tuple[str, str, Any, Any]]:
    """(rule, appear|disappear|change, before, after) for every card that differs, by rule."""
    b = {_card_key(c): _brief(c) for c in before}
    a = {_card_key(c): _brief(c) for c in after}
    out: list[tuple[str, str, Any, Any]] = []
    for rule in sorted(set(b) | set(a)):
        if rule not in b:
            out.append((rule, "appear", None, a[rule]))
        elif rule not in a:
            out.append((rule, "disappear", b[rule], None))
        elif a[rule] != b[rule]:
            out.append((rule, "change", b[rule], a[rule]))
    return out


def replay(rows: Iterable[Any], knowledge: Knowledge) -> ReplayResult:
    """Re-run each stored snapshot (InvocationRow-like: id, hook, hook_instance, evaluated_at, cards,
    record_snapshot) through ``knowledge`` and the current rules."""
    result = ReplayResult(knowledge_version=knowledge.version)
    for row in rows:
        if not row.record_snapshot or not row.hook or not row.hook_instance or row.status != 200:
            result.skipped += 1
            continue
        now = row.evaluated_at or row.received_at
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
        try:
            record = record_from_snapshot(row.record_snapshot, knowledge)
            decision = decide(record, knowledge, row.hook, row.hook_instance, now)
        except Exception as exc:  # a snapshot the current code cannot replay is a finding, not a crash
            result.errors.append({"invocationId": row.id, "hookInstance": row.hook_instance,
                                  "error": f"{type(exc).__name__}: {exc}"})
            continue
        result.replayed += 1
        for rule, change, before, after in compare_cards(row.cards or [], decision.cards):
            result.changes.append(CardChange(row.id, row.hook_instance, row.service_id, rule, change, before, after))
    return result
