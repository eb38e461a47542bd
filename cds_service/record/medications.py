"""Reading MedicationRequests and MedicationStatements into MedicationUse: the medication they name (coded,
contained or referenced), its ingredients, route, state (current, on-hold, ended, planned), dose and timing."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..knowledge import ATC, RXNORM, Knowledge
from . import lean
from .dates import parse_fhir_datetime
from .model import Dose, IngredientMatch, MedicationUse, PatientRecord, SourceRef


def medication_id(reference: Any) -> str | None:
    """The id of the Medication a literal medicationReference names ("Medication/m1",
    "https://ehr/fhir/Medication/m1/_history/2"); None when it names anything else (a contained "#m1" is
    resolved by the reader of that resource)."""
    if not isinstance(reference, str):
        return None
    ref = reference.strip()
    if not (ref.startswith("Medication/") or "/Medication/" in ref):
        return None
    return ref.split("/_history/")[0].rstrip("/").split("/")[-1]


class MedicationReader:
    """One call's medication reading (RecordBuilder holds one): the knowledge's status policies, and each
    medication's ingredients and route resolved once."""

    def __init__(self, knowledge: Knowledge, lookback_start: datetime):
        self.k = knowledge
        self.lookback_start = lookback_start
        self._ms_states: dict[str, str] = dict(knowledge.policy("medication_statement_states"))
        self._mr_states: dict[str, str] = dict(knowledge.policy("medication_request_states"))
        self._mr_planned_intents = frozenset(knowledge.policy("medication_request_planned_intents"))
        self._old_course_before = (self.lookback_start - timedelta(days=1)).date().isoformat()
        self._routes_seen: dict[tuple, str | None] = {}
        self._ingredients_seen: dict[tuple, tuple[IngredientMatch, ...]] = {}

    def _state(self, med: lean.MedicationRequest | lean.MedicationStatement) -> str | None:
        """What the status (and a MedicationRequest's intent) means: current, on-hold, ended, planned; None = not read."""
        status = (med.status or "").strip()
        if isinstance(med, lean.MedicationRequest):
            state = self._mr_states.get(status)
            if state in ("current", "on-hold") and (med.intent or "").strip() in self._mr_planned_intents:
                return "planned"  # a plan or a proposal is not an order being carried out
            return state
        return self._ms_states.get(status)

    def plainly_old_course(self, raw: Any) -> bool:
        """A well-formed completed/stopped MedicationRequest or MedicationStatement whose last known date is before
        the lookback: never read (skipped before validation). Anything odd goes the full way."""
        if type(raw) is not dict:
            return False
        rtype, status = raw.get("resourceType"), raw.get("status")
        if rtype == "MedicationRequest" and type(status) is str and self._mr_states.get(status.strip()) == "ended":
            when = raw.get("authoredOn")
        elif rtype == "MedicationStatement" and type(status) is str and self._ms_states.get(status.strip()) == "ended":
            period = raw.get("effectivePeriod")
            if period is not None and type(period) is not dict:
                return False
            when = (period or {}).get("end") or (period or {}).get("start") or raw.get("effectiveDateTime") or raw.get("dateAsserted")
        else:
            return False
        if type(when) is not str or len(when) < 4 or not when[:4].isdigit():
            return False
        return when[:10] < self._old_course_before  # ISO dates compare as text; a day's margin for time zones

    def add(self, med: lean.MedicationRequest | lean.MedicationStatement,
                        medications: dict[str, lean.Medication], rec: PatientRecord) -> None:
        """Current medications to rec.medications; on-hold, recently ended and planned ones to rec.medication_history."""
        state = self._state(med)
        if state is None:
            return
        if state == "ended":
            last = _last_known_date(med)
            if last is not None and last < self.lookback_start:
                return  # a course that ended before the lookback is not recent exposure (and is not read further)
        use = self.read(med, medications, rec, state=state)
        if state == "current":
            rec.medications.append(use)
            return
        rec.medication_history.append(use)

    def read(
        self,
        med: lean.MedicationRequest | lean.MedicationStatement,
        medications: dict[str, lean.Medication],
        rec: PatientRecord,
        draft: bool = False,
        selected: bool = False,
        state: str | None = None,
    ) -> MedicationUse:
        concepts: list[lean.CodeableConcept] = []
        form: lean.CodeableConcept | None = None
        if med.medicationCodeableConcept is not None:
            concepts.append(med.medicationCodeableConcept)
        ref = med.medicationReference.reference if med.medicationReference else None
        if ref:
            target = self._resolve_medication(ref, med, medications)
            if target is None:
                label = med.medicationReference.display if med.medicationReference else None
                rec.note_gap("medication-unresolved", f"{type(med).__name__}/{med.id}: medication {ref} could not be read"
                             + (f" (used its display {label!r})" if label else ""))
                if label:
                    concepts.append(lean.CodeableConcept(text=label))
            else:
                if target.code is not None:
                    concepts.append(target.code)
                concepts.extend(i.itemCodeableConcept for i in target.ingredient if i.itemCodeableConcept is not None)
                form = target.form
        elif med.medicationReference is not None and med.medicationReference.display:
            concepts.append(lean.CodeableConcept(text=med.medicationReference.display))
        ingredients = self.resolve_ingredients(concepts)
        dosages = med.dosageInstruction if isinstance(med, lean.MedicationRequest) else med.dosage
        label = next((c.label() for c in concepts if c.label()), "unnamed medication")
        end = None
        if isinstance(med, lean.MedicationRequest):
            start = parse_fhir_datetime(med.authoredOn)
        else:
            start = parse_fhir_datetime(
                (med.effectivePeriod.start if med.effectivePeriod else None) or med.effectiveDateTime or med.dateAsserted
            )
            end = parse_fhir_datetime(med.effectivePeriod.end) if med.effectivePeriod else None
        dose = None
        per_day: float | None = None
        timing_parts: list[str] = []
        for d in dosages:
            for dr in d.doseAndRate:
                if dr.doseQuantity and dr.doseQuantity.value is not None and dose is None:
                    dose = Dose(dr.doseQuantity.value, self.k.unit(dr.doseQuantity.code or dr.doseQuantity.unit) or "")
            if d.text:
                timing_parts.append(d.text)
            if d.timing and d.timing.code:
                timing_parts.append(d.timing.code.label())
            if d.timing and d.timing.repeat:
                every = _interval_text(d.timing.repeat)
                if every:
                    timing_parts.append(every)
                if per_day is None:
                    per_day = _doses_per_day(d.timing.repeat)
        return MedicationUse(
            source=SourceRef.of(med),
            status=med.status,
            label=label,
            ingredients=ingredients,
            start=start,
            route=self._route(dosages, label, form),
            dose=dose,
            timing="; ".join(p for p in timing_parts if p) or None,
            draft=draft,
            selected=selected,
            state="draft" if draft else (state or self._state(med) or med.status),
            end=end,
            intent=med.intent if isinstance(med, lean.MedicationRequest) else None,
            doses_per_day=per_day,
        )

    @staticmethod
    def _resolve_medication(ref: str, med: Any, medications: dict[str, lean.Medication]) -> lean.Medication | None:
        if ref.startswith("#"):
            for raw in med.contained:
                if isinstance(raw, dict) and raw.get("resourceType") == "Medication" and raw.get("id") == ref[1:]:
                    model, _, err = lean.parse_resource(raw)
                    return model if err is None else None  # type: ignore[return-value]
            return None
        mid = medication_id(ref)
        return medications.get(mid) if mid is not None else None

    def resolve_ingredients(self, concepts: list[lean.CodeableConcept]) -> tuple[IngredientMatch, ...]:
        """RxNorm ingredient, then RxNorm clinical drug, then ATC, then (last) names in text/display."""
        key = tuple((c.text, tuple((cd.system, cd.code, cd.display) for cd in c.coding)) for c in concepts)
        found = self._ingredients_seen.get(key)
        if found is None:  # a record repeats the same few medications: resolve each once
            found = self._ingredients_seen[key] = self._resolve_ingredients(concepts)
        return found

    def _resolve_ingredients(self, concepts: list[lean.CodeableConcept]) -> tuple[IngredientMatch, ...]:
        k = self.k
        found: dict[str, IngredientMatch] = {}

        def add(ing: str, how: str, code: str) -> None:
            if ing not in found:
                found[ing] = IngredientMatch(ing, tuple(k.model.ingredients[ing].classes), how, code)  # type: ignore[arg-type]

        for concept in concepts:
            for c in concept.coding:
                if not c.code:
                    continue
                system = (c.system or "").rstrip("/")
                if system == RXNORM:
                    if c.code in k.rxcui_to_ingredient:
                        add(k.rxcui_to_ingredient[c.code], "rxnorm-ingredient", c.code)
                    for ing in k.clinical_drugs.get(c.code, ()):
                        add(ing, "rxnorm-clinical-drug", c.code)
                elif system == ATC or system.endswith("/atc"):
                    code = c.code.upper()
                    if code in k.atc_to_ingredient:
                        add(k.atc_to_ingredient[code], "atc", c.code)
        if not found:
            for concept in concepts:
                texts = [concept.text] + [c.display for c in concept.coding]
                for text in texts:
                    if not text:
                        continue
                    for ing in k.match_names(text):
                        add(ing, "text", text)
            if "magnesium" in found and len([i for i in found if k.model.ingredients[i].classes == ["magnesium-supplement"]]) > 1:
                found.pop("magnesium")
        return tuple(found.values())

    def _route(self, dosages: list[lean.Dosage], label: str, form: lean.CodeableConcept | None) -> str | None:
        """The route: a coded Dosage.route (SNOMED), its text, then the label, dose form and dosage text.
        In free text the local routes (eye, ear, skin, airway, ...) are looked for first: "gentamicin eye drops"
        is ophthalmic even though "drops" could go with anything. A record repeats its orders: each resolved once."""
        key = (tuple((tuple(d.route.codes()), d.route.label()) if d.route is not None else None for d in dosages),
               label, form.label() if form else None, tuple(d.text for d in dosages))
        if key not in self._routes_seen:
            self._routes_seen[key] = self._find_route(dosages, label, form)
        return self._routes_seen[key]

    def _find_route(self, dosages: list[lean.Dosage], label: str, form: lean.CodeableConcept | None) -> str | None:
        routes = self.k.model.routes
        by_code = self.k.route_by_snomed
        patterns = self.k.route_patterns
        for d in dosages:
            if d.route is None:
                continue
            for _, code in d.route.codes():
                if code in by_code:
                    return by_code[code]
            text = d.route.label().lower()
            for name, pattern in patterns.items():
                if pattern.search(text):
                    return name
        texts = [label.lower()] + ([form.label().lower()] if form else []) + [(d.text or "").lower() for d in dosages]
        ordered = [n for n, r in routes.items() if not r.systemic] + [n for n, r in routes.items() if r.systemic]
        for text in texts:
            for name in ordered:
                if name in patterns and patterns[name].search(text):
                    return name
        return None


