"""Magnesium replacement regimens, written once: the text cards quote and the draft MedicationRequest a
suggestion creates (structured dose and timing, not only text).

Every regimen is adult guidance: for a child (under knowledge `adult_age_years`) there is none, and cards say
that dosing by weight from a paediatric reference is needed. With the call's kidney assessment below the
guidance's cut-off, the IV regimen is reduced to the loading dose with a repeat level before any further dose,
and carries the label's 48-hour ceiling, so no suggestion contradicts the kidney card.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..knowledge import ATC, RXNORM
from .base import RuleContext

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ROUTE_IV = {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}
ROUTE_ORAL = {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]}


@dataclass(frozen=True)
class Regimen:
    label: str  # short, for a suggestion label
    text: str  # the regimen as cards quote it
    resource: dict[str, Any]  # a draft MedicationRequest with structured dosage


def paediatric_text(ctx: RuleContext) -> str:
    return (f"Child (age {ctx.age}): the guidance's doses are for adults and are not shown; dose magnesium by weight "
            "from a paediatric reference, with paediatric pharmacy or nephrology advice.")


def renal_ceiling_text(ctx: RuleContext) -> str:
    t = ctx.threshold
    return (f"at most {t('renal_mgso4_max_g_per_48h'):g} g magnesium sulfate per 48 h "
            f"(≈ {t('renal_mgso4_max_g_per_48h') * t('mgso4_mmol_per_g'):.0f} mmol Mg, all magnesium orders together), "
            "with frequent serum magnesium levels")


def _loading_text(ctx: RuleContext, grams: str) -> str:
    """The IV loading step as cards and draft dosages write it: '1-2 g IV over 15 min'."""
    return f"{grams} g IV over {ctx.threshold('iv_mgso4_loading_minutes'):g} min"


def _infusion_text(ctx: RuleContext, grams: str) -> str:
    """The IV infusion step that follows the loading dose: '4-5 g in 250 mL over 3 h'."""
    t = ctx.threshold
    return f"{grams} g in {t('iv_mgso4_infusion_ml'):g} mL over {t('iv_mgso4_infusion_hours'):g} h"


def iv_regimen_text(ctx: RuleContext) -> str | None:
    """The IV regimen for severe symptomatic hypomagnesemia, reduced below the kidney cut-off; None for a child."""
    if ctx.child:
        return None
    t = ctx.threshold
    loading = "magnesium sulfate " + _loading_text(ctx, f"{t('iv_mgso4_loading_min_g'):g}-{t('iv_mgso4_loading_max_g'):g}")
    if ctx.kidney.below:
        return (f"{loading}, then a repeat serum magnesium before any further dose; "
                f"{renal_ceiling_text(ctx)} (kidney function below {ctx.kidney.limit:g} mL/min)")
    return f"{loading}, then " + _infusion_text(ctx, f"{t('iv_mgso4_infusion_min_g'):g}-{t('iv_mgso4_infusion_max_g'):g}")


def label_iv_maximum_text(ctx: RuleContext) -> str:
    """The 50 % label's largest dose for severe hypomagnesemia (quoted beside the guidance's regimen)."""
    return f"The label allows up to {ctx.threshold('label_mgso4_max_g_per_litre'):g} g (about 40 mEq) in 1 L over 3 h"


def _patient(ctx: RuleContext) -> dict[str, str]:
    return {"reference": f"Patient/{ctx.record.patient_id}"}


def _grams(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "g", "system": UCUM, "code": "g"}


def iv_regimen(ctx: RuleContext) -> Regimen | None:
    """Draft IV magnesium sulfate: loading dose once (and, with kidney function not below the cut-off, the infusion)."""
    text = iv_regimen_text(ctx)
    if text is None:
        return None
    t = ctx.threshold
    dosages: list[dict[str, Any]] = [{
        "sequence": 1,
        "text": _loading_text(ctx, f"{t('iv_mgso4_loading_min_g'):g}"),
        "timing": {"repeat": {"count": 1, "duration": t("iv_mgso4_loading_minutes"), "durationUnit": "min"}},
        "route": ROUTE_IV,
        "doseAndRate": [{"doseQuantity": _grams(t("iv_mgso4_loading_min_g"))}],
    }]
    if not ctx.kidney.below:
        dosages.append({
            "sequence": 2,
            "text": "then " + _infusion_text(ctx, f"{t('iv_mgso4_infusion_min_g'):g}"),
            "timing": {"repeat": {"count": 1, "duration": t("iv_mgso4_infusion_hours"), "durationUnit": "h"}},
            "route": ROUTE_IV,
            "doseAndRate": [{"doseQuantity": _grams(t("iv_mgso4_infusion_min_g"))}],
        })
    else:
        dosages[0]["text"] += f"; repeat serum magnesium before any further dose; {renal_ceiling_text(ctx)}"
        dosages[0]["maxDosePerPeriod"] = {
            "numerator": _grams(t("renal_mgso4_max_g_per_48h")),
            "denominator": {"value": float(ctx.policy("magnesium_ceiling_window_hours")), "unit": "h", "system": UCUM,
                            "code": "h"}}
    resource = {
        "resourceType": "MedicationRequest", "status": "draft", "intent": "proposal", "subject": _patient(ctx),
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6585", "display": "magnesium sulfate"}],
                                      "text": "Magnesium sulfate injection"},
        "dosageInstruction": dosages,
    }
    return Regimen(f"Magnesium sulfate IV: {text}", text, resource)


def oral_regimen(ctx: RuleContext) -> Regimen | None:
    """Draft oral magnesium oxide at the guidance's starting dose, once a day at bedtime; None for a child."""
    if ctx.child:
        return None
    lo = ctx.threshold("oral_mg_min_mmol_per_day")
    mgo = ctx.threshold("magnesium_oxide_molar_mass")
    text = f"{lo:g} mmol magnesium (about {lo * mgo:.0f} mg magnesium oxide) by mouth once a day at bedtime"
    if ctx.kidney.below:
        text += f"; kidney function below {ctx.kidney.limit:g} mL/min: {renal_ceiling_text(ctx)}"
    resource = {
        "resourceType": "MedicationRequest", "status": "draft", "intent": "proposal", "subject": _patient(ctx),
        "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "A12CC10", "display": "magnesium oxide"}],
                                      "text": "Magnesium oxide"},
        "dosageInstruction": [{
            "text": text,
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["HS"]}},
            "route": ROUTE_ORAL,
            "doseAndRate": [{"doseQuantity": {"value": lo, "unit": "mmol", "system": UCUM, "code": "mmol"}}],
        }],
    }
    return Regimen(f"Oral magnesium oxide: {text}", text, resource)
