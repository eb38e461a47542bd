"""Turns prefetched or fetched FHIR data into a PatientRecord (the one place that reads FHIR JSON; medications are
read by record/medications.py)."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..knowledge import LOINC, Knowledge
from . import lean, typed_observations
from .dates import parse_fhir_date, parse_fhir_datetime
from .medications import MedicationReader
from .model import (
    ConditionFact,
    DraftService,
    LabResult,
    PatientRecord,
    SourceRef,
    UnreadableResult,
)
from .units import UnitError, convert, known_unit

log = logging.getLogger(__name__)

OBSERVATION_OK = frozenset({"final", "amended", "corrected"})
COMPARATORS = frozenset({"<", "<=", ">=", ">"})  # R4 QuantityComparator
CONDITION_EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
# families of data, by the resource types that feed them
FAMILY_OF_TYPE = {
    "Observation": "labs",
    "MedicationRequest": "medications",
    "MedicationStatement": "medications",
    "Condition": "conditions",
    "Patient": "patient",
}


@dataclass
class ResolvedData:
    """Prefetch after completion: per key the JSON obtained (None = could not be obtained)."""

    values: dict[str, Any]
    unavailable: dict[str, str] = field(default_factory=dict)  # key -> reason
    key_types: dict[str, str] = field(default_factory=dict)  # key -> resource type the template asks for
    notes: dict[str, str] = field(default_factory=dict)  # key -> why the prefetched value was not used / was partial


def iter_resources(value: Any) -> Iterable[tuple[Any, bool]]:
    """Yield (resource dict or junk, from_bundle) from a resource or a Bundle."""
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        entries = value.get("entry") or []
        if not isinstance(entries, list):
            entries = [entries]
        for entry in entries:
            yield (entry.get("resource") if isinstance(entry, dict) else entry), True
    elif value is not None:
        yield value, False


class RecordBuilder:
    def __init__(self, knowledge: Knowledge, now: datetime):
        self.k = knowledge
        self.now = now
        self.lookback_start = now - timedelta(days=int(knowledge.policy("lookback_days")))
        self._latest = now + timedelta(days=1)  # results dated later are in the future
        self._condition_statuses = frozenset(knowledge.policy("condition_clinical_statuses"))
        self.med_reader = MedicationReader(knowledge, self.lookback_start)
        self._factors: dict[tuple, tuple[str | None, float | None]] = {}

    # ------------------------------------------------------------------ entry point
    def build(
        self,
        patient_id: str,
        data: ResolvedData,
        draft_orders: Any = None,
        selections: Iterable[str] = (),
        extra_medications: Iterable[dict] = (),
    ) -> PatientRecord:
        rec = PatientRecord(patient_id=patient_id)
        for key, reason in data.unavailable.items():
            rec.note_gap("prefetch-unavailable", f"{key}: {reason}", key)
        for key, note in data.notes.items():
            if key not in data.unavailable:
                rec.note_gap("prefetch-partial", f"{key}: {note}", key)
        parsed: list[tuple[str | None, lean.Lean | lean.ObservationFacts]] = []
        medications: dict[str, lean.Medication] = {}
        seen: set[tuple[str, str]] = set()
        observations: dict[str, int] = {}  # Observation id -> its place in parsed: the latest version wins
        for key, value in data.values.items():
            for raw, _ in iter_resources(value):
                typed = type(raw) is typed_observations.ObservationData  # decoded from bytes (api/body.py): clean
                if typed or (type(raw) is dict and raw.get("resourceType") == "Observation"):
                    facts = self._typed_observation(rec, raw, key) if typed else self._parse_observation(rec, raw, key)
                    if facts is None:
                        continue
                    if facts.id:
                        at = observations.get(facts.id)
                        if at is not None:
                            kept = parsed[at][1]
                            if self._later_version(rec, facts, kept):  # type: ignore[arg-type]
                                parsed[at] = (key, facts)
                            continue
                        observations[facts.id] = len(parsed)
                    parsed.append((key, facts))
                    continue
                if self.med_reader.plainly_old_course(raw):
                    continue
                model = self._parse(rec, raw, key)
                if model is None:
                    continue
                rid = getattr(model, "id", None)
                rtype = type(model).__name__
                if rid:
                    if (rtype, rid) in seen:
                        continue
                    seen.add((rtype, rid))
                if isinstance(model, lean.Medication):
                    if rid:
                        medications[rid] = model
                    continue
                parsed.append((key, model))
        for raw in extra_medications:
            model = self._parse(rec, raw, "Medication")
            if isinstance(model, lean.Medication) and model.id:
                medications[model.id] = model

        selected = {s.strip() for s in selections if isinstance(s, str)}
        draft_ids: set[str] = set()
        for raw, _ in iter_resources(draft_orders):
            model = self._parse(rec, raw, "draftOrders", draft=True)
            if model is None:
                continue
            ref = f"{type(model).__name__}/{getattr(model, 'id', None)}"
            is_selected = ref in selected
            if getattr(model, "id", None):
                draft_ids.add(ref)
            if isinstance(model, lean.MedicationRequest):
                rec.draft_medications.append(self.med_reader.read(model, medications, rec, draft=True, selected=is_selected))
            elif isinstance(model, lean.ServiceRequest):
                rec.draft_services.append(
                    DraftService(SourceRef.of(model), model.code.label() if model.code else "",
                                 tuple(model.code.codes()) if model.code else (), is_selected)
                )

        families_seen = {FAMILY_OF_TYPE.get(t) for t in data.key_types.values()}
        for family in ("labs", "medications", "conditions", "patient"):
            if family in families_seen:
                keys = [k for k, t in data.key_types.items() if FAMILY_OF_TYPE.get(t) == family]
                rec.available[family] = all(k not in data.unavailable for k in keys)

        for _, resource in parsed:
            if isinstance(resource, lean.ObservationFacts):
                self._observation(resource, rec)
            elif isinstance(resource, (lean.MedicationRequest, lean.MedicationStatement)):
                if f"MedicationRequest/{resource.id}" in draft_ids:
                    continue  # the drafted order itself, already read from draftOrders
                self.med_reader.add(resource, medications, rec)
            elif isinstance(resource, lean.Condition):
                self._condition(resource, rec)
            elif isinstance(resource, lean.Patient):
                rec.birth_date = parse_fhir_date(resource.birthDate)
                rec.sex = resource.gender
        for analyte, results in rec.labs.items():
            results.sort(key=lambda r: r.effective, reverse=True)
            rec.labs[analyte] = _count_once(rec, analyte, results)
        for unreadable in rec.unreadable.values():
            unreadable.sort(key=lambda u: u.effective, reverse=True)
        return rec

    @staticmethod
    def _later_version(rec: PatientRecord, new: lean.ObservationFacts, kept: lean.ObservationFacts) -> bool:
        """Whether ``new`` supersedes ``kept`` (same Observation id): meta.versionId when both are numbers,
        else meta.lastUpdated. Undecidable different versions keep the first and are said (a data gap)."""
        label = f"Observation/{new.id}"
        a, b = new.version_id, kept.version_id
        order = 0
        if a and b and a != b and a.isdigit() and b.isdigit():
            order = 1 if int(a) > int(b) else -1
        if order == 0:
            ta, tb = parse_fhir_datetime(new.last_updated), parse_fhir_datetime(kept.last_updated)
            if ta is not None and tb is not None and ta != tb:
                order = 1 if ta > tb else -1
        if order == 0:
            if new != kept:
                rec.note_gap("version-unordered", f"{label} was sent in versions that cannot be ordered (no comparable "
                                                  "meta.versionId or meta.lastUpdated): the first one sent was used")
            return False
        newer, older = (new, kept) if order > 0 else (kept, new)
        rec.note("version-superseded", f"{label}: version {older.version_id or older.last_updated or '?'} superseded by "
                                       f"version {newer.version_id or newer.last_updated or '?'} (the latest is used)")
        return order > 0

    # ------------------------------------------------------------------ parsing
    def _parse(self, rec: PatientRecord, raw: Any, key: str | None, draft: bool = False) -> lean.Lean | None:
        if isinstance(raw, dict) and raw.get("resourceType") == "OperationOutcome":
            return None
        model, dropped, error = lean.parse_resource(raw)
        rtype = raw.get("resourceType") if isinstance(raw, dict) else None
        rid = raw.get("id") if isinstance(raw, dict) else None
        label = f"{rtype or 'entry'}/{rid}" if rid else (rtype or "entry")
        if error or model is None:  # parse_resource gives a model or an error
            if rtype in lean.MODELS or not isinstance(raw, dict) or not isinstance(rtype, str):
                rec.note_gap("entry-skipped", f"{label} in {key}: {error}", key)
                log.info("skipped entry %s in %s: %s", label, key, error)
            return None
        if dropped:
            what = ", ".join(sorted(set(dropped)))
            rec.note_gap("element-dropped", f"{label} in {key}: unreadable element(s) ignored: {what}", key)
            log.info("read %s in %s without unreadable element(s): %s", label, key, what)
        if not draft and not self._same_patient(model, rec.patient_id):
            rec.note_gap("other-patient", f"{label} in {key} belongs to another patient and was ignored", key)
            log.warning("ignored %s in %s: belongs to another patient", label, key)
            return None
        return model

    def _parse_observation(self, rec: PatientRecord, raw: dict, key: str | None) -> lean.ObservationFacts | None:
        """An Observation's facts: straight from clean JSON, else through the tolerant model (same outcome)."""
        if self._plainly_unread(raw, rec.patient_id):
            return None
        try:
            facts = lean.observation_facts(raw)
        except Exception:
            model = self._parse(rec, raw, key)
            return lean.observation_facts_from_model(model) if isinstance(model, lean.Observation) else None
        if not _same_reference(facts.subject, rec.patient_id):
            rid = raw.get("id")
            label = f"Observation/{rid}" if rid else "Observation"
            rec.note_gap("other-patient", f"{label} in {key} belongs to another patient and was ignored", key)
            log.warning("ignored %s in %s: belongs to another patient", label, key)
            return None
        return facts

    def _typed_observation(self, rec: PatientRecord, obs: typed_observations.ObservationData,
                           key: str | None) -> lean.ObservationFacts | None:
        """_parse_observation for an Observation decoded from bytes: the same checks and outcome, read from the
        typed structure (which only holds clean Observations, so observation_facts would not have raised)."""
        subject = obs.subject
        ref = subject.reference if subject is not None else None
        same = subject is None or _same_reference(ref, rec.patient_id)
        if same:
            coding = obs.code.coding
            if coding is not None and self._none_of_ours(coding):
                return None  # plainly unread (see _plainly_unread)
        facts = typed_observations.observation_facts_typed(obs)
        if not (same if facts.subject == ref else _same_reference(facts.subject, rec.patient_id)):
            label = f"Observation/{obs.id}" if obs.id else "Observation"
            rec.note_gap("other-patient", f"{label} in {key} belongs to another patient and was ignored", key)
            log.warning("ignored %s in %s: belongs to another patient", label, key)
            return None
        return facts

    def _none_of_ours(self, coding: list[typed_observations.TCoding]) -> bool:
        """Whether no coding of a typed Observation's code is one the rules read (as _plainly_unread decides)."""
        analytes = self.k.loinc_to_analyte
        for c in coding:
            value, system = c.code, c.system
            if value is None:
                return False
            if value.strip() in analytes and (system is None or system.strip() in (LOINC, "")):
                return False
        return True

    def _plainly_unread(self, raw: dict, patient_id: str) -> bool:
        """A well-formed Observation of this patient that no rule reads (status that never counts, or no code
        of ours): skipped before any validation. Anything odd goes down the full path, which notes problems."""
        status, code, subject = raw.get("status"), raw.get("code"), raw.get("subject")
        if type(status) is not str or type(code) is not dict:
            return False
        if subject is not None and not (type(subject) is dict and type(subject.get("reference")) in (str, type(None))
                                        and _same_reference(subject.get("reference"), patient_id)):
            return False
        # a status that never counts is still read when the code is ours: as the latest version of an
        # Observation it withdraws an earlier final one (e.g. entered-in-error)
        coding = code.get("coding")
        if type(coding) is not list:
            return False
        analytes = self.k.loinc_to_analyte
        for c in coding:
            if type(c) is not dict:
                return False
            value, system = c.get("code"), c.get("system")
            if type(value) is not str or type(system) not in (str, type(None)):
                return False
            if value.strip() in analytes and (system is None or system.strip() in (LOINC, "")):
                return False
        return True

    @staticmethod
    def _same_patient(model: lean.Lean, patient_id: str) -> bool:
        if isinstance(model, lean.Patient):
            return model.id is None or model.id == patient_id
        subject = getattr(model, "subject", None)
        return _same_reference(subject.reference if subject is not None else None, patient_id)

    # ------------------------------------------------------------------ observations
    def _observation(self, obs: lean.ObservationFacts, rec: PatientRecord) -> None:
        if obs.status not in OBSERVATION_OK:
            return  # preliminary, cancelled, entered-in-error, ... never count
        analyte = code = None
        for system, c_code in obs.codings:
            if c_code and (system in (LOINC, None, "")):
                analyte = self.k.loinc_to_analyte.get(c_code)
                if analyte:
                    code = c_code
                    break
        if analyte is None:
            return
        label = f"Observation/{obs.id}" if obs.id else "Observation"
        source = SourceRef("Observation", obs.id, obs.version_id)
        q = obs.quantity
        when = parse_fhir_datetime(obs.effective)
        dated = when is not None and self.lookback_start <= when <= self._latest
        if q is None or q.value is None:
            rec.note_gap("value-missing", f"{label} ({analyte}) has no numeric value")
            if dated:
                self._unreadable(rec, analyte, when, source, "no numeric value")  # type: ignore[arg-type]
            return
        if when is None:
            rec.note_gap("date-missing", f"{label} ({analyte}) has no effective date")
            return
        if when < self.lookback_start:
            return
        if when > self._latest:
            rec.note_gap("date-future", f"{label} ({analyte}) is dated in the future ({when.date()}) and was ignored")
            return
        if q.comparator is not None and q.comparator not in COMPARATORS:
            rec.note_gap("value-unreadable", f"{label} ({analyte}) has an unknown comparator {q.comparator!r}")
            self._unreadable(rec, analyte, when, source, f"unknown comparator {q.comparator!r}")
            return
        definition = self.k.model.analytes[analyte]
        raw_unit = q.code if q.system == "http://unitsofmeasure.org" and q.code else (q.unit or q.code)
        unit, factor = self._conversion(definition, raw_unit)
        if factor is None or unit is None:  # a factor is only ever found for a unit
            rec.note_gap("unit-unknown", f"{label} ({analyte}) unit {raw_unit!r} cannot be interpreted")
            self._unreadable(rec, analyte, when, source, f"unit {raw_unit!r} cannot be interpreted")
            return
        value = q.value * factor
        low = high = None
        for rr_low, rr_high in obs.ranges:
            low = self._range_value(rr_low, unit, definition)
            high = self._range_value(rr_high, unit, definition)
            if low is not None or high is not None:
                break
        interpretation = None
        for codes in obs.interpretations:
            interpretation = next((c for c in codes if c), None)
            if interpretation:
                break
        rec.labs.setdefault(analyte, []).append(
            LabResult(
                analyte=analyte,
                value=value,
                unit=definition.canonical_unit,
                original_value=q.value,
                original_unit=unit,
                effective=when,
                code=code or "",
                source=source,
                status=obs.status,
                ref_low=low,
                ref_high=high,
                interpretation=interpretation,
                comparator=q.comparator,
            )
        )

    @staticmethod
    def _unreadable(rec: PatientRecord, analyte: str, when: datetime, source: SourceRef, reason: str) -> None:
        rec.unreadable.setdefault(analyte, []).append(UnreadableResult(analyte, when, source, reason))

    def _range_value(self, q: lean.QuantityFacts | None, value_unit: str, definition: Any) -> float | None:
        if q is None or q.value is None:
            return None
        _, factor = self._conversion(definition, q.code or q.unit, default=value_unit)
        return None if factor is None else q.value * factor

    def _conversion(self, definition: Any, raw_unit: str | None, default: str | None = None) -> tuple[str | None, float | None]:
        """(normalised unit, factor to the canonical unit) or (unit, None) when it cannot be converted.

        Every conversion in units.py is a product, so one factor per (analyte, unit) is computed and cached."""
        key = (definition.id, raw_unit, default)
        hit = self._factors.get(key)
        if hit is not None:
            return hit
        unit = self.k.unit(raw_unit) or default
        if unit is None and definition.kind == "ratio":
            unit = definition.canonical_unit
        unit = definition.unit_equivalents.get(unit, unit) if unit else unit
        factor: float | None = None
        if unit is not None and known_unit(unit):
            try:
                factor = convert(1.0, unit, definition)
            except UnitError:
                factor = None
        self._factors[key] = (unit, factor)
        return unit, factor

    # ------------------------------------------------------------------ conditions
    def _condition(self, cond: lean.Condition, rec: PatientRecord) -> None:
        clinical = next((c.code for c in cond.clinicalStatus.coding if c.code), None) if cond.clinicalStatus else None
        verification = next((c.code for c in cond.verificationStatus.coding if c.code), None) if cond.verificationStatus else None
        if verification in CONDITION_EXCLUDED_VERIFICATION:
            return
        if clinical is not None and clinical not in self._condition_statuses:
            return
        codes = tuple(cond.code.codes())
        condition = self.k.condition_of(codes)
        rec.conditions.append(
            ConditionFact(
                condition=condition,
                label=cond.code.label(),
                codes=codes,
                clinical_status=clinical,
                onset=parse_fhir_datetime(cond.onsetDateTime or cond.recordedDate),
                source=SourceRef.of(cond),
            )
        )


def _count_once(rec: PatientRecord, analyte: str, results: list[LabResult]) -> list[LabResult]:
    """The same result sent under several ids (same analyte, time, value and unit) counts once: the first
    kept, the others noted for the audit."""
    kept: dict[tuple, LabResult] = {}
    out: list[LabResult] = []
    for r in results:
        key = (r.effective, r.comparator, round(r.value, 6), r.unit)
        first = kept.get(key)
        if first is not None:
            rec.note("duplicate-result", f"{r.source.reference} repeats {first.source.reference} ({analyte} "
                                         f"{r.comparator or ''}{r.original_value:g} {r.original_unit} at "
                                         f"{r.effective.isoformat()}): counted once")
            continue
        kept[key] = r
        out.append(r)
    return out


def _same_reference(ref: str | None, patient_id: str) -> bool:
    """Whether a subject reference (or its absence) means this patient."""
    if not ref:
        return True
    ref = ref.split("/_history/")[0]
    return ref == f"Patient/{patient_id}" or ref.endswith(f"/Patient/{patient_id}") or ref == f"urn:uuid:{patient_id}"
