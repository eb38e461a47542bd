"""Helpers shared by rules: low/high against the Observation's own range or the knowledge default."""
from __future__ import annotations

from ..record.model import LabResult
from .base import RuleContext

_LOW_CODES = {"L", "LL", "LU", "<"}


def low_limit(ctx: RuleContext, r: LabResult, default_key: str) -> tuple[float, str]:
    """The lower limit used for ``r`` and where it came from (the lab's range wins)."""
    if r.ref_low is not None:
        return r.ref_low, "the lab's reference range"
    t = ctx.knowledge.threshold(default_key)
    return float(t.value), f"default {t.value} {t.unit} ({t.source})"


def is_low(ctx: RuleContext, r: LabResult, default_key: str) -> bool:
    limit, _ = low_limit(ctx, r, default_key)
    return r.value < limit


def is_high(ctx: RuleContext, r: LabResult, default_key: str) -> bool:
    if r.ref_high is not None:
        return r.value > r.ref_high
    return r.value > ctx.threshold(default_key)


def magnesium_is_low(ctx: RuleContext) -> LabResult | None:
    """The latest magnesium if it is below range, else None."""
    latest = ctx.record.latest("magnesium")
    if latest is not None and is_low(ctx, latest, "magnesium_low"):
        return latest
    return None
