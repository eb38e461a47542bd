"""Drafted magnesium doses in explicit units: magnesium sulfate grams, magnesium mmol, and doses per 48 h.

Conversions (knowledge thresholds, IUPAC molar masses): magnesium sulfate heptahydrate 1 g = 4.06 mmol
= 8.1 mEq Mg; magnesium oxide 40.3 mg = 1 mmol Mg. Nothing is guessed: an unknown unit or frequency
gives None and the card says so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..knowledge import Knowledge
from ..record.model import Dose, MedicationUse

_MASS_G = {"g": 1.0, "gm": 1.0, "gram": 1.0, "grams": 1.0, "mg": 0.001, "milligram": 0.001, "milligrams": 0.001}
_MMOL = {"mmol": 1.0, "millimole": 1.0, "millimoles": 1.0}
_MEQ = {"meq": 1.0, "milliequivalent": 1.0, "milliequivalents": 1.0}
_UG = {"ug": 1.0, "mcg": 1.0, "µg": 1.0, "μg": 1.0, "microgram": 1.0, "micrograms": 1.0, "mg": 1000.0}


@dataclass(frozen=True)
class MagnesiumDose:
    """One administration of a drafted magnesium order, in magnesium mmol (and sulfate grams when sulfate)."""

    mmol: float
    sulfate_g: float | None  # only for magnesium sulfate
    explanation: str  # the conversion written out


def _unit(dose: Dose) -> str:
    return dose.unit.strip().lower().replace("{", "").replace("}", "")


_TEXT_DOSE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(mg|g|gm|grams?|mmol|meq)\b", re.IGNORECASE)


def dose_from_text(text: str | None) -> Dose | None:
    """A dose written in the dosage text ('800 mg at bedtime'), used only when no structured dose exists; one
    amount only (two amounts are ambiguous and give None)."""
    found = _TEXT_DOSE.findall(text or "")
    if len(found) != 1:
        return None
    value, unit = found[0]
    return Dose(float(value), unit.lower())


def magnesium_dose(m: MedicationUse, k: Knowledge) -> MagnesiumDose | None:
    """Convert the dose to mmol of magnesium (structured dose, else a single amount in the dosage text); None
    when the unit or salt does not allow it."""
    dose = m.dose
    from_text = False
    if dose is None:
        dose, from_text = dose_from_text(m.timing), True
        if dose is None:
            return None
    d = _magnesium_dose(m, dose, k)
    if d is not None and from_text:
        return MagnesiumDose(d.mmol, d.sulfate_g, d.explanation + f" (dose read from the dosage text '{m.timing}')")
    return d


def _magnesium_dose(m: MedicationUse, dose: Dose, k: Knowledge) -> MagnesiumDose | None:
    unit = _unit(dose)
    v = dose.value
    mmol_per_g = float(k.threshold("mgso4_mmol_per_g").value)
    meq_per_g = float(k.threshold("mgso4_meq_per_g").value)
    sulfate = m.has_ingredient("magnesium sulfate")
    if unit in _MMOL:
        mmol = v * _MMOL[unit]
        g = mmol / mmol_per_g if sulfate else None
        return MagnesiumDose(mmol, g, f"{v:g} mmol Mg"
                             + (f" = {g:.2f} g magnesium sulfate (÷ {mmol_per_g} mmol/g)" if g is not None else ""))
    if unit in _MEQ:
        mmol = v / 2.0  # Mg2+: 2 mEq per mmol
        g = v / meq_per_g if sulfate else None
        return MagnesiumDose(mmol, g, f"{v:g} mEq Mg = {mmol:.2f} mmol (÷ 2, valence 2)"
                             + (f" = {g:.2f} g magnesium sulfate (÷ {meq_per_g} mEq/g)" if g is not None else ""))
    if unit in _MASS_G:
        grams = v * _MASS_G[unit]
        if sulfate:
            mmol = grams * mmol_per_g
            return MagnesiumDose(mmol, grams,
                                 f"{v:g} {dose.unit} magnesium sulfate = {grams:g} g x {mmol_per_g} mmol/g = {mmol:.1f} mmol Mg")
        if m.has_ingredient("magnesium oxide") and len(m.ingredients) == 1:
            molar = float(k.threshold("magnesium_oxide_molar_mass").value)
            mmol = grams * 1000.0 / molar
            return MagnesiumDose(mmol, None, f"{v:g} {dose.unit} magnesium oxide / {molar} mg/mmol = {mmol:.1f} mmol Mg")
    return None


def micrograms(dose: Dose | None) -> float | None:
    if dose is None:
        return None
    f = _UG.get(_unit(dose))
    return None if f is None else dose.value * f


_PER_DAY = [
    (r"\b(q\.?i\.?d|four times (a|per) day|4 ?x ?(daily|a day))\b", 4),
    (r"\b(t\.?i\.?d|three times (a|per) day|3 ?x ?(daily|a day))\b", 3),
    (r"\b(b\.?i\.?d|twice (a |per )?day|twice daily|2 ?x ?(daily|a day))\b", 2),
    (r"\b(once (a |per )?day|once daily|daily|q\.?d|every day|nightly|at night|at bedtime|qhs|nocte)\b", 1),
]


def administrations_per_48h(timing: str | None) -> float | None:
    """How many doses in 48 h the dosage text states (q6h -> 8, bid -> 4, daily -> 2, once/stat -> 1); None if unclear."""
    if not timing:
        return None
    text = timing.lower()
    if re.search(r"\b(once only|single dose|one dose|stat|once)\b", text) and not re.search(r"once (a|per|daily)", text):
        return 1.0
    if re.search(r"\b(per|an|a)\s+(hour|hr|h)\b|/\s*(h|hr|hour)\b|\bhourly\b", text):
        return 48.0  # a continuous infusion written as a dose per hour
    hours = _hours_between(text)
    if hours is not None:
        return 48.0 / hours
    per_day = _per_day_words(text)
    return None if per_day is None else per_day * 2.0


_EVERY_N_HOURS = re.compile(r"\b(?:every|q)\s*(\d+(?:\.\d+)?)\s*(?:h|hr|hrs|hour|hours)\b")


def _hours_between(text: str) -> float | None:
    """'every 6 hours' / 'q8h' in lower-case dosage text: the hours between doses."""
    m = _EVERY_N_HOURS.search(text)
    return float(m.group(1)) if m and float(m.group(1)) > 0 else None


def _per_day_words(text: str) -> int | None:
    """qid/tid/bid/daily (and their words) in lower-case dosage text: doses a day."""
    return next((per_day for pattern, per_day in _PER_DAY if re.search(pattern, text)), None)


@dataclass(frozen=True)
class OrderLoad:
    """One magnesium order's contribution to the 48-h total (None where it could not be computed, and why)."""

    order: MedicationUse
    per_dose: MagnesiumDose | None
    doses_per_48h: float | None
    mmol_per_48h: float | None
    why_not: str | None = None


