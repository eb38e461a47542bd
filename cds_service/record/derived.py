"""Derived values with their inputs: creatinine clearance, eGFR, FEMg, urine Ca/Cr, BSA.

Each returns a ``Derived`` (value, unit, formula, the facts used) or None with nothing guessed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .model import LabResult, PatientRecord


@dataclass(frozen=True)
class Derived:
    name: str
    value: float
    unit: str
    formula: str
    inputs: tuple[LabResult, ...] = ()
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_fact(self) -> dict[str, Any]:
        return {
            "kind": "derived",
            "name": self.name,
            "value": round(self.value, 4),
            "unit": self.unit,
            "formula": self.formula,
            "inputs": [i.to_fact() for i in self.inputs],
            "notes": list(self.notes),
            **({"extra": self.extra} if self.extra else {}),
        }


def cockcroft_gault(age: int, weight_kg: float, scr_mg_dl: float, female: bool) -> float:
    """CrCl (mL/min) = (140 - age) x weight / (72 x SCr), x 0.85 if female. Cockcroft & Gault 1976."""
    crcl = (140 - age) * weight_kg / (72.0 * scr_mg_dl)
    return crcl * 0.85 if female else crcl


def ckd_epi_2021(age: int, scr_mg_dl: float, female: bool) -> float:
    """eGFR (mL/min/1.73 m2), CKD-EPI 2021 creatinine equation without race (Inker, NEJM 2021)."""
    kappa = 0.7 if female else 0.9
    alpha = -0.241 if female else -0.302
    ratio = scr_mg_dl / kappa
    egfr = 142.0 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.200 * 0.9938**age
    return egfr * 1.012 if female else egfr


def bsa_mosteller(height_cm: float, weight_kg: float) -> float:
    """Body surface area (m2) = sqrt(height cm x weight kg / 3600) (Mosteller 1987)."""
    return math.sqrt(height_cm * weight_kg / 3600.0)


def femg_percent(u_mg: float, p_cr: float, p_mg: float, u_cr: float) -> float:
    """FEMg (%) = (U_Mg x P_Cr) / (0.7 x P_Mg x U_Cr) x 100, each analyte's urine and plasma in the same unit."""
    return (u_mg * p_cr) / (0.7 * p_mg * u_cr) * 100.0


def _female(rec: PatientRecord) -> bool | None:
    if rec.sex == "female":
        return True
    if rec.sex == "male":
        return False
    return None


def _recent(r: LabResult | None, now: datetime, max_days: float) -> LabResult | None:
    return r if r is not None and now - r.effective <= timedelta(days=max_days) else None


def creatinine_clearance(rec: PatientRecord, now: datetime, max_age_days: float,
                         weight_max_age_days: float) -> tuple[Derived | None, list[str]]:
    """Cockcroft-Gault from the latest creatinine and weight, or a de-indexed eGFR; (value, what is missing)."""
    missing: list[str] = []
    scr = _recent(rec.latest("creatinine"), now, max_age_days)
    weight = _recent(rec.latest("weight"), now, weight_max_age_days)
    age = rec.age(now.date())
    female = _female(rec)
    if scr is None:
        missing.append(f"serum creatinine in the last {int(max_age_days)} days")
    if weight is None:
        missing.append(f"body weight in the last {int(weight_max_age_days)} days")
    if age is None:
        missing.append("date of birth")
    if female is None:
        missing.append("administrative sex (male/female)")
    if not missing and scr is not None and weight is not None and age is not None and female is not None and scr.value > 0:
        value = cockcroft_gault(age, weight.value, scr.value, female)
        return Derived(
            "creatinine-clearance",
            value,
            "mL/min",
            f"Cockcroft-Gault: (140 - {age}) x {weight.value:.1f} kg / (72 x {scr.value:.2f} mg/dL)"
            + (" x 0.85 (female)" if female else ""),
            (scr, weight),
            extra={"method": "cockcroft-gault", "age": age, "sex": rec.sex},
        ), []
    egfr = _recent(rec.latest("egfr"), now, max_age_days)
    height = _recent(rec.latest("height"), now, weight_max_age_days * 5)
    if egfr is not None and weight is not None and height is not None:
        bsa = bsa_mosteller(height.value, weight.value)
        value = egfr.value * bsa / 1.73
        return Derived(
            "creatinine-clearance",
            value,
            "mL/min",
            f"de-indexed eGFR: {egfr.value:.0f} mL/min/1.73 m2 x BSA {bsa:.2f} m2 / 1.73 (Mosteller BSA)",
            (egfr, weight, height),
            notes=("estimated from a reported eGFR, not Cockcroft-Gault",),
            extra={"method": "de-indexed-egfr", "bsa": round(bsa, 3)},
        ), []
    return None, missing


def censored_bound(effects: list[tuple[LabResult, int]]) -> str | None:
    """What censored inputs make of a result that rises (+1) or falls (-1) with each input.

    None: every input is exact. '<' / '<=' (or '>' / '>='): the computed number is an upper (lower) bound,
    non-strict only when every censored input is. 'indeterminate': censored inputs push both ways."""
    directions: set[int] = set()
    strict = False
    for r, sign in effects:
        if r.comparator is None:
            continue
        directions.add((-1 if r.comparator in ("<", "<=") else 1) * sign)
        strict = strict or r.comparator in ("<", ">")
    if not directions:
        return None
    if len(directions) > 1:
        return "indeterminate"
    return ("<" if directions == {-1} else ">") + ("" if strict else "=")


