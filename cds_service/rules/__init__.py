"""The rule registry: every rule the service evaluates, with its topic code (= rule id).

Patient-level rules run on patient-view, and on order hooks only when ``relevant_to_orders`` says the
drafted orders in scope (order-select: selected; order-sign: all) make them relevant; each rule's
docstring gives its choice. Order-level rules run on order hooks only.
"""
from __future__ import annotations

from .base import Finding, Rule, RuleContext
from .common import ELECTROLYTE_CLASSES
from .drugs import magnesium_monitoring_gap, magnesium_wasting_drug
from .femg import femg_extrarenal_loss, femg_needed, femg_renal_wasting
from .hypermagnesemia import hypermagnesemia
from .hypomagnesemia import hypomagnesemia
from .medications import drafted
from .orders import (
    order_iv_magnesium,
    order_magnesium_renal,
    order_potassium_without_magnesium,
    order_vitamin_d_analogue,
    order_wasting_drug,
)
from .refractory import refractory_hypocalcemia, refractory_hypokalemia, refractory_hypomagnesemia
from .renal import renal_replacement_caution

_MG_PICTURE = drafted(*ELECTROLYTE_CLASSES, "wasting")

RULES: tuple[Rule, ...] = (
    # a low magnesium (even one too old to treat on) owns "measure magnesium": the monitoring-gap card would repeat it
    Rule("hypomagnesemia", "Low magnesium", "patient", hypomagnesemia, relevant_to_orders=_MG_PICTURE,
         suppresses=("magnesium-monitoring-gap",)),
    Rule("hypermagnesemia", "High magnesium", "patient", hypermagnesemia,
         relevant_to_orders=drafted("magnesium-supplement")),
    Rule("refractory-hypomagnesemia", "Refractory low magnesium: stepwise pathway", "patient", refractory_hypomagnesemia,
         relevant_to_orders=_MG_PICTURE, suppresses=("hypomagnesemia",)),
    Rule("magnesium-wasting-drug", "Magnesium-wasting drug while magnesium is low", "patient", magnesium_wasting_drug,
         relevant_to_orders=drafted("magnesium-supplement", "potassium-supplement", "wasting")),
    Rule("magnesium-monitoring-gap", "No magnesium check on a wasting drug", "patient", magnesium_monitoring_gap,
         relevant_to_orders=drafted("magnesium-supplement", "potassium-supplement", "wasting")),
    Rule("femg-renal-wasting", "FEMg: renal magnesium wasting", "patient", femg_renal_wasting,
         relevant_to_orders=drafted("magnesium-supplement")),
    Rule("femg-extrarenal-loss", "FEMg: extrarenal magnesium loss", "patient", femg_extrarenal_loss,
         relevant_to_orders=drafted("magnesium-supplement")),
    Rule("femg-needed", "Measure FEMg", "patient", femg_needed, relevant_to_orders=drafted("magnesium-supplement")),
    Rule("refractory-hypokalemia", "Refractory low potassium: correct magnesium first", "patient", refractory_hypokalemia,
         relevant_to_orders=drafted("potassium-supplement", "magnesium-supplement")),
    Rule("refractory-hypocalcemia", "Refractory low calcium: correct magnesium first", "patient", refractory_hypocalcemia,
         relevant_to_orders=drafted("calcium-supplement", "vitamin-d-analogue", "magnesium-supplement")),
    Rule("renal-replacement-caution", "Kidney function before magnesium replacement", "patient", renal_replacement_caution,
         relevant_to_orders=drafted("magnesium-supplement")),
    Rule("order-wasting-drug", "Drafted magnesium-wasting drug", "order", order_wasting_drug),
    Rule("order-potassium-without-magnesium", "Drafted potassium without magnesium", "order", order_potassium_without_magnesium),
    # the drafted-magnesium ceiling card carries the kidney assessment, the ceiling and the toxicity watch: on order
    # hooks it is the one kidney card (one problem, one card)
    Rule("order-magnesium-renal", "Drafted magnesium with low creatinine clearance", "order", order_magnesium_renal,
         suppresses=("renal-replacement-caution",)),
    Rule("order-iv-magnesium", "Drafted IV magnesium sulfate", "order", order_iv_magnesium),
    Rule("order-vitamin-d-analogue", "Drafted alfacalcidol or calcitriol", "order", order_vitamin_d_analogue),
)

RULES_BY_ID = {r.id: r for r in RULES}

__all__ = ["RULES", "RULES_BY_ID", "Finding", "Rule", "RuleContext"]
