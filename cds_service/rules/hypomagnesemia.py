"""Low magnesium (patient level)."""
from __future__ import annotations

from .base import Finding, RuleContext, lab_fact_line
from .common import low_limit, magnesium_is_low


def hypomagnesemia(ctx: RuleContext) -> Finding | None:
    """Latest serum magnesium below range; critical below the severe threshold (guidance: < 1.2 mg/dL).

    Source: guidance step 3 (severe < 1.2 mg/dL); lab reference range or 1.8 mg/dL default.
    """
    r = magnesium_is_low(ctx)
    if r is None:
        return None
    limit, limit_source = low_limit(ctx, r, "magnesium_low")
    severe = ctx.threshold("magnesium_severe")
    critical = r.value < severe
    indicator = "critical" if critical else "warning"
    summary = f"{'Severe h' if critical else 'H'}ypomagnesemia: magnesium {r.value:.2f} mg/dL on {r.effective.date().isoformat()}"
    lines = [
        f"Latest serum magnesium is below range ({limit:.2f} mg/dL, {limit_source}).",
        "",
        lab_fact_line(r, "magnesium"),
    ]
    if critical:
        lines += [
            "",
            f"Below {severe} mg/dL is severe hypomagnesemia: if symptomatic, magnesium sulfate 1-2 g IV over 15 min, "
            "then 4-5 g in 250 mL over 3 h, after checking kidney function.",
        ]
    return Finding(rule="hypomagnesemia", indicator=indicator, summary=summary, detail="\n".join(lines), facts=(r.to_fact(),))