def _shown(r: LabResult, digits: int) -> str:
    return f"{r.comparator or ''}{r.value:.{digits}f}"


def _pair(a: LabResult | None, b: LabResult | None, max_hours: float) -> bool:
    return a is not None and b is not None and abs((a.effective - b.effective).total_seconds()) <= max_hours * 3600


def femg(rec: PatientRecord, max_pair_hours: float) -> tuple[Derived | None, list[str]]:
    """FEMg from the newest urine Mg/creatinine pair and serum Mg/creatinine within ``max_pair_hours``."""
    missing: list[str] = []
    u_mg = rec.latest("urine_magnesium")
    if u_mg is None:
        missing.append("spot urine magnesium")
    u_cr = next((r for r in rec.results("urine_creatinine") if _pair(r, u_mg, max_pair_hours)), None) if u_mg else None
    if u_mg is not None and u_cr is None:
        missing.append("urine creatinine from the same sample/day")
    if u_mg is None and rec.latest("urine_creatinine") is None:
        missing.append("spot urine creatinine")
    p_mg = next((r for r in rec.results("magnesium") if _pair(r, u_mg, max_pair_hours)), None) if u_mg else None
    p_cr = next((r for r in rec.results("creatinine") if _pair(r, u_mg, max_pair_hours)), None) if u_mg else None
    if u_mg is not None and p_mg is None:
        missing.append("serum magnesium on the same day as the urine sample")
    if u_mg is not None and p_cr is None:
        missing.append("serum creatinine on the same day as the urine sample")
    if missing or not (u_mg and u_cr and p_mg and p_cr) or p_mg.value <= 0 or u_cr.value <= 0:
        if not missing:
            missing.append("non-zero serum magnesium and urine creatinine")
        return None, missing
    # all four in canonical mg/dL: same units per analyte, as the formula requires
    value = femg_percent(u_mg.value, p_cr.value, p_mg.value, u_cr.value)
    bound = censored_bound([(u_mg, 1), (p_cr, 1), (p_mg, -1), (u_cr, -1)])
    formula = (
        f"FEMg = (U_Mg {_shown(u_mg, 2)} x P_Cr {_shown(p_cr, 2)}) / (0.7 x P_Mg {_shown(p_mg, 2)} x U_Cr {_shown(u_cr, 1)}) x 100"
        " (all mg/dL)"
    )
    notes: tuple[str, ...] = ()
    if bound == "indeterminate":
        notes = ("censored inputs push FEMg both ways: no bound, FEMg is indeterminate",)
    elif bound is not None:
        notes = (f"a censored input makes this a bound: FEMg {bound} {value:.2f} %",)
    return Derived("femg", value, "%", formula, (u_mg, p_cr, p_mg, u_cr), notes=notes,
                   extra={"bound": bound} if bound else {}), []


def urine_ca_cr_ratio(rec: PatientRecord, near: LabResult | None, max_pair_hours: float) -> Derived | None:
    """Urine calcium/creatinine (mg/mg): reported ratio, or computed from a same-sample pair."""
    reported = rec.latest("urine_ca_cr_ratio")
    if reported is not None and (near is None or _pair(reported, near, max_pair_hours)):
        bound = censored_bound([(reported, 1)])
        return Derived("urine-ca-cr", reported.value, "mg/mg", "reported urine calcium/creatinine ratio", (reported,),
                       extra={"bound": bound} if bound else {})
    u_ca = rec.latest("urine_calcium")
    if u_ca is None or (near is not None and not _pair(u_ca, near, max_pair_hours)):
        return None
    u_cr = next((r for r in rec.results("urine_creatinine") if _pair(r, u_ca, max_pair_hours)), None)
    if u_cr is None or u_cr.value <= 0:
        return None
    value = u_ca.value / u_cr.value
    bound = censored_bound([(u_ca, 1), (u_cr, -1)])
    return Derived("urine-ca-cr", value, "mg/mg", f"urine Ca {_shown(u_ca, 2)} mg/dL / urine creatinine {_shown(u_cr, 1)} mg/dL",
                   (u_ca, u_cr), extra={"bound": bound} if bound else {})


def corrected_calcium(total: LabResult, albumin: LabResult, factor: float, reference_g_dl: float) -> Derived:
    """Albumin-corrected calcium (mg/dL) = total calcium + factor x (reference albumin - albumin g/dL)."""
    value = total.value + factor * (reference_g_dl - albumin.value)
    bound = censored_bound([(total, 1), (albumin, -1)])
    return Derived(
        "calcium-albumin-corrected", value, "mg/dL",
        f"total calcium {_shown(total, 2)} mg/dL + {factor:g} x ({reference_g_dl:g} - albumin {_shown(albumin, 1)} g/dL)",
        (total, albumin), extra={"bound": bound} if bound else {},
    )
