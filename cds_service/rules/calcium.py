"""Calcium for the rules: judged on the best measure (recent ionized > albumin-corrected > total), and the
series of that measure for persistence checks."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..record.derived import Derived, censored_bound, corrected_calcium
from ..record.model import LabResult
from .base import RuleContext, fmt_lab
from .common import above, below, high_limit, is_high, is_low, low_limit, recent


@dataclass(frozen=True)
class CalciumStatus:
    """Calcium judged on the best measure: ionized (recent) > albumin-corrected > total. ``basis`` says which."""

    basis: str  # "ionized" | "albumin-corrected" | "reported-corrected" | "total"
    value: float
    unit: str
    bound: str | None  # censored inputs: "<", "<=", ">", ">=" or "indeterminate"
    low: bool
    high: bool
    low_limit: float
    high_limit: float
    inputs: tuple[LabResult, ...]
    corrected: Derived | None = None

    @property
    def label(self) -> str:
        return {"ionized": "ionized calcium", "albumin-corrected": "albumin-corrected calcium",
                "reported-corrected": "albumin-corrected calcium (as reported)", "total": "total calcium"}[self.basis]

    @property
    def shown(self) -> str:
        if self.bound == "indeterminate":
            return f"indeterminate (censored inputs, computed {self.value:.2f} {self.unit})"
        digits = 2
        return f"{self.bound or ''}{self.value:.{digits}f} {self.unit}"

    @property
    def state(self) -> str:
        return "low" if self.low else "high" if self.high else "indeterminate" if self.bound == "indeterminate" else "not low"

    def lines(self, now: datetime | None = None) -> list[str]:
        """Card lines: the measure used (and why), its inputs (with their ages when ``now`` is given)."""
        why = {"ionized": "ionized calcium measured recently: it decides",
               "albumin-corrected": "no recent ionized calcium; total calcium corrected for the albumin measured with it",
               "reported-corrected": "no recent ionized calcium; the lab's albumin-corrected calcium",
               "total": "no recent ionized calcium and no albumin with it: total calcium, uncorrected"}[self.basis]
        out = [f"- judged on **{self.label}: {self.shown}** ({why}; range {self.low_limit:.2f}-{self.high_limit:.2f} {self.unit})"]
        if self.corrected is not None:
            out.append(f"  - = {self.corrected.formula}")
        for r in self.inputs:
            out.append(f"  - {r.analyte.replace('_', ' ')}: {fmt_lab(r, now=now, reference=True)}")
        return out

    def facts(self) -> list[dict[str, Any]]:
        return [self.corrected.to_fact()] if self.corrected is not None else [r.to_fact() for r in self.inputs]


def _near(ctx: RuleContext, analyte: str, at: datetime, hours: float) -> LabResult | None:
    """The result of ``analyte`` closest in time to ``at`` within ``hours``."""
    near = [r for r in ctx.record.results(analyte) if abs((r.effective - at).total_seconds()) <= hours * 3600]
    return min(near, key=lambda r: abs((r.effective - at).total_seconds())) if near else None


def calcium_judged(ctx: RuleContext, total: LabResult) -> CalciumStatus:
    """One total calcium judged on its own: corrected for an albumin measured with it (policy window), else as is."""
    lo, _ = low_limit(ctx, total, "calcium_low")
    hi, _ = high_limit(ctx, total, "calcium_high")
    albumin = _near(ctx, "albumin", total.effective, float(ctx.policy("calcium_albumin_pair_max_hours")))
    if albumin is None or albumin.value <= 0:
        return CalciumStatus("total", total.value, "mg/dL", censored_bound([(total, 1)]), is_low(ctx, total, "calcium_low"),
                             is_high(ctx, total, "calcium_high"), lo, hi, (total,))
    d = corrected_calcium(total, albumin, ctx.threshold("calcium_albumin_correction_factor"),
                          ctx.threshold("calcium_albumin_reference_g_dl"))
    bound = d.extra.get("bound")
    probe = LabResult("calcium", d.value, "mg/dL", d.value, "mg/dL", total.effective, total.code, total.source,
                      comparator=None if bound in (None, "indeterminate") else bound)
    known = bound != "indeterminate"
    return CalciumStatus("albumin-corrected", d.value, "mg/dL", bound, known and below(probe, lo), known and above(probe, hi),
                         lo, hi, (total, albumin), d)


def calcium_from_result(ctx: RuleContext, r: LabResult) -> CalciumStatus:
    """Any calcium result judged by its kind: ionized against the ionized range, the lab's corrected calcium against
    the total range, a total calcium corrected for albumin when one was measured with it."""
    if r.analyte == "calcium_ionized":
        lo, _ = low_limit(ctx, r, "calcium_ionized_low")
        hi, _ = high_limit(ctx, r, "calcium_ionized_high")
        return CalciumStatus("ionized", r.value, r.unit, censored_bound([(r, 1)]), below(r, lo), above(r, hi), lo, hi, (r,))
    if r.analyte == "calcium_corrected":
        lo, _ = low_limit(ctx, r, "calcium_low")
        hi, _ = high_limit(ctx, r, "calcium_high")
        return CalciumStatus("reported-corrected", r.value, r.unit, censored_bound([(r, 1)]), below(r, lo), above(r, hi),
                             lo, hi, (r,))
    return calcium_judged(ctx, r)


def calcium_status(ctx: RuleContext) -> CalciumStatus | None:
    """Calcium now: a recent ionized calcium (policy calcium_recent_days) decides; else the latest total calcium,
    corrected for an albumin measured with it (knowledge formula), else the lab's own corrected calcium when it is
    at least as new, else total calcium. None when no calcium result at all. The card says which (``basis``)."""
    ionized = recent(ctx, "calcium_ionized", "calcium_recent_days")
    if ionized is not None:
        return calcium_from_result(ctx, ionized)
    total, reported = ctx.record.latest("calcium"), ctx.record.latest("calcium_corrected")
    if total is None and reported is None:
        return None
    if total is not None:
        judged = calcium_judged(ctx, total)
        if judged.basis == "albumin-corrected" or reported is None or reported.effective < total.effective:
            return judged
    return calcium_from_result(ctx, reported)  # type: ignore[arg-type]


def calcium_series(ctx: RuleContext) -> tuple[str, list[LabResult]]:
    """The calcium results (newest first) of the measure ``calcium_status`` is based on, for persistence checks:
    ionized results when a recent ionized calcium decides, else total calcium (each judged with its own albumin)
    and the lab's corrected calcium together."""
    status = calcium_status(ctx)
    if status is not None and status.basis == "ionized":
        return "ionized", ctx.record.results("calcium_ionized")
    merged = ctx.record.results("calcium") + ctx.record.results("calcium_corrected")
    return "total-or-corrected", sorted(merged, key=lambda r: r.effective, reverse=True)