_HOURS_PER_UNIT = {"h": 1.0, "d": 24.0, "wk": 168.0}


def _last_known_date(med: lean.MedicationRequest | lean.MedicationStatement) -> datetime | None:
    """A course's last known date: a statement's effectivePeriod.end, else its start; an order's authoredOn.
    rules/medications.last_known_date says the same of a MedicationUse; this one decides before a course is read."""
    if isinstance(med, lean.MedicationRequest):
        return parse_fhir_datetime(med.authoredOn)
    period = med.effectivePeriod
    return parse_fhir_datetime((period.end if period else None) or (period.start if period else None)
                               or med.effectiveDateTime or med.dateAsserted)


def _hours_between_doses(repeat: lean.TimingRepeat) -> float | None:
    """Timing.repeat (frequency per period) as hours between administrations; None when it does not say.
    (rules/doses._hours_between reads the dosage text instead, including the 'every N hours' _interval_text writes.)"""
    hours = _HOURS_PER_UNIT.get(repeat.periodUnit or "")
    if hours is None or not repeat.period or repeat.period <= 0:
        return None
    frequency = repeat.frequency or 1
    if frequency <= 0:
        return None
    return repeat.period * hours / frequency


def _doses_per_day(repeat: lean.TimingRepeat) -> float | None:
    """Timing.repeat as administrations per day; None when it does not say."""
    interval = _hours_between_doses(repeat)
    return None if interval is None else 24.0 / interval


def _interval_text(repeat: lean.TimingRepeat) -> str | None:
    """Timing.repeat as 'every N hours', the form the dose rules read."""
    interval = _hours_between_doses(repeat)
    return None if interval is None else f"every {interval:g} hours"