@dataclass(frozen=True)
class MagnesiumLoad:
    """Every drafted and active magnesium order summed over 48 h, in mmol of magnesium."""

    orders: tuple[OrderLoad, ...]

    @property
    def known_mmol(self) -> float:
        """What can be counted: a lower bound when ``complete`` is False."""
        return sum(o.mmol_per_48h or 0.0 for o in self.orders)

    @property
    def complete(self) -> bool:
        return all(o.mmol_per_48h is not None and o.why_not is None for o in self.orders)


def magnesium_load_48h(orders: list[MedicationUse], k: Knowledge) -> MagnesiumLoad:
    """Sum every order (all routes and salts) in mmol Mg over 48 h: dose converted explicitly, frequency from the
    structured timing (read into the dosage text as 'every N hours') or the dosage text; what cannot be read is
    listed, never guessed (the total is then a lower bound)."""
    loads = []
    for m in orders:
        d = magnesium_dose(m, k)
        n = administrations_per_48h(m.timing)
        if d is None:
            loads.append(OrderLoad(m, None, n, None, "dose not convertible to magnesium (unit or salt)"
                                   if m.dose is not None else "no structured dose"))
        elif n is None:  # at least one dose will be given: counted once, so the total is a lower bound
            loads.append(OrderLoad(m, d, None, d.mmol, "frequency not readable from the dosage: counted as one dose"))
        else:
            loads.append(OrderLoad(m, d, n, d.mmol * n))
    return MagnesiumLoad(tuple(loads))


# ---------------------------------------------------------------------------------------------- daily doses (issue 10 item 4)
_PER_WEEK = [
    (r"\b(every other day|alternate days|on alternate days|q\.?o\.?d|every 48 ?h(ours)?)\b", 3.5),
    (r"\b(three times (a|per) week|thrice weekly|3 ?x ?(weekly|a week|per week)|t\.?i\.?w)\b", 3.0),
    (r"\b(twice (a|per) week|twice weekly|2 ?x ?(weekly|a week|per week))\b", 2.0),
    (r"\b(once (a|per) week|once weekly|weekly|every week)\b", 1.0),
]


def doses_per_day(m: MedicationUse) -> tuple[float | None, str]:
    """Administrations per day and where that came from: the structured Timing.repeat first, then the dosage
    text (qid/tid/bid/daily, every N hours, weekly patterns). (None, why) when neither says."""
    if m.doses_per_day is not None:
        return m.doses_per_day, "structured timing"
    text = (m.timing or "").lower()
    if not text:
        return None, "no timing given"
    for pattern, per_week in _PER_WEEK:
        if re.search(pattern, text):
            return per_week / 7.0, f"dosage text '{m.timing}'"
    hours = _hours_between(text)
    if hours is not None:
        return 24.0 / hours, f"dosage text '{m.timing}'"
    per_day = _per_day_words(text)
    if per_day is not None:
        return float(per_day), f"dosage text '{m.timing}'"
    return None, f"frequency not readable from '{m.timing}'"


@dataclass(frozen=True)
class DailyDose:
    """A drafted vitamin D analogue's dose in micrograms: per administration and per day (dose x frequency)."""

    per_dose_ug: float | None
    per_day_ug: float | None
    explanation: str


def daily_micrograms(m: MedicationUse) -> DailyDose:
    """Daily dose = dose (µg) x administrations per day; the explanation writes the arithmetic out."""
    per_dose = micrograms(m.dose)
    if per_dose is None:
        unit = f" ({m.dose.value:g} {m.dose.unit})" if m.dose is not None else ""
        return DailyDose(None, None, f"dose not readable in micrograms{unit}")
    per_day, how = doses_per_day(m)
    if per_day is None:
        return DailyDose(per_dose, None, f"{per_dose:g} µg per dose; {how}: daily total unknown")
    total = per_dose * per_day
    return DailyDose(per_dose, total, f"{per_dose:g} µg x {per_day:.3g} a day ({how}) = {total:.3g} µg a day")
