"""Explicit unit conversion to each analyte's canonical unit.

No library converts magnesium mg/dL to mmol/L: that needs the molar mass, which the knowledge
file gives per analyte (Mg 24.305, Ca 40.08, creatinine 113.12 g/mol). Conversions go through
one base per dimension; mass <-> substance uses the molar mass, substance <-> equivalents the valence.
"""
from __future__ import annotations

from ..knowledge import Analyte

# unit -> (dimension, factor to the dimension's base)
# bases: mass concentration mg/dL; substance concentration mmol/L; equivalents meq/L;
# mass/24h mg/(24.h); substance/24h mmol/(24.h); rate mL/min; indexed rate mL/min/{1.73_m2};
# mass kg; length cm; mass ratio mg/mg; molar ratio mmol/mmol; percent %.
_UNITS: dict[str, tuple[str, float]] = {
    "mg/dL": ("mass_conc", 1.0),
    "mg/L": ("mass_conc", 0.1),
    "g/dL": ("mass_conc", 1000.0),
    "g/L": ("mass_conc", 100.0),
    "mmol/L": ("subst_conc", 1.0),
    "umol/L": ("subst_conc", 0.001),
    "meq/L": ("equiv_conc", 1.0),
    "mg/(24.h)": ("mass_24h", 1.0),
    "g/(24.h)": ("mass_24h", 1000.0),
    "mmol/(24.h)": ("subst_24h", 1.0),
    "mL/min": ("rate", 1.0),
    "mL/min/{1.73_m2}": ("rate_indexed", 1.0),
    "kg": ("mass", 1.0),
    "g": ("mass", 0.001),
    "[lb_av]": ("mass", 0.45359237),
    "cm": ("length", 1.0),
    "m": ("length", 100.0),
    "[in_i]": ("length", 2.54),
    "mg/mg": ("mass_ratio", 1.0),
    "g/g": ("mass_ratio", 1.0),
    "mmol/mmol": ("molar_ratio", 1.0),
    "%": ("percent", 1.0),
}


class UnitError(ValueError):
    """A value whose unit cannot be converted to the analyte's canonical unit."""


def known_unit(unit: str) -> bool:
    return unit in _UNITS


def convert(value: float, unit: str, analyte: Analyte, target: str | None = None) -> float:
    """Convert ``value`` in ``unit`` (already normalised) to ``target`` (default canonical)."""
    target = target or analyte.canonical_unit
    if unit == target:
        return value
    try:
        src_dim, src_f = _UNITS[unit]
        dst_dim, dst_f = _UNITS[target]
    except KeyError as exc:
        raise UnitError(f"unknown unit {exc.args[0]!r} for {analyte.id}") from None
    base = value * src_f
    if src_dim != dst_dim:
        base = _across(base, src_dim, dst_dim, analyte)
    return base / dst_f


def _across(value: float, src: str, dst: str, a: Analyte) -> float:
    m, z = a.molar_mass, a.valence
    # mass concentration (mg/dL) <-> substance (mmol/L): mg/dL * 10 / M = mmol/L
    if {src, dst} <= {"mass_conc", "subst_conc", "equiv_conc"}:
        if m is None and "mass_conc" in (src, dst):
            raise UnitError(f"{a.id}: no molar mass to convert mass to substance concentration")
        if z is None and "equiv_conc" in (src, dst):
            raise UnitError(f"{a.id}: no valence to convert equivalents")
        mmol = {"mass_conc": lambda v: v * 10.0 / m, "subst_conc": lambda v: v, "equiv_conc": lambda v: v / z}[src](value)
        return {"mass_conc": lambda v: v * m / 10.0, "subst_conc": lambda v: v, "equiv_conc": lambda v: v * z}[dst](mmol)
    if {src, dst} == {"mass_24h", "subst_24h"}:
        if m is None:
            raise UnitError(f"{a.id}: no molar mass")
        return value * m if src == "subst_24h" else value / m
    if {src, dst} == {"mass_ratio", "molar_ratio"}:
        f = a.molar_ratio_factor
        if not f:
            raise UnitError(f"{a.id}: no molar ratio factor")
        return value / f if src == "molar_ratio" else value * f
    raise UnitError(f"{a.id}: cannot convert {src} to {dst}")
