"""Server-side SVG charts for the audit pages (no JavaScript): per-rule daily firing and acceptance."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from xml.sax.saxutils import escape, quoteattr

from markupsafe import Markup


@dataclass
class DailySeries:
    rule: str
    days: list[date]
    fired: list[int]  # calls in which the rule produced a card, per day
    accepted: list[int]  # cards accepted (latest feedback), per day of the call
    answered: list[int]  # cards with feedback (accepted + overridden), per day of the call


def rule_chart(series: DailySeries, width: int = 640, height: int = 200) -> Markup:
    """Bars: cards fired per day (left axis). Line + dots: acceptance rate on days with feedback (right axis, 0-100%)."""
    left, right, top, bottom = 40, 44, 16, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(series.days))
    peak = max(series.fired + [1])
    step = plot_w / n
    bar_w = max(1.0, step * 0.7)
    total_fired, total_acc, total_ans = sum(series.fired), sum(series.accepted), sum(series.answered)
    rate = f"{100 * total_acc / total_ans:.0f}% accepted" if total_ans else "no feedback"
    label = f"{series.rule}: {total_fired} card(s) fired over {len(series.days)} day(s), {rate}"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" data-rule={quoteattr(series.rule)} aria-label={quoteattr(label)}>',
           f"<title>{escape(label)}</title>",
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for frac in (0.0, 0.5, 1.0):  # left axis: counts
        y = top + plot_h * (1 - frac)
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#555">{round(peak * frac)}</text>')
        out.append(f'<text x="{width - right + 6}" y="{y + 4:.1f}" font-size="10" fill="#1a7f37">{round(100 * frac)}%</text>')
    points = []
    for i, day in enumerate(series.days):
        x = left + i * step + (step - bar_w) / 2
        h = plot_h * series.fired[i] / peak
        out.append(f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                   f'fill="#3b6fb6" data-day="{day.isoformat()}" data-count="{series.fired[i]}">'
                   f"<title>{day.isoformat()}: {series.fired[i]} fired</title></rect>")
        if series.answered[i]:
            r = series.accepted[i] / series.answered[i]
            points.append((left + i * step + step / 2, top + plot_h * (1 - r), day, r, series.accepted[i], series.answered[i]))
    if points:
        out.append('<polyline class="acceptance" fill="none" stroke="#1a7f37" stroke-width="2" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y, *_ in points) + '"/>')
        for x, y, day, r, acc, ans in points:
            out.append(f'<circle class="accept-point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1a7f37" '
                       f'data-day="{day.isoformat()}" data-rate="{r:.4f}"><title>{day.isoformat()}: {acc}/{ans} accepted'
                       f"</title></circle>")
    if series.days:
        for i in sorted({0, len(series.days) // 2, len(series.days) - 1}):
            x = left + i * step + step / 2
            out.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" font-size="10" fill="#555">'
                       f"{series.days[i].isoformat()}</text>")
    out.append("</svg>")
    return Markup("".join(out))
