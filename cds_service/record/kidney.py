"""One kidney-function assessment per call, shared by every rule (no two cards disagree about the kidneys).

The guidance's cut-off (creatinine clearance below 20 mL/min: no aggressive magnesium replacement) is in
mL/min, not indexed to body surface. The evidence is read in a documented order; the first step that
allows a conclusion decides:

1. a measured creatinine clearance (LOINC 2164-2);
2. Cockcroft-Gault (adults): with no recorded weight it is bounded between a light and a heavy adult, with
   an unknown sex both factors are computed; it decides only when the whole range is on one side;
3. an eGFR (the lab's, else CKD-EPI 2021 from the creatinine for adults, bedside Schwartz for children),
   de-indexed with the body surface area, or bounded between a small and a large one when weight or height
   is missing;
4. a coded kidney failure or dependence on dialysis (knowledge `kidney_failure`): below the cut-off.

A recorded kidney failure or dialysis code also overrides an estimate that says otherwise (creatinine-based
estimates do not hold on dialysis): the assessment says so. Children (under knowledge `adult_age_years`)
never get Cockcroft-Gault or CKD-EPI: only a measured clearance, bedside Schwartz (needs height) or codes.
"Unknown" only when nothing allows a conclusion, with what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ..knowledge import Knowledge
from .derived import bsa_mosteller, ckd_epi_2021, cockcroft_gault
from .model import ConditionFact, LabResult, PatientRecord

Status = Literal["below", "not-below", "unknown"]


@dataclass(frozen=True)
class Estimate:
    """A kidney-function value (or range) with how it was obtained and from what."""

    method: str  # measured-clearance | cockcroft-gault | egfr-reported | egfr-ckd-epi | bedside-schwartz | coded
    low: float
    high: float
    unit: str  # "mL/min" (clearance) or "mL/min/1.73 m²" (indexed, children only)
    formula: str
    inputs: tuple[LabResult, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        return abs(self.high - self.low) < 1e-9

    def side(self, limit: float) -> Status:
        if self.high < limit:
            return "below"
        if self.low >= limit:
            return "not-below"
        return "unknown"

    def to_fact(self) -> dict[str, Any]:
        return {"kind": "derived", "name": "kidney-function", "method": self.method, "low": round(self.low, 3),
                "high": round(self.high, 3), "unit": self.unit, "formula": self.formula,
                "inputs": [i.to_fact() for i in self.inputs], "notes": list(self.notes)}


@dataclass(frozen=True)
class KidneyFunction:
    """The call's kidney assessment against the guidance's cut-off (``limit`` mL/min)."""

    status: Status
    limit: float
    estimate: Estimate | None  # what decided (None: unknown, or decided by a code alone)
    indexed_egfr: Estimate | None  # for rules that stage CKD by indexed eGFR (FEMg interpretation)
    conditions: tuple[ConditionFact, ...] = ()  # recorded kidney failure / dialysis
    tried: tuple[Estimate, ...] = ()  # estimates that did not decide (ranges across the cut-off)
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    child: bool = False

    @property
    def below(self) -> bool:
        return self.status == "below"

    def facts(self) -> tuple[dict[str, Any], ...]:
        out: list[dict[str, Any]] = [{"kind": "kidney-assessment", "status": self.status, "limit": self.limit,
                                      "method": self.estimate.method if self.estimate else
                                      ("coded" if self.conditions else None), "notes": list(self.notes),
                                      "missing": list(self.missing)}]
        if self.estimate is not None:
            out.append(self.estimate.to_fact())
        out += [c.to_fact() for c in self.conditions]
        return tuple(out)


def _recent(r: LabResult | None, now: datetime, days: float) -> LabResult | None:
    if r is None or r.comparator:  # a censored value ("<0.5") is not an exact input to a formula
        return None
    return r if now - r.effective <= timedelta(days=days) else None


def _sex_factors(sex: str | None) -> list[bool]:
    return {"female": [True], "male": [False]}.get(sex or "", [True, False])


def assess_kidney(rec: PatientRecord, k: Knowledge, now: datetime) -> KidneyFunction:
    """The documented order above; pure over the record, the knowledge and ``now``."""
    pol = k.policy
    limit = float(k.threshold("crcl_aggressive_replacement_min").value)
    max_age = float(pol("renal_function_max_age_days"))
    weight_age = float(pol("weight_max_age_days"))
    age = rec.age(now.date())
    child = age is not None and age < float(pol("adult_age_years"))
    scr = _recent(rec.latest("creatinine"), now, max_age)
    weight = _recent(rec.latest("weight"), now, weight_age)
    height = _recent(rec.latest("height"), now, weight_age * 5)
    failure = tuple(c for c in rec.conditions if c.condition == "kidney_failure")
    tried: list[Estimate] = []
    missing: list[str] = []
    notes: list[str] = []
    indexed = _indexed_egfr(rec, k, now, scr, height, age, child)

    def done(est: Estimate | None, status: Status) -> KidneyFunction:
        if failure and status != "below":
            notes.append("a recorded kidney failure or dialysis code overrides the estimate "
                         "(creatinine-based estimates do not hold on dialysis): treated as below "
                         f"{limit:g} mL/min until confirmed")
            status = "below"
        return KidneyFunction(status, limit, est, indexed, failure, tuple(tried), tuple(missing), tuple(notes), child)

    # 1. measured clearance
    measured = _recent(rec.latest("crcl_measured"), now, max_age)
    if measured is not None:
        est = Estimate("measured-clearance", measured.value, measured.value, "mL/min",
                       "measured creatinine clearance (24-h urine)", (measured,))
        return done(est, est.side(limit))

    if child:
        # children: bedside Schwartz (indexed), never the adult equations
        if indexed is not None and indexed.method == "bedside-schwartz":
            notes.append("child: bedside Schwartz eGFR (indexed to 1.73 m²) is compared with the cut-off")
            side = indexed.side(limit)
            if side != "unknown":
                return done(indexed, side)
            tried.append(indexed)
        else:
            if scr is None:
                missing.append(f"a serum creatinine or measured creatinine clearance in the last {max_age:g} days")
            if height is None:
                missing.append("height (bedside Schwartz equation for children)")
        if failure:
            return done(None, "below")
        return done(None, "unknown")

    # 2. Cockcroft-Gault, exact or bounded
    if scr is not None and age is not None and scr.value > 0:
        weights = [weight.value] if weight is not None else [float(pol("kidney_bound_weight_min_kg")),
                                                             float(pol("kidney_bound_weight_max_kg"))]
        values = [cockcroft_gault(age, w, scr.value, f) for w in weights for f in _sex_factors(rec.sex)]
        parts = [f"(140 - {age}) x {f'{weight.value:.1f} kg' if weight else 'weight'} / (72 x {scr.value:.2f} mg/dL)"]
        if rec.sex not in ("female", "male"):
            parts.append("x 0.85 if female (sex not recorded as male or female: both computed)")
        elif rec.sex == "female":
            parts.append("x 0.85 (female)")
        est_notes = []
        if weight is None:
            est_notes.append(f"no body weight in the last {weight_age:g} days: bounded between "
                             f"{weights[0]:g} and {weights[1]:g} kg")
        est = Estimate("cockcroft-gault", min(values), max(values), "mL/min", "Cockcroft-Gault: " + " ".join(parts),
                       (scr,) + ((weight,) if weight else ()), tuple(est_notes))
        side = est.side(limit)
        if side != "unknown":
            return done(est, side)
        tried.append(est)
    else:
        if scr is None and indexed is None:
            missing.append(f"a serum creatinine, eGFR or measured creatinine clearance in the last {max_age:g} days")
        if age is None and indexed is None:
            missing.append("date of birth")

    # 3. eGFR (reported, else CKD-EPI from the creatinine), de-indexed
    if indexed is not None:
        if weight is not None and height is not None:
            bsa = bsa_mosteller(height.value, weight.value)
            lo, hi, bsa_text = bsa, bsa, f"BSA {bsa:.2f} m² (Mosteller, {height.value:.0f} cm, {weight.value:.1f} kg)"
            extra: tuple[LabResult, ...] = (weight, height)
        else:
            lo, hi = float(pol("kidney_bound_bsa_min_m2")), float(pol("kidney_bound_bsa_max_m2"))
            bsa_text = f"BSA between {lo:g} and {hi:g} m² (weight or height not recorded)"
            extra = ()
        est = Estimate(indexed.method, indexed.low * lo / 1.73, indexed.high * hi / 1.73, "mL/min",
                       f"de-indexed eGFR: {_range(indexed.low, indexed.high, 0)} mL/min/1.73 m² x {bsa_text} / 1.73",
                       indexed.inputs + extra, indexed.notes + ("estimated from an eGFR, not Cockcroft-Gault",))
        side = est.side(limit)
        if side != "unknown":
            return done(est, side)
        tried.append(est)

    # 4. coded kidney failure / dialysis
    if failure:
        return done(None, "below")
    if tried and not missing:
        missing.append("a body weight or a measured creatinine clearance to narrow the estimate")
    return done(tried[0] if tried else None, "unknown")


def _range(lo: float, hi: float, digits: int) -> str:
    return f"{lo:.{digits}f}" if abs(hi - lo) < 10 ** -digits else f"{lo:.{digits}f}-{hi:.{digits}f}"


def _indexed_egfr(rec: PatientRecord, k: Knowledge, now: datetime, scr: LabResult | None, height: LabResult | None,
                  age: int | None, child: bool) -> Estimate | None:
    """Indexed eGFR (mL/min/1.73 m²): children bedside Schwartz; adults the lab's eGFR, else CKD-EPI 2021."""
    unit = "mL/min/1.73 m²"
    if child:
        if scr is None or height is None or scr.value <= 0:
            return None
        kk = float(k.threshold("schwartz_k").value)
        v = kk * height.value / scr.value
        return Estimate("bedside-schwartz", v, v, unit,
                        f"bedside Schwartz: {kk:g} x {height.value:.0f} cm / {scr.value:.2f} mg/dL", (scr, height))
    reported = _recent(rec.latest("egfr"), now, float(k.policy("renal_function_max_age_days")))
    if reported is not None:
        return Estimate("egfr-reported", reported.value, reported.value, unit, "eGFR as reported by the lab", (reported,))
    if scr is None or age is None or scr.value <= 0:
        return None
    values = [ckd_epi_2021(age, scr.value, f) for f in _sex_factors(rec.sex)]
    sex = rec.sex if rec.sex in ("female", "male") else "sex not recorded: both computed"
    return Estimate("egfr-ckd-epi", min(values), max(values), unit,
                    f"CKD-EPI 2021: creatinine {scr.value:.2f} mg/dL, age {age}, {sex}", (scr,))
